package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// A sandbox's life in a Set: created (or forked), paused into the idle
// list, unpaused, destroyed.

// create makes a sandbox in a slot already reserved (live, creating and
// refilling counted) and releases it to the first waiter, or to idle. The
// failure of a create started for a waiting Get (owner; nil for a refill)
// goes to that Get if it still waits, as it would with a create of its own,
// rather than leave it waiting for one that may fail the same way.
func (s *Set) create(ctx context.Context, owner *waiter) (*entry, error) {
	id := fmt.Sprintf("%s-%016x", s.cfg.Name, rand.Uint64())
	s.mu.Lock()
	s.ids[id] = true
	s.mu.Unlock()
	sb, err := s.makeSandbox(ctx, id)
	s.mu.Lock()
	s.creating--
	s.refilling--
	if err != nil {
		s.stats.createFailures.Add(1) // before the Get that gets err returns
		delete(s.ids, id)
		s.live--
		if owner != nil && s.removeWaiterLocked(owner) {
			grantLocked(owner, grant{err: err})
		}
		s.demandLocked()
		s.mu.Unlock()
		return nil, err
	}
	s.stats.creates.Add(1)
	e := &entry{sb: sb, id: id, lastUsed: time.Now()}
	e.hot = true // created unpaused; pause it after the grace
	if s.cfg.PauseGrace == 0 && len(s.waiters) == 0 && !s.closed {
		e.state = statePausing
		s.pausing++
		s.mu.Unlock()
		return e, s.pauseAndRelease(e)
	}
	e.made = len(s.waiters) > 0
	ok := s.releaseLocked(e)
	s.mu.Unlock()
	if !ok {
		return nil, s.destroy(e, ReasonClosed)
	}
	return e, nil
}

// makeSandbox makes the scratch directory and the sandbox, leaving nothing
// behind on error. No lock is held.
func (s *Set) makeSandbox(ctx context.Context, id string) (Sandbox, error) {
	if s.fork == nil {
		// A fork takes its place once it has its parent (forkFromParent):
		// the parent's own create may need one.
		queued := time.Now()
		if err := s.cfg.Creates.acquire(ctx); err != nil {
			return nil, fmt.Errorf("pool %q: sandbox %s: %w", s.cfg.Name, id, err)
		}
		p := &place{l: s.cfg.Creates}
		defer p.release()
		ctx = context.WithValue(ctx, placeKey{}, p)
		start := time.Now()
		defer func() {
			s.log.Debug("sandbox made", "sandbox", id, "queued", start.Sub(queued), "took", time.Since(start))
		}()
	}
	dir, err := s.cfg.Scratch.Make(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("pool %q: sandbox %s: make scratch directory: %w", s.cfg.Name, id, err)
	}
	spec := Spec{ID: id, Pool: s.cfg.Name, ScratchDir: dir}
	var sb Sandbox
	if s.fork != nil {
		sb, err = s.forkFromParent(ctx, spec)
	} else {
		sb, err = s.cfg.Backend.Create(ctx, spec)
		if err != nil {
			err = fmt.Errorf("pool %q: create sandbox %s: %w", s.cfg.Name, id, err)
		}
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), s.cfg.OpTimeout)
		defer cancel()
		if rerr := s.cfg.Scratch.Remove(rctx, id); rerr != nil {
			s.log.Error("remove scratch directory after failed create", "sandbox", id, "error", rerr)
		}
		return nil, err
	}
	return sb, nil
}

func (s *Set) forkFromParent(ctx context.Context, spec Spec) (Sandbox, error) {
	parent, err := s.cfg.Parent.GetOrCreateUnpaused(ctx)
	if err != nil {
		return nil, fmt.Errorf("pool %q: sandbox %s: get parent from pool %q: %w", s.cfg.Name, spec.ID, s.cfg.Parent.Name(), err)
	}
	var sb Sandbox
	if err = s.cfg.Creates.acquire(ctx); err == nil {
		sb, err = s.fork.Fork(ctx, parent.Sandbox(), spec)
		s.cfg.Creates.release()
	}
	if perr := parent.Put(); perr != nil {
		s.log.Warn("return parent sandbox", "parent", parent.e.id, "error", perr)
	}
	if err != nil {
		return nil, fmt.Errorf("pool %q: fork sandbox %s from %s: %w", s.cfg.Name, spec.ID, parent.e.id, err)
	}
	return sb, nil
}

// pauseAndRelease pauses e, counted as pausing, and releases it; on failure
// it destroys it. No lock is held.
func (s *Set) pauseAndRelease(e *entry) error {
	// No deadline here: a context per Put would cost a third of a hot
	// Get+Put; Sandbox implementations bound their own calls.
	err := e.sb.Pause(context.Background())
	s.mu.Lock()
	s.pausing--
	if err != nil {
		e.state = stateDestroying
		s.mu.Unlock()
		s.stats.pauseFailures.Add(1)
		s.log.Warn("pause failed; destroying sandbox", "sandbox", e.id, "error", err)
		derr := s.destroy(e, ReasonPauseFailed)
		return errors.Join(fmt.Errorf("pool %q: sandbox %s: pause failed, sandbox destroyed: %w", s.cfg.Name, e.id, err), derr)
	}
	e.hot = false
	ok := s.releaseLocked(e)
	s.mu.Unlock()
	if !ok {
		return s.destroy(e, ReasonClosed)
	}
	return nil
}

// graceExpired pauses e if it is still idle and hot since generation gen.
// It runs on its own timer goroutine.
func (s *Set) graceExpired(e *entry, gen uint64) {
	s.mu.Lock()
	if s.closed || e.state != stateIdle || e.gen != gen || !e.hot {
		s.mu.Unlock()
		return
	}
	s.removeIdleLocked(e)
	e.timer = nil
	e.state = statePausing
	s.pausing++
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	_ = s.pauseAndRelease(e)
}

// removeIdleLocked removes e from the idle list. s.mu must be held.
func (s *Set) removeIdleLocked(e *entry) {
	for i := len(s.idle) - 1; i >= 0; i-- {
		if s.idle[i] == e {
			copy(s.idle[i:], s.idle[i+1:])
			s.idle[len(s.idle)-1] = nil
			s.idle = s.idle[:len(s.idle)-1]
			e.gen++
			return
		}
	}
	panic(fmt.Sprintf("sandboxset: pool %q: sandbox %s is not idle", s.cfg.Name, e.id))
}

// destroy destroys e, which is counted in live only, and removes its scratch
// directory, then frees its slot. No lock is held.
func (s *Set) destroy(e *entry, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OpTimeout)
	defer cancel()
	err := e.sb.Destroy(ctx, reason)
	if err != nil {
		err = fmt.Errorf("pool %q: destroy sandbox %s (%s): %w", s.cfg.Name, e.id, reason, err)
		s.log.Error("destroy sandbox", "sandbox", e.id, "reason", reason, "error", err)
	}
	if serr := s.cfg.Scratch.Remove(ctx, e.id); serr != nil {
		serr = fmt.Errorf("pool %q: sandbox %s: remove scratch directory: %w", s.cfg.Name, e.id, serr)
		s.log.Error("remove scratch directory", "sandbox", e.id, "error", serr)
		err = errors.Join(err, serr)
	}
	s.stats.destroyed(reason)
	s.mu.Lock()
	delete(s.ids, e.id)
	s.live--
	s.refillLocked()
	s.mu.Unlock()
	return err
}
