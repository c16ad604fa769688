// Command ol-shim-runtime is ol-shim's OCI runtime, runc-compatible: see
// package ociruntime. It serves from ol-shim's pools the containers that
// need nothing a warm sandbox lacks, answers pause and resume by writing
// the freezer itself, and hands every other command to runc.
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
	if ociruntime.IsRelay(argv) {
		os.Exit(ociruntime.Relay(argv))
	}
	if ociruntime.IsExecRelay(argv) {
		os.Exit(ociruntime.ExecRelay(argv))
	}
	a, err := ociruntime.Parse(argv)
	runc := argv
	if err == nil {
		runc = a.Runc
		fail := func(err error) {
			ociruntime.LogError(a, fmt.Sprintf("%s: %v", a.Command, err))
			os.Exit(1)
		}
		switch a.Command {
		case "create":
			served, why, err := ociruntime.TryCreate(a)
			if err != nil {
				fail(err)
			}
			if served {
				return
			}
			ociruntime.LogInfo(a, "not served from a pool, handed to runc: "+why)
		case "pause", "resume":
			if handled, err := ociruntime.Served(a); handled {
				if err != nil {
					fail(err)
				}
				return
			}
			if len(a.Rest) == 1 {
				err := ociruntime.Freeze(a.Root, a.Rest[0], a.Command == "pause")
				if err == nil {
					return
				}
				if !ociruntime.IsNoState(err) {
					fail(fmt.Errorf("%s: %w", a.Rest[0], err))
				}
			}
		case "--version", "-v":
			fmt.Printf("ol-shim-runtime version %s\n", Version)
			if runc, err := ociruntime.Runc(); err == nil {
				out, _ := exec.Command(runc, "--version").Output()
				os.Stdout.Write(out)
			}
			return
		default:
			if handled, err := ociruntime.Served(a); handled {
				if err != nil {
					fail(err)
				}
				return
			}
		}
	}
	if err := ociruntime.HandOver(runc); err != nil {
		ociruntime.LogError(a, "ol-shim-runtime: "+err.Error())
		os.Exit(1)
	}
}
