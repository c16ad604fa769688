package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/agent/agentd"
)

var initCommand = &cli.Command{
	Name:      "init",
	Usage:     "PID 1 of sandbox containers: the run agent, and the pool's command if it has one",
	ArgsUsage: "[-- CMD [ARG...]]",
	Description: `init is PID 1 of every sandbox container: the static ol-shim binary is
mounted read-only at /.ol-shim/init and run as "ol-shim init". It reaps every
child reparented to it and, with --agent, serves the run protocol on that
socket (see shim/agent), so the daemon starts commands without docker exec.

With no CMD it idles and exits 0 on SIGTERM or SIGINT. With a CMD (the pool's
command) it starts it as its child, forwards signals to it and exits with its
status (128+n when signal n killed it), like docker run --init.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "agent", Usage: "serve the run protocol on this unix socket (in the container: " + agent.SocketPath + ")"},
	},
	Action: func(c *cli.Context) error {
		code, err := agentd.Init(c.String("agent"), c.Args().Slice(), os.Stderr)
		if err != nil {
			return cli.Exit(err.Error(), code)
		}
		if code != 0 {
			return cli.Exit("", code)
		}
		return nil
	},
}
