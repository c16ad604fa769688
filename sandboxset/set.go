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
}

// grant is what a waiting Get is handed: a sandbox, a slot to create one in,
// or an error.
type grant struct {
	e       *entry
	slot    bool
	created bool // e is the sandbox the caller's own create made
	err     error
}

type waiter struct {
	ch chan grant // buffered (1): the granter never blocks
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
	creating  int               // guarded by mu: creates in flight, refills included
	refilling int               // guarded by mu: creates in flight that will become idle
	live      int               // guarded by mu: sandboxes that exist or are being created or destroyed
	ids       map[string]bool   // guarded by mu: IDs of those sandboxes and of deferred ones (see Knows)
	deferred  map[*entry]string // guarded by mu: destroys the Reaper holds back, with their reasons; not counted in live
	waiters   []*waiter         // guarded by mu: FIFO
	creators  []*waiter         // guarded by mu: FIFO of Gets whose own create is in flight, which take any sandbox returned first
	orphans   int               // guarded by mu: creates in flight whose Get another sandbox served
	minIdle   int               // guarded by mu
	maxSize   int               // guarded by mu
	closed    bool              // guarded by mu

	wg   sync.WaitGroup // background work; Add only with mu held and !closed
	stop chan struct{}  // closed by Close; ends the idle-TTL janitor
	// done ends at Close: the creates no caller waits for (refills, and
	// creates whose Get was served) stop then.
	done       context.Context
	cancelDone context.CancelFunc

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
	s.done, s.cancelDone = context.WithCancel(context.Background())
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
		g, w := s.tryAcquire()
		missed = missed || w != nil || g.slot
		if w != nil {
			var err error
			if g, err = s.wait(ctx, w); err != nil {
				return nil, err
			}
		}
		switch {
		case g.err != nil:
			return nil, g.err
		case g.slot:
			if g, err := s.createFor(ctx); err != nil {
				return nil, err
			} else if !g.created {
				// Served first by a sandbox returned or refilled while
				// its own create ran (that one goes to the pool).
				e := g.e
				if e.hot {
					if s.mark(ctx, e) != nil {
						continue
					}
					return s.newRef(e, Hot, start, missed), nil
				}
				if err := s.unpauseTaken(ctx, e); err != nil {
					continue
				}
				if s.mark(ctx, e) != nil {
					continue
				}
				return s.newRef(e, Warm, start, missed), nil
			} else {
				if err := s.mark(ctx, g.e); err != nil {
					return nil, err
				}
				return s.newRef(g.e, Cold, start, missed), nil
			}
		case g.e.hot:
			if s.mark(ctx, g.e) != nil {
				continue
			}
			return s.newRef(g.e, Hot, start, missed), nil
		}
		e := g.e
		if s.unpauseTaken(ctx, e) != nil {
			continue
		}
		if s.mark(ctx, e) != nil {
			continue
		}
		return s.newRef(e, Warm, start, missed), nil
	}
}

// unpauseTaken unpauses e, a paused sandbox the caller took; one that
// fails to is destroyed. s.mu must not be held.
func (s *Set) unpauseTaken(ctx context.Context, e *entry) error {
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
	}
	return err
}

// createFor creates a sandbox for a Get that holds a slot (live and
// creating counted), and returns what serves the Get first: that sandbox
// (grant.created) or one returned to the pool or refilled while the create
// ran, in the order the Gets began their creates (a create under load can
// take seconds longer than the next one; Gets served by refills that began
// after them left some callers that long). A create that serves no Get
// becomes a refill. If ctx ends first, the create is stopped, unless a
// sandbox was handed over already, which goes back to the pool.
func (s *Set) createFor(ctx context.Context) (grant, error) {
	w := &waiter{ch: make(chan grant, 1)}
	// The create outlives the Get that began it, if another sandbox
	// serves that Get first; it is stopped when ctx ends before anything
	// served the Get, with ctx's error as the cause. It keeps ctx's values
	// (not a background create: it may evict and wait for the memory
	// budget, as the caller would).
	base, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	cctx, cancel := context.WithTimeout(base, s.cfg.OpTimeout)
	s.mu.Lock()
	if s.closed {
		s.creating--
		s.live--
		s.mu.Unlock()
		cancel()
		stop(nil)
		return grant{}, fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)
	}
	s.creators = append(s.creators, w)
	s.wg.Add(1)
	s.mu.Unlock()
	closed := context.AfterFunc(s.done, func() { stop(fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)) })
	go func() {
		defer s.wg.Done()
		defer closed()
		defer stop(nil)
		defer cancel()
		_, _ = s.create(cctx, false, w)
	}()
	select {
	case g := <-w.ch:
		if g.err != nil && s.done.Err() != nil && !errors.Is(g.err, ErrClosed) {
			// Stopped by Close.
			g.err = fmt.Errorf("%w (pool %q: %w)", g.err, s.cfg.Name, ErrClosed)
		}
		return g, g.err
	case <-ctx.Done():
	}
	// Stop the create and wait for what serves the Get first: the
	// create's error (which says what it was waiting for), or a sandbox,
	// which goes back to the pool.
	stop(ctx.Err())
	g := <-w.ch
	if g.err != nil {
		if !errors.Is(g.err, ctx.Err()) {
			return grant{}, fmt.Errorf("%w (gave up: %w)", g.err, ctx.Err())
		}
		return grant{}, g.err
	}
	s.giveBack(g.e)
	return grant{}, fmt.Errorf("pool %q: get sandbox: %w", s.cfg.Name, ctx.Err())
}

