// Command ol-shim-runtime is ol-shim's OCI runtime, runc-compatible: see
// package ociruntime. It answers pause and resume by writing the freezer
// itself and hands every other command to runc.
package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/open-lambda/ol-shim/shim/ociruntime"
)

// Version is set at build time.
var Version = "dev"

func main() {
	argv := os.Args[1:]
	a, err := ociruntime.Parse(argv)
	if err == nil {
		switch a.Command {
		case "pause", "resume":
			if len(a.Rest) == 1 {
				err := ociruntime.Freeze(a.Root, a.Rest[0], a.Command == "pause")
				if err == nil {
					return
				}
				if !ociruntime.IsNoState(err) {
					ociruntime.LogError(a, fmt.Sprintf("%s %s: %v", a.Command, a.Rest[0], err))
					os.Exit(1)
				}
			}
		case "--version", "-v":
			fmt.Printf("ol-shim-runtime version %s\n", Version)
			if runc, err := ociruntime.Runc(); err == nil {
				out, _ := exec.Command(runc, "--version").Output()
				os.Stdout.Write(out)
			}
			return
		}
	}
	if err := ociruntime.HandOver(argv); err != nil {
		ociruntime.LogError(a, "ol-shim-runtime: "+err.Error())
		os.Exit(1)
	}
}
