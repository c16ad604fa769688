package main

import (
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

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
		// Not dumpable: no other process of the sandbox, root or not, may
		// ptrace init or take its descriptors (pidfd_getfd), so none can
		// listen on its socket, which the daemon checks is init's.
		_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
		reaper := agentd.NewReaper()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		sigs := make(chan os.Signal, 16)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		// The pool's command starts before the agent listens: the daemon
		// hands a new sandbox out once its agent answers, and takes what
		// runs in it then as the pool's (what a run's cleanup leaves).
		var child *os.Process
		var status <-chan syscall.WaitStatus
		if args := c.Args().Slice(); len(args) > 0 {
			var err error
			if child, status, err = startChild(reaper, args); err != nil {
				return err
			}
		}
		if path := c.String("agent"); path != "" {
			l, err := agentd.Listen(path)
			if err != nil {
				// The sandbox still works through docker exec.
				log.Warn("ol-shim init: no agent", "error", err)
			} else {
				s := &agentd.Server{Reaper: reaper, Log: log, Env: os.Environ()}
				go s.Serve(l)
			}
		}
		if child == nil {
			<-sigs // SIGTERM, SIGINT, ...: the container stops
			return nil
		}
		return waitChild(child, status, sigs)
	},
}

// startChild starts the pool's command as init's child with init's stdio
// and environment.
func startChild(reaper *agentd.Reaper, args []string) (*os.Process, <-chan syscall.WaitStatus, error) {
	path := args[0]
	if lp, err := exec.LookPath(args[0]); err == nil {
		path = lp
	}
	p, status, err := reaper.Start(path, args, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return nil, nil, cli.Exit(fmt.Sprintf("ol-shim init: start %q: %v", args[0], err), agent.CodeNotFound)
	}
	return p, status, nil
}

// waitChild forwards signals to the pool's command and exits with its
// status (128+n when signal n killed it).
func waitChild(p *os.Process, status <-chan syscall.WaitStatus, sigs <-chan os.Signal) error {
	for {
		select {
		case s := <-sigs:
			_ = p.Signal(s)
		case ws := <-status:
			code, _ := agentd.Code(ws)
			if code == 0 {
				return nil
			}
			return cli.Exit("", code)
		}
	}
}
