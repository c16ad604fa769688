package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"
)

type entryState int

const (
	stateCreating entryState = iota
	stateIdle
	stateInUse
	statePausing
	stateDestroying
	stateDeferred // returned to be destroyed; the Reaper holds it back (see DestroyDeferred)
)

// entry is one sandbox the Set owns.
type entry struct {
	sb Sandbox
	id string

	state    entryState  // guarded by Set.mu
	hot      bool        // guarded by Set.mu: unpaused although not in use (pause grace)
	lastUsed time.Time   // guarded by Set.mu: when it was last returned
	gen      uint64      // guarded by Set.mu: bumped whenever it leaves idle; stale grace timers compare it
	timer    *time.Timer // guarded by Set.mu: pause-grace timer while hot and idle
	// refillAfter: taken paused from idle by a Get, which starts the
	// refill once its unpause is done. Only that Get touches it.
	refillAfter bool
	// made: created for a waiting Get and handed to it as made; set under
	// Set.mu before the handover, read and cleared by that Get.
	made bool
}

// grant is what a waiting Get is handed: a sandbox or an error.
type grant struct {
	e   *entry
	err error
}

type waiter struct {
	ch  chan grant      // buffered (1): the granter never blocks
	ctx context.Context // the Get's
	// served: ch has been sent to. Guarded by Set.mu.
	served bool
	// owned counts the creates started for this Get that are in flight
	// (createFor), ownErr holds the last one's error; guarded by Set.mu.
	// ownWG is done when none is in flight.
	owned  int
	ownErr error
	ownWG  sync.WaitGroup
	// returned: a sandbox given back with PutAsync, not yet released, was
	// there for this Get as it came (it would have been idle had the put
	// been done on its caller's path): the Get did not miss.
	returned bool
}

// grantLocked hands g to w, taken off the waiters. s.mu must be held.
func grantLocked(w *waiter, g grant) {
	w.served = true
	w.ch <- g
}

// popWaiterLocked takes the first waiter off the queue. s.mu must be held,
// with waiters.
func (s *Set) popWaiterLocked() *waiter {
	w := s.waiters[0]
	s.waiters[0] = nil
	s.waiters = s.waiters[1:]
	return w
}

