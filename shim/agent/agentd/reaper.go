// Package agentd is the agent's side of the run protocol (see shim/agent):
// what `ol-shim init`, PID 1 of a sandbox, runs to start commands for the
// daemon, and the reaper that PID 1 needs.
package agentd

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Reaper hands the exit status of the children started through it to
// whoever started them. As PID 1 it reaps every child (as PID 1 must, for
// the orphans reparented to it): one per process then, as it calls
// wait4(-1). In any other process it waits for its own children only.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	all     bool // reap every child: PID 1
}

// NewReaper starts reaping.
func NewReaper() *Reaper {
	r := &Reaper{waiters: map[int]chan syscall.WaitStatus{}, all: os.Getpid() == 1}
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
	return r
}

// reap collects the children that have exited: all of them as PID 1,
// else those started through it.
func (r *Reaper) reap() {
	if !r.all {
		r.mu.Lock()
		defer r.mu.Unlock()
		for pid, ch := range r.waiters {
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got == pid && err == nil {
				ch <- ws
				delete(r.waiters, pid)
			}
		}
		return
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			ch <- ws
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
	}
}

// Start starts a process and returns a channel that gets its exit status.
// The reaper's lock is held while it starts, so its status cannot be reaped
// before it is registered.
func (r *Reaper) Start(path string, argv []string, attr *os.ProcAttr) (*os.Process, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[p.Pid] = ch
	// A SIGCHLD that came before the registration found no waiter for it
	// but did not reap it (the lock was held); make sure it is seen.
	go r.reap()
	return p, ch, nil
}

// Code is the exit code of a status as a shell reports it: the process's
// own, or 128+n when signal n killed it.
func Code(ws syscall.WaitStatus) (code, sig int) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}
