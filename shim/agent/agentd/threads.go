package agentd

import (
	"runtime"
	"sync"
)

// A sandbox that fills its pids limit (a fork bomb, or a function that
// forks too much) leaves no task for init to make a thread with, and Go's
// runtime ends a process that cannot make a thread it wants ("fatal error:
// newosproc"): the sandbox's init would die with it. So init bounds what
// needs threads and makes them all at its start; the runtime keeps idle
// threads for reuse and never ends them.
//
// Threads the runtime can want at once: one per P (GOMAXPROCS, capped at
// maxProcs); one per goroutine in a blocking system call, which in init are
// the runs starting (startSlots: user lookup, working directory, exec) and
// the signal and reaper loops; sysmon; and the template thread that
// LockOSThread brings. Everything else a run does waits in the network
// poller, which needs no thread of its own.
const (
	maxProcs     = 2
	startSlots   = 4
	spareThreads = 4 // signal and reaper loops, sysmon, template thread
)

// ReserveThreads caps GOMAXPROCS at maxProcs and makes the threads that
// it, startSlots runs starting at once and the runtime's own can need, so
// that none is made later. Each is held by a goroutine locked to it until
// all are made, then given back to the runtime's idle list. They count
// against the sandbox's pids limit (14 threads in all in a 1-CPU sandbox).
func ReserveThreads() {
	runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), maxProcs))
	n := runtime.GOMAXPROCS(0) + startSlots + spareThreads
	var held, done sync.WaitGroup
	release := make(chan struct{})
	for range n {
		held.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			held.Done()
			<-release
			runtime.UnlockOSThread()
		})
	}
	held.Wait()
	close(release)
	done.Wait()
}

// startSlot bounds the runs starting at once (and recycles) to startSlots:
// each may sit in a blocking system call, which holds a thread.
var startSlot = make(chan struct{}, startSlots)

func takeStartSlot() func() {
	startSlot <- struct{}{}
	return func() { <-startSlot }
}