// removeWaiterLocked takes w off the queue; false if it is not on it.
// s.mu must be held.
func (s *Set) removeWaiterLocked(w *waiter) bool {
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// Set is a thread-safe pool of sandboxes for one function. Create one with
// New; it is safe for concurrent use.
type Set struct {
	cfg  Config
	log  *slog.Logger
	fork Forker // non-nil iff cfg.Parent != nil

	mu        sync.Mutex
	idle      []*entry          // guarded by mu: ordered by lastUsed, most recent last
	inUse     int               // guarded by mu
	pausing   int               // guarded by mu
	returning int               // guarded by mu: sandboxes given back (PutAsync) not yet swept and released
	creating  int               // guarded by mu: creates in flight, refills included
	refilling int               // guarded by mu: creates in flight that go to a waiter or to idle
	live      int               // guarded by mu: sandboxes that exist or are being created or destroyed
	ids       map[string]bool   // guarded by mu: IDs of those sandboxes and of deferred ones (see Knows)
	deferred  map[*entry]string // guarded by mu: destroys the Reaper holds back, with their reasons; not counted in live
	waiters   []*waiter         // guarded by mu: FIFO
	minIdle   int               // guarded by mu
	maxSize   int               // guarded by mu
	closed    bool              // guarded by mu

	wg   sync.WaitGroup // background work; Add only with mu held and !closed
	stop chan struct{}  // closed by Close; ends the idle-TTL janitor

	stats stats
}

// New returns a Set for cfg and starts filling it to cfg.MinIdle in the
// background.
func New(cfg Config) (*Set, error) {
	if err := ValidateName(cfg.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: pool %q: %s", ErrInvalidConfig, cfg.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.Backend == nil:
		return nil, bad("no backend")
	case cfg.Scratch == nil:
		return nil, bad("no scratch maker")
	case cfg.MinIdle < 0:
		return nil, bad("min idle %d is negative", cfg.MinIdle)
	case cfg.MaxSize < 0:
		return nil, bad("max size %d is negative", cfg.MaxSize)
	case cfg.MaxSize > 0 && cfg.MinIdle > cfg.MaxSize:
		return nil, bad("min idle %d is more than max size %d", cfg.MinIdle, cfg.MaxSize)
	case cfg.IdleTTL < 0:
		return nil, bad("idle ttl %v is negative", cfg.IdleTTL)
	case cfg.PauseGrace < 0:
		return nil, bad("pause grace %v is negative", cfg.PauseGrace)
	case cfg.OpTimeout < 0:
		return nil, bad("op timeout %v is negative", cfg.OpTimeout)
	}
	s := &Set{cfg: cfg, minIdle: cfg.MinIdle, maxSize: cfg.MaxSize, stop: make(chan struct{}), ids: map[string]bool{}, deferred: map[*entry]string{}}
	if cfg.Parent != nil {
		f, ok := cfg.Backend.(Forker)
		if !ok {
			return nil, fmt.Errorf("pool %q: parent %q: %w (%T)", cfg.Name, cfg.Parent.Name(), ErrForkUnsupported, cfg.Backend)
		}
		s.fork = f
	}
	if s.cfg.OpTimeout == 0 {
		s.cfg.OpTimeout = DefaultOpTimeout
	}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.log = s.log.With("pool", cfg.Name)
	s.stats.init()

	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg.IdleTTL > 0 {
		s.wg.Add(1)
		go s.janitor(cfg.IdleTTL)
	}
	s.refillLocked()
	return s, nil
}

// Name returns the pool's name.
func (s *Set) Name() string { return s.cfg.Name }

// GetOrCreateUnpaused returns an unpaused sandbox that belongs to the caller
// until it calls Put or Destroy on the Ref: an idle one if there is one (the
// most recently used first), else a new one. An idle sandbox that fails to
// unpause is destroyed and the next is tried. When MaxSize sandboxes exist
// and none is idle, it waits, in arrival order, until one is returned or ctx
// ends. After Close it returns an error for which errors.Is(err, ErrClosed).
func (s *Set) GetOrCreateUnpaused(ctx context.Context) (*Ref, error) {
	start := time.Now()
	missed := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("pool %q: get sandbox: %w", s.cfg.Name, err)
		}
		g, w := s.tryAcquire(ctx)
		missed = missed || (w != nil && !w.returned)
		if w != nil {
			var err error
			if g, err = s.wait(ctx, w); err != nil {
				return nil, err
			}
		}
		switch {
		case g.err != nil:
			return nil, g.err
		case g.e.hot:
			if s.mark(ctx, g.e) != nil {
				continue
			}
			o := Hot
			if g.e.made {
				g.e.made = false
				o = Cold
			}
			return s.newRef(g.e, o, start, missed), nil
		}
		e := g.e
		err := e.sb.Unpause(ctx)
		if e.refillAfter {
			// The refill this take calls for starts now, not alongside
			// the unpause: on the same dockerd, a create slows it.
			e.refillAfter = false
			s.mu.Lock()
			s.refillLocked()
			s.mu.Unlock()
		}
		if err != nil {
			s.stats.unpauseFailures.Add(1)
			s.log.Warn("unpause failed; destroying sandbox", "sandbox", e.id, "error", err)
			_ = s.destroyHeld(e, ReasonUnpauseFailed)
			continue
		}
		if s.mark(ctx, e) != nil {
			continue
		}
		return s.newRef(e, Warm, start, missed), nil
	}
}

// mark has a sandbox being handed out record what runs in it (Cleaner).
// One that cannot is destroyed; the caller holds it (counted in use) and
// gets the error. s.mu must not be held.
func (s *Set) mark(ctx context.Context, e *entry) error {
	c := cleanerOf(e.sb)
	if c == nil {
		return nil
	}
	err := c.Mark(ctx)
	if err == nil {
		return nil
	}
	s.log.Warn("cannot record a sandbox's processes; destroying it", "sandbox", e.id, "error", err)
	_ = s.destroyHeld(e, ReasonUnclean)
	return fmt.Errorf("pool %q: %w", s.cfg.Name, err)
}

// destroyHeld destroys e, a sandbox a caller holds (counted in use).
// s.mu must not be held.
func (s *Set) destroyHeld(e *entry, reason string) error {
	s.mu.Lock()
	s.inUse--
	e.state = stateDestroying
	s.mu.Unlock()
	return s.destroy(e, reason)
}

