package agentd

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// Init is PID 1 of a sandbox: it reaps every child reparented to it, serves
// the run protocol on agentPath (if not empty), and runs cmd (if any) as
// its child. With no cmd it idles until SIGTERM, SIGINT, ... and returns 0;
// with one, it forwards signals to it and returns its status (128+n when
// signal n killed it), like docker run --init. If cmd cannot start it
// returns agent.CodeNotFound and the error.
func Init(agentPath string, cmd []string, stderr *os.File) (int, error) {
	// Not dumpable: no other process of the sandbox, root or not, may
	// ptrace init or take its descriptors (pidfd_getfd), so none can
	// listen on its socket, which the daemon checks is init's.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	reaper := NewReaper()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	// The pool's command starts before the agent listens: the daemon
	// hands a new sandbox out once its agent answers, and takes what runs
	// in it then as the pool's (what a run's cleanup leaves).
	var child *os.Process
	var status <-chan syscall.WaitStatus
	if len(cmd) > 0 {
		path := cmd[0]
		if lp, err := exec.LookPath(cmd[0]); err == nil {
			path = lp
		}
		var err error
		child, status, err = reaper.Start(path, cmd, &os.ProcAttr{
			Env:   os.Environ(),
			Files: []*os.File{os.Stdin, os.Stdout, stderr},
		})
		if err != nil {
			return agent.CodeNotFound, fmt.Errorf("ol-shim init: start %q: %w", cmd[0], err)
		}
	}
	if agentPath != "" {
		l, err := Listen(agentPath)
		if err != nil {
			// The sandbox still works through docker exec.
			log.Warn("ol-shim init: no agent", "error", err)
		} else {
			s := &Server{Reaper: reaper, Log: log, Env: os.Environ()}
			go s.Serve(l)
		}
	}
	if child == nil {
		<-sigs // SIGTERM, SIGINT, ...: the container stops
		return 0, nil
	}
	for {
		select {
		case s := <-sigs:
			_ = child.Signal(s)
		case ws := <-status:
			code, _ := Code(ws)
			return code, nil
		}
	}
}

// InitArgs parses init's arguments: [--agent PATH | --agent=PATH] [--]
// [CMD [ARG...]].
func InitArgs(args []string) (agentPath string, cmd []string, err error) {
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "--":
			return agentPath, args[1:], nil
		case a == "--agent" || a == "-agent":
			if len(args) < 2 {
				return "", nil, fmt.Errorf("%s: needs a socket path", a)
			}
			agentPath, args = args[1], args[2:]
		case len(a) > 8 && a[:8] == "--agent=":
			agentPath, args = a[8:], args[1:]
		case len(a) > 0 && a[0] == '-':
			return "", nil, fmt.Errorf("unknown flag %q", a)
		default:
			return agentPath, args, nil
		}
	}
	return agentPath, nil, nil
}
