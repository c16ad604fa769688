package agentd

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
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
	// Every thread it will need, while the sandbox has tasks to spare.
	ReserveThreads()
	in := &initProc{reaper: NewReaper(), cmd: cmd, stderr: stderr, restarted: make(chan started)}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	// What a recycle restores (see recycle.go), as the sandbox was made.
	snap, snapErr := takeSnapshot()
	// The pool's command starts before the agent listens: the daemon
	// hands a new sandbox out once its agent answers, and takes what runs
	// in it then as the pool's (what a run's cleanup leaves).
	var cur started
	if len(cmd) > 0 {
		var err error
		if cur, err = in.start(); err != nil {
			return agent.CodeNotFound, err
		}
	}
	if agentPath != "" {
		l, err := Listen(agentPath)
		if err != nil {
			// The sandbox still works through docker exec.
			log.Warn("ol-shim init: no agent", "error", err)
		} else {
			s := &Server{Reaper: in.reaper, Log: log, Env: os.Environ()}
			s.Recycle = func() error {
				if snap == nil {
					return fmt.Errorf("nothing recorded at start to restore: %v", snapErr)
				}
				return in.recycle(snap)
			}
			go s.Serve(l)
		}
	}
	if len(cmd) == 0 {
		<-sigs // SIGTERM, SIGINT, ...: the container stops
		return 0, nil
	}
	for {
		select {
		case s := <-sigs:
			_ = cur.p.Signal(s)
		case n := <-in.restarted:
			cur = n // a recycle killed the command and started it again
		case ws := <-cur.status:
			if in.recycling.Load() {
				// Killed by a recycle, which starts it again.
				cur.status = nil
				continue
			}
			code, _ := Code(ws)
			return code, nil
		}
	}
}

// started is a running pool command and its status to come.
type started struct {
	p      *os.Process
	status <-chan syscall.WaitStatus
}

// initProc is init's own state: the pool's command and its restarts.
type initProc struct {
	reaper    *Reaper
	cmd       []string
	stderr    *os.File
	recycling atomic.Bool  // a recycle kills the command: its end is not init's
	restarted chan started // to init's loop: the command started again
	mu        sync.Mutex   // one recycle at a time
}

// start starts the pool's command as init's child with init's stdio and
// environment.
func (in *initProc) start() (started, error) {
	path := in.cmd[0]
	if lp, err := exec.LookPath(in.cmd[0]); err == nil {
		path = lp
	}
	p, status, err := in.reaper.Start(path, in.cmd, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, in.stderr},
	})
	if err != nil {
		return started{}, fmt.Errorf("ol-shim init: start %q: %w", in.cmd[0], err)
	}
	return started{p: p, status: status}, nil
}

// recycle kills every other process, makes what a run can write as it was
// (snapshot.clean) and starts the pool's command again.
func (in *initProc) recycle(snap *snapshot) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.recycling.Store(true)
	defer in.recycling.Store(false)
	if err := killOthers(); err != nil {
		return err
	}
	if err := snap.clean(); err != nil {
		return err
	}
	if len(in.cmd) == 0 {
		return nil
	}
	n, err := in.start()
	if err != nil {
		return err
	}
	in.restarted <- n
	return nil
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
