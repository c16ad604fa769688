// Command ol-shim-init is PID 1 of every sandbox container: the run agent,
// and the pool's command as its child if the pool has one. The daemon
// mounts it read-only at /.ol-shim/init. It links only what that needs (the
// agent and its reaper): no Docker client, no metrics, no CLI framework, so
// that every cold start pays as little as possible for it.
//
// Usage: ol-shim-init [init] [--agent SOCKET] [--] [CMD [ARG...]]
package main

import (
	"fmt"
	"os"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/agent/agentd"
)

// Version is set at build time.
var Version = "dev"

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "init" { // the daemon's argv, as for ol-shimd init
		args = args[1:]
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-v") {
		fmt.Println("ol-shim-init", Version)
		return
	}
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-h") {
		fmt.Println("usage: ol-shim-init [init] [--agent SOCKET] [--] [CMD [ARG...]]\n\nPID 1 of an ol-shim sandbox: reaps orphans, serves the run protocol on\nSOCKET, and runs CMD as its child (signals forwarded, its status returned).")
		return
	}
	path, cmd, err := agentd.InitArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim-init: %v\n", err)
		os.Exit(agent.CodeFailed)
	}
	code, err := agentd.Init(path, cmd, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