// tryAcquire takes an idle sandbox, or enqueues a waiter (with a create
// started for it where nothing on its way covers it). It takes s.mu.
func (s *Set) tryAcquire(ctx context.Context) (grant, *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return grant{err: fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)}, nil
	}
	if n := len(s.idle); n > 0 && len(s.waiters) == 0 {
		e := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.takeLocked(e)
		if e.hot {
			s.refillLocked()
		} else {
			e.refillAfter = true // once unpaused: see GetOrCreateUnpaused
		}
		return grant{e: e}, nil
	}
	// No idle sandbox: wait, in arrival order, for the first that comes
	// free. A sandbox being paused or returned is idle in milliseconds; creates in
	// flight (refills included) go to the waiters first; where those do
	// not cover the waiters, refillLocked starts a create for each one more
	// (within MaxSize; beyond it waiters queue for a sandbox returned, or
	// a create started when one is destroyed). Whichever create ends
	// first serves the Get that has waited longest, so in a burst no Get
	// waits behind creates started after its own.
	w := &waiter{ch: make(chan grant, 1), ctx: ctx}
	s.waiters = append(s.waiters, w)
	w.returned = s.returning >= len(s.waiters)
	s.refillLocked()
	return grant{}, w
}

// ownerLocked picks the waiter a create for waiting Gets is started for:
// the first that has none in flight, else the first. s.mu must be held,
// with waiters.
func (s *Set) ownerLocked() *waiter {
	for _, w := range s.waiters {
		if w.owned == 0 {
			return w
		}
	}
	return s.waiters[0]
}

// createFor runs a create started for waiting Get w, counted (live,
// creating, refilling, s.wg, w.owned, w.ownWG) by the caller. The sandbox
// goes to the first waiter (or idle); a failure goes to w if it still
// waits. The create is w's: foreground (it may wait for room in a memory
// budget), and given up, with w's cause, if w's context ends before w is
// served; once w is served, it goes on for the next waiter, bounded by
// OpTimeout.
func (s *Set) createFor(w *waiter) {
	ctx := w.ctx
	cctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	cctx, cancelT := context.WithTimeout(cctx, s.cfg.OpTimeout)
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		served := w.served
		s.mu.Unlock()
		if !served {
			cancel(context.Cause(ctx))
		}
	})
	go func() {
		defer s.wg.Done()
		_, err := s.create(cctx, w)
		stop()
		cancelT()
		cancel(nil)
		if err != nil && !errors.Is(err, ErrClosed) {
			s.log.Debug("create for a waiting get failed", "error", err)
		}
		s.mu.Lock()
		w.owned--
		if err != nil {
			w.ownErr = err
		}
		s.mu.Unlock()
		w.ownWG.Done()
	}()
}

// takeLocked marks e, just removed from idle, as in use.
func (s *Set) takeLocked(e *entry) {
	e.state = stateInUse
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	s.inUse++
}

