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
	"strings"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/agent/agentd"
)

// Version is set at build time.
var Version = "dev"

func main() {
	args := os.Args[1:]
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch {
	case cmd == "init": // what the daemon runs, as it would ol-shimd init
		args = args[1:]
	case cmd == "version" || cmd == "--version" || cmd == "-v":
		fmt.Printf("ol-shim version %s (ol-shim-init)\n", Version)
		return
	case cmd == "help" || cmd == "--help" || cmd == "-h":
		fmt.Println(usage)
		return
	case cmd == "" || cmd == "--" || strings.HasPrefix(cmd, "--agent"):
	default:
		fmt.Fprintf(os.Stderr, "ol-shim-init: unknown command %q\n%s\n", cmd, usage)
		os.Exit(agent.CodeFailed)
	}
	path, argv, err := agentd.InitArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim-init: %v\n", err)
		os.Exit(agent.CodeFailed)
	}
	code, err := agentd.Init(path, argv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

const usage = `usage: ol-shim-init [init] [--agent SOCKET] [--] [CMD [ARG...]]
       ol-shim-init version

PID 1 of an ol-shim sandbox: reaps orphans, serves the run protocol on
SOCKET, and runs CMD as its child (signals forwarded, its status returned).`
