package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Ref is a sandbox held by one caller, from GetOrCreateUnpaused until Put or
// Destroy. Calling any method after Put or Destroy panics.
type Ref struct {
	set      *Set
	e        *entry
	outcome  Outcome
	missed   bool // no idle sandbox was there when the Get came
	released atomic.Bool
}

// Missed reports whether the Get that returned r found no idle sandbox:
// it created one, or waited for one (returned, paused or made by a
// refill). A pool whose Gets miss is short of idle sandboxes.
func (r *Ref) Missed() bool { return r.missed }

func (s *Set) newRef(e *entry, o Outcome, start time.Time, missed bool) *Ref {
	s.stats.got(o, time.Since(start))
	return &Ref{set: s, e: e, outcome: o, missed: missed}
}

// Sandbox returns the held sandbox, unpaused.
func (r *Ref) Sandbox() Sandbox {
	if r.released.Load() {
		panic(fmt.Sprintf("sandboxset: Sandbox called on a released Ref (sandbox %s)", r.e.id))
	}
	return r.e.sb
}

// Outcome says whether the sandbox was hot, warm or cold.
func (r *Ref) Outcome() Outcome { return r.outcome }

func (r *Ref) release(method string) {
	if !r.released.CompareAndSwap(false, true) {
		panic(fmt.Sprintf("sandboxset: %s called on a Ref already released (sandbox %s, pool %q)", method, r.e.id, r.set.cfg.Name))
	}
}

// sweepTimeout bounds the sweep of a returned sandbox (Cleaner).
const sweepTimeout = 5 * time.Second

// Put returns the sandbox to the pool: to a waiting Get at once, else
// paused (after Config.PauseGrace, off the caller's path, if set). A sandbox
// that fails to pause is destroyed and the error says so; after Close it is
// destroyed. Put does not take a context: a pause cut short would leave the
// sandbox in an unknown state, so the Sandbox bounds its own call.
func (r *Ref) Put() error {
	r.release("Put")
	return r.set.put(r.e, false)
}

// PutAsync is Put off the caller's path: from the call on the sandbox
// counts as on its way back, so a Get that finds nothing idle waits for it
// rather than making another, and what Put does (the sweep of the
// caller's processes, the release or the pause) goes on in the background.
// done, if not nil, is called with Put's error. Close waits for it.
func (r *Ref) PutAsync(done func(error)) {
	r.release("Put")
	s := r.set
	s.mu.Lock()
	// After Close the put destroys it, and Close waits for nothing more.
	counted := !s.closed
	if counted {
		s.returning++
		s.wg.Add(1)
	}
	s.mu.Unlock()
	go func() {
		if counted {
			defer s.wg.Done()
		}
		err := s.put(r.e, counted)
		if done != nil {
			done(err)
		}
	}()
}

// put is Put for e; counted: e is counted in s.returning until it is
// back (or being destroyed).
func (s *Set) put(e *entry, counted bool) error {
	uncount := func() {
		if counted {
			s.returning--
			counted = false
		}
	}
	// Nothing of the caller's runs may survive into the next holder's:
	// swept before anything else can have the sandbox, and destroyed if
	// that fails.
	if c := cleanerOf(e.sb); c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), sweepTimeout)
		killed, err := c.Sweep(ctx)
		cancel()
		if err != nil {
			s.log.Warn("cannot clear a returned sandbox of its last run's processes; destroying it", "sandbox", e.id, "error", err)
			s.mu.Lock()
			uncount()
			s.demandLocked() // a Get that waited for this one is covered no more
			s.mu.Unlock()
			if derr := s.destroyHeld(e, ReasonUnclean); derr != nil {
				return errors.Join(err, derr)
			}
			return err
		}
		if killed > 0 {
			s.log.Debug("killed what a run left running", "sandbox", e.id, "processes", killed)
		}
	}
	s.mu.Lock()
	uncount()
	s.inUse--
	e.lastUsed = time.Now()
	if s.closed {
		e.state = stateDestroying
		s.mu.Unlock()
		return s.destroy(e, ReasonClosed)
	}
	if len(s.waiters) > 0 || s.cfg.PauseGrace > 0 {
		e.hot = true
		s.releaseLocked(e)
		s.mu.Unlock()
		return nil
	}
	e.state = statePausing
	s.pausing++
	s.mu.Unlock()
	return s.pauseAndRelease(e)
}

// Destroy destroys the sandbox and removes its scratch directory. The
// sandbox is freed even when the backend reports an error, which is returned.
func (r *Ref) Destroy(reason string) error {
	r.release("Destroy")
	return r.set.destroyHeld(r.e, reason)
}
