package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

var initCommand = &cli.Command{
	Name:  "init",
	Usage: "idle init for sandbox containers: reap children, exit on SIGTERM or SIGINT",
	Description: `init is what a sandbox container runs when its pool names no command: the
static ol-shim binary is mounted read-only at /.ol-shim/init and run as
"ol-shim init". It reaps every child reparented to it (processes started
with docker exec) and exits 0 on SIGTERM or SIGINT, like docker's --init.`,
	Action: func(c *cli.Context) error {
		if c.Args().Len() > 0 {
			return fmt.Errorf("init: takes no arguments, got %q", c.Args().Slice())
		}
		sigs := make(chan os.Signal, 16)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
		for sig := range sigs {
			if sig != syscall.SIGCHLD {
				return nil
			}
			reap()
		}
		return nil
	},
}

// reap collects every child that has exited.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
