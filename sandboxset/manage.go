package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// What callers other than the pool's users do to a Set: warm, shrink,
// evict, adopt, drop what died, expire what idled too long.

// Adopt takes sb, an existing paused sandbox (found by a reconcile after a
// restart), into the pool as idle. It fails, leaving sb to the caller, when
// the Set is closed or full.
func (s *Set) Adopt(sb Sandbox) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("pool %q: adopt sandbox %s: %w", s.cfg.Name, sb.ID(), ErrClosed)
	case s.maxSize > 0 && s.live >= s.maxSize:
		return fmt.Errorf("pool %q: adopt sandbox %s: pool is at its max size %d", s.cfg.Name, sb.ID(), s.maxSize)
	}
	s.live++
	s.ids[sb.ID()] = true
	s.releaseLocked(&entry{sb: sb, id: sb.ID(), lastUsed: time.Now()})
	return nil
}

// Knows reports whether sandbox id belongs to the Set: being created, idle,
// in use, pausing or being destroyed. A sandbox of the Set's pool that it
// does not know (a container left by a create that failed half-way) is an
// orphan.
func (s *Set) Knows(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id]
}

// EvictIdle destroys the least recently used idle sandbox, even below
// MinIdle (a host-wide memory budget needs the room), and reports whether
// there was one.
func (s *Set) EvictIdle() bool {
	s.mu.Lock()
	if len(s.idle) == 0 {
		s.mu.Unlock()
		return false
	}
	victims := s.cutIdleLocked(1)
	s.mu.Unlock()
	_ = s.destroy(victims[0], ReasonEvicted)
	return true
}

// DropIdle destroys the idle sandboxes lost reports as lost (a sandbox whose
// container died or vanished while it sat in the pool), then refills to
// MinIdle. lost gets each idle sandbox and since when it has been idle; it
// is called with the Set's lock held, so it must be quick (a lookup) and
// must not call the Set. DropIdle returns how many it dropped.
func (s *Set) DropIdle(lost func(sb Sandbox, idleSince time.Time) bool) int {
	s.mu.Lock()
	var victims []*entry
	kept := s.idle[:0]
	for _, e := range s.idle {
		if lost(e.sb, e.lastUsed) {
			victims = append(victims, e)
		} else {
			kept = append(kept, e)
		}
	}
	clear(s.idle[len(kept):])
	s.idle = kept
	markDestroyingLocked(victims)
	s.mu.Unlock()
	for _, e := range victims {
		_ = s.destroy(e, ReasonLost)
	}
	return len(victims)
}

// OldestIdle returns when the least recently used idle sandbox was last
// used, and false if none is idle.
func (s *Set) OldestIdle() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) == 0 {
		return time.Time{}, false
	}
	return s.idle[0].lastUsed, true
}

// Warm sets MinIdle to n and creates sandboxes until n are idle or being
// created for the pool, returning the first create error.
func (s *Set) Warm(ctx context.Context, n int) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("pool %q: warm: %w", s.cfg.Name, ErrClosed)
	case n < 0:
		s.mu.Unlock()
		return fmt.Errorf("pool %q: warm %d: must not be negative", s.cfg.Name, n)
	case s.maxSize > 0 && n > s.maxSize:
		s.mu.Unlock()
		return fmt.Errorf("pool %q: warm %d: more than max size %d", s.cfg.Name, n, s.maxSize)
	}
	s.minIdle = n
	// Sandboxes being paused are on their way to idle: count them, or a
	// Warm during a refill's pauses overshoots.
	need := n - len(s.idle) - s.refilling - s.pausing - s.returning
	if s.maxSize > 0 {
		need = min(need, s.maxSize-s.live)
	}
	need = max(need, 0)
	s.live += need
	s.creating += need
	s.refilling += need
	s.mu.Unlock()

	// A bounded number of workers, whatever need is: each create already
	// holds its slot (live, creating, refilling counted above).
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range min(need, warmWorkers) {
		wg.Go(func() {
			for {
				mu.Lock()
				if next == need {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				if _, err := s.create(ctx, nil); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// Raise raises MinIdle to n (within MaxSize) and starts the refills it
// calls for, in the background: refills (IsBackground) that do not wait for
// room, as the pool's own refills do. It reports the MinIdle now.
func (s *Set) Raise(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.minIdle
	}
	if s.maxSize > 0 {
		n = min(n, s.maxSize)
	}
	if n > s.minIdle {
		s.minIdle = n
		s.refillLocked()
	}
	return s.minIdle
}

// warmWorkers bounds the creates one Warm runs at once.
const warmWorkers = 8

// Shrink destroys idle sandboxes, least recently used first, until at most n
// are idle, and lowers MinIdle to n if it was higher.
func (s *Set) Shrink(n int) error {
	if n < 0 {
		return fmt.Errorf("pool %q: shrink %d: must not be negative", s.cfg.Name, n)
	}
	victims := s.shrinkState(n)
	var errs []error
	for _, e := range victims {
		errs = append(errs, s.destroy(e, ReasonShrink))
	}
	return errors.Join(errs...)
}

// shrinkState lowers MinIdle to n and takes the idle sandboxes above n out
// of the pool, under s.mu; the caller destroys them unlocked.
func (s *Set) shrinkState(n int) []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.minIdle = min(s.minIdle, n)
	if len(s.idle) <= n {
		return nil
	}
	k := len(s.idle) - n
	return s.cutIdleLocked(k)
}

// cutIdleLocked removes the k least recently used idle sandboxes and marks
// them for destruction. s.mu must be held.
func (s *Set) cutIdleLocked(k int) []*entry {
	victims := make([]*entry, k)
	copy(victims, s.idle[:k])
	rest := copy(s.idle, s.idle[k:])
	clear(s.idle[rest:])
	s.idle = s.idle[:rest]
	markDestroyingLocked(victims)
	return victims
}

// markDestroyingLocked marks entries taken off the idle list for
// destruction: their grace timers stop and stale ones see a new gen.
// s.mu must be held.
func markDestroyingLocked(victims []*entry) {
	for _, e := range victims {
		e.gen++
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		e.state = stateDestroying
	}
}

// janitor destroys idle sandboxes unused for longer than ttl until Close.
func (s *Set) janitor(ttl time.Duration) {
	defer s.wg.Done()
	tick := time.NewTicker(max(min(ttl/4, time.Second), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			for _, e := range s.expireState(now.Add(-ttl)) {
				_ = s.destroy(e, ReasonIdleTTL)
			}
		}
	}
}

// expireState removes the idle sandboxes last used before cutoff, keeping
// MinIdle.
func (s *Set) expireState(cutoff time.Time) []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for k < len(s.idle)-s.minIdle && s.idle[k].lastUsed.Before(cutoff) {
		k++
	}
	if k == 0 {
		return nil
	}
	return s.cutIdleLocked(k)
}

// MinIdle returns the number of idle sandboxes the Set keeps now (what
// Warm and Shrink last set).
func (s *Set) MinIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minIdle
}