// wait blocks until w is granted something or ctx ends. Whatever is granted
// after ctx ended is given back.
func (s *Set) wait(ctx context.Context, w *waiter) (grant, error) {
	select {
	case g := <-w.ch:
		return g, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	if s.removeWaiterLocked(w) {
		s.mu.Unlock()
		// Creates started for it are given up with ctx's cause
		// (createFor), unless they ended; an error says what it
		// waited for.
		w.ownWG.Wait()
		s.mu.Lock()
		err := w.ownErr
		s.mu.Unlock()
		switch {
		case err == nil:
			return grant{}, fmt.Errorf("pool %q: waiting for a free sandbox (max size %d): %w", s.cfg.Name, s.cfg.MaxSize, ctx.Err())
		case errors.Is(err, ctx.Err()):
			return grant{}, err
		}
		return grant{}, fmt.Errorf("pool %q: waiting for a sandbox being created: %w (the create: %w)", s.cfg.Name, ctx.Err(), err)
	}
	s.mu.Unlock()
	// Granted after all: give it back.
	g := <-w.ch
	switch {
	case g.e != nil:
		s.mu.Lock()
		s.inUse--
		ok := s.releaseLocked(g.e)
		s.mu.Unlock()
		if !ok {
			_ = s.destroy(g.e, ReasonClosed)
		}
	}
	return grant{}, fmt.Errorf("pool %q: waiting for a free sandbox (max size %d): %w", s.cfg.Name, s.cfg.MaxSize, ctx.Err())
}

// releaseLocked makes e, counted in no state, available: to the first waiter,
// else to idle (arming the pause-grace timer if e is hot). It returns false if
// the Set is closed; the caller must then destroy e. s.mu must be held.
func (s *Set) releaseLocked(e *entry) bool {
	if s.closed {
		e.state = stateDestroying
		return false
	}
	if len(s.waiters) > 0 {
		w := s.popWaiterLocked()
		s.takeLocked(e)
		grantLocked(w, grant{e: e})
		return true
	}
	e.state = stateIdle
	e.made = false // given back unused: idle like any other
	i := sort.Search(len(s.idle), func(i int) bool { return s.idle[i].lastUsed.After(e.lastUsed) })
	s.idle = append(s.idle, nil)
	copy(s.idle[i+1:], s.idle[i:])
	s.idle[i] = e
	if e.hot {
		gen := e.gen
		e.timer = time.AfterFunc(s.cfg.PauseGrace, func() { s.graceExpired(e, gen) })
	}
	return true
}

// refillLocked starts creates until idle sandboxes plus sandboxes on their
// way (creates, pauses and PutAsync's returns in flight) cover the waiting Gets and then
// MinIdle, within MaxSize. A create that covers a waiting Get is started for
// one (createFor); the rest are refills (IsBackground). s.mu must be held.
func (s *Set) refillLocked() {
	s.startCreatesLocked(s.minIdle + len(s.waiters) - len(s.idle) - s.refilling - s.pausing - s.returning)
}

// demandLocked starts creates for the waiting Gets that nothing on its way
// covers (a refill that failed covered one), and no refills. s.mu must be
// held.
func (s *Set) demandLocked() {
	s.startCreatesLocked(len(s.waiters) - s.refilling - s.pausing - s.returning)
}

// startCreatesLocked starts up to need creates, within MaxSize: for the
// waiting Gets not yet covered first, then refills. s.mu must be held.
func (s *Set) startCreatesLocked(need int) {
	if s.closed {
		return
	}
	for ; need > 0 && (s.maxSize == 0 || s.live < s.maxSize); need-- {
		demand := len(s.waiters) > s.refilling+s.pausing+s.returning
		s.live++
		s.creating++
		s.refilling++
		s.wg.Add(1)
		if demand {
			w := s.ownerLocked()
			w.owned++
			w.ownWG.Add(1)
			s.createFor(w)
			continue
		}
		go func() {
			defer s.wg.Done()
			ctx, cancel := context.WithTimeout(WithBackground(context.Background()), s.cfg.OpTimeout)
			defer cancel()
			if _, err := s.create(ctx, nil); err != nil {
				s.log.Warn("refill failed", "error", err)
			}
		}()
	}
}

// Close destroys the idle sandboxes, fails waiting Gets, and makes every
// later Get fail with ErrClosed. Sandboxes in use are destroyed when they are
// returned. Close waits, until ctx ends, for background work to finish.
func (s *Set) Close(ctx context.Context) error {
	victims, first := s.closeState()
	if !first {
		return nil
	}
	var errs []error
	for _, e := range victims {
		errs = append(errs, s.destroy(e, ReasonClosed))
	}
	s.mu.Lock()
	held := make([]*entry, 0, len(s.deferred))
	for e := range s.deferred {
		held = append(held, e)
	}
	s.mu.Unlock()
	for _, e := range held {
		s.finishDeferred(e)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("pool %q: close: waiting for background work: %w", s.cfg.Name, ctx.Err()))
	}
	return errors.Join(errs...)
}

// closeState marks the Set closed, fails its waiters and takes every idle
// sandbox out, under s.mu; the caller destroys them unlocked. It reports
// false if the Set was closed already.
func (s *Set) closeState() ([]*entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	victims := s.cutIdleLocked(len(s.idle))
	s.closed = true
	for _, w := range s.waiters {
		grantLocked(w, grant{err: fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)})
	}
	s.waiters = nil
	close(s.stop)
	return victims, true
}