// removeCreatorLocked takes w off the creators and reports whether it was
// there (not yet served). s.mu must be held.
func (s *Set) removeCreatorLocked(w *waiter) bool {
	for i, x := range s.creators {
		if x == w {
			s.creators = append(s.creators[:i], s.creators[i+1:]...)
			return true
		}
	}
	return false
}

// giveBack returns e, handed to a Get that is gone (counted in use,
// unpaused or paused as e.hot says), to the pool. s.mu must not be held.
func (s *Set) giveBack(e *entry) {
	s.mu.Lock()
	s.inUse--
	ok := s.releaseLocked(e)
	s.mu.Unlock()
	if !ok {
		_ = s.destroy(e, ReasonClosed)
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

// tryAcquire takes an idle sandbox or reserves a slot to create one, or
// failing both enqueues a waiter. It takes s.mu.
func (s *Set) tryAcquire() (grant, *waiter) {
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
	// A sandbox being paused is idle in milliseconds, a create takes
	// hundreds: wait for it (its release hands it over; its failure hands
	// over its slot), one waiter per pause in flight. So for a create
	// whose Get another sandbox served (an orphan): waiting for it, not
	// starting one more, keeps the creates in flight within the callers
	// and the refills, however long a burst.
	supply := s.pausing + s.orphans
	pauseServes := len(s.waiters) < supply
	// Waiters beyond those queue for max_size, in order.
	queued := len(s.waiters) > supply
	if !pauseServes && !queued && (s.maxSize == 0 || s.live < s.maxSize) {
		s.live++
		s.creating++
		s.refillLocked()
		return grant{slot: true}, nil
	}
	w := &waiter{ch: make(chan grant, 1)}
	s.waiters = append(s.waiters, w)
	return grant{}, w
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
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			s.mu.Unlock()
			return grant{}, fmt.Errorf("pool %q: waiting for a free sandbox (max size %d): %w", s.cfg.Name, s.cfg.MaxSize, ctx.Err())
		}
	}
	s.mu.Unlock()
	// Granted after all: give it back.
	g := <-w.ch
	switch {
	case g.e != nil:
		s.giveBack(g.e)
	case g.slot:
		s.mu.Lock()
		s.creating--
		s.live--
		s.freeSlotLocked()
		s.mu.Unlock()
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
		w := s.waiters[0]
		s.waiters[0] = nil
		s.waiters = s.waiters[1:]
		s.takeLocked(e)
		w.ch <- grant{e: e}
		return true
	}
	if len(s.creators) > 0 {
		w := s.creators[0]
		s.creators[0] = nil
		s.creators = s.creators[1:]
		s.orphans++ // its create goes on, for the pool
		s.takeLocked(e)
		w.ch <- grant{e: e}
		return true
	}
	e.state = stateIdle
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

// freeSlotLocked hands the slot of a sandbox that no longer exists to the
// first waiter, if any. s.mu must be held, with live already decremented.
func (s *Set) freeSlotLocked() {
	if s.closed || len(s.waiters) == 0 || (s.maxSize > 0 && s.live >= s.maxSize) {
		return
	}
	w := s.waiters[0]
	s.waiters[0] = nil
	s.waiters = s.waiters[1:]
	s.live++
	s.creating++
	w.ch <- grant{slot: true}
}

// refillLocked starts background creates until idle plus in-flight refills
// reach MinIdle, within MaxSize. s.mu must be held.
func (s *Set) refillLocked() {
	if s.closed {
		return
	}
	for need := s.minIdle - len(s.idle) - s.refilling - s.pausing; need > 0 && (s.maxSize == 0 || s.live < s.maxSize); need-- {
		s.live++
		s.creating++
		s.refilling++
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ctx, cancel := context.WithTimeout(s.done, s.cfg.OpTimeout)
			defer cancel()
			if _, err := s.create(WithBackground(ctx), true, nil); err != nil {
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
	s.cancelDone() // creates in flight that no caller waits for stop
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
		w.ch <- grant{err: fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)}
	}
	s.waiters = nil
	close(s.stop)
	return victims, true
}
