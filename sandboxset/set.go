package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons the Set itself gives when it destroys a sandbox. Callers of
// Ref.Destroy give their own.
const (
	ReasonUnpauseFailed = "unpause failed"
	ReasonPauseFailed   = "pause failed"
	ReasonClosed        = "set closed"
	ReasonIdleTTL       = "idle ttl"
	ReasonShrink        = "shrink"
	ReasonEvicted       = "evicted"
	ReasonLost          = "lost" // gone or stopped while idle (its container died, or its runtime restarted)
)

type backgroundKey struct{}

// WithBackground marks ctx as that of a create no caller waits for (a
// MinIdle refill). A Backend may then refuse at once rather than wait for
// room (IsBackground tells it).
func WithBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx is that of a background create.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// DefaultOpTimeout bounds the backend calls a Set makes without a caller's
// context: destroys and background creates.
const DefaultOpTimeout = 60 * time.Second

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// ValidateName reports whether name can name a pool: 1 to 100 characters,
// letters, digits, '_', '.' and '-', starting with a letter or digit. Sandbox
// IDs are derived from it and must be valid Docker volume names.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("pool name %q: must be 1-100 characters of [A-Za-z0-9_.-] starting with a letter or digit", name)
	}
	return nil
}

var sandboxIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}-[0-9a-f]{16}$`)

// ValidateSandboxID reports whether id is a sandbox ID a Set makes: its
// pool's name (see ValidateName), '-' and 16 hex digits; so at most 117
// characters, always one path element, never "." or "..".
func ValidateSandboxID(id string) error {
	if !sandboxIDRE.MatchString(id) {
		if len(id) > 130 {
			id = id[:130] + "..."
		}
		return fmt.Errorf("sandbox ID %q: want a pool name, '-' and 16 hex digits", id)
	}
	return nil
}

// Config configures a Set.
type Config struct {
	// Name names the pool in sandbox IDs, errors and logs; see ValidateName.
	Name string
	// Backend creates the pool's sandboxes. Required.
	Backend Backend
	// Scratch makes each sandbox's scratch directory. Required.
	Scratch ScratchMaker
	// Parent, if set, is the Set new sandboxes are forked from; Backend must
	// then implement Forker.
	Parent *Set
	// MinIdle is the number of idle sandboxes kept ready; the Set refills
	// in the background after Gets.
	MinIdle int
	// MaxSize bounds the sandboxes that exist at once, idle or in use; 0
	// means no bound. When it is reached, Gets wait in arrival order.
	MaxSize int
	// IdleTTL, if positive, destroys idle sandboxes unused for longer,
	// never going below MinIdle.
	IdleTTL time.Duration
	// PauseGrace keeps a returned sandbox unpaused this long, so a Get in
	// that time takes it with no backend call. 0 pauses at once.
	PauseGrace time.Duration
	// OpTimeout bounds the creates and destroys the Set makes without a
	// caller's context; DefaultOpTimeout if 0.
	OpTimeout time.Duration
	// Logger receives the Set's logs; nil discards them.
	Logger *slog.Logger
}

// Outcome says how a Ref's sandbox was obtained.
type Outcome int

const (
	// Cold: a new sandbox was created.
	Cold Outcome = iota
	// Warm: a paused sandbox was unpaused.
	Warm
	// Hot: an unpaused sandbox within its pause grace was reused.
	Hot
)

func (o Outcome) String() string {
	switch o {
	case Cold:
		return "cold"
	case Warm:
		return "warm"
	case Hot:
		return "hot"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

type entryState int

const (
	stateCreating entryState = iota
	stateIdle
	stateInUse
	statePausing
	stateDestroying
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
}

// grant is what a waiting Get is handed: a sandbox, a slot to create one in,
// or an error.
type grant struct {
	e    *entry
	slot bool
	err  error
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
	idle      []*entry        // guarded by mu: ordered by lastUsed, most recent last
	inUse     int             // guarded by mu
	pausing   int             // guarded by mu
	creating  int             // guarded by mu: creates in flight, refills included
	refilling int             // guarded by mu: creates in flight that will become idle
	live      int             // guarded by mu: sandboxes that exist or are being created or destroyed
	ids       map[string]bool // guarded by mu: IDs of those sandboxes (see Knows)
	waiters   []*waiter       // guarded by mu: FIFO
	minIdle   int             // guarded by mu
	maxSize   int             // guarded by mu
	closed    bool            // guarded by mu

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
	s := &Set{cfg: cfg, minIdle: cfg.MinIdle, maxSize: cfg.MaxSize, stop: make(chan struct{}), ids: map[string]bool{}}
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
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("pool %q: get sandbox: %w", s.cfg.Name, err)
		}
		g, w := s.acquireLocked()
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
			e, err := s.create(ctx, false)
			if err != nil {
				return nil, err
			}
			return s.newRef(e, Cold, start), nil
		case g.e.hot:
			return s.newRef(g.e, Hot, start), nil
		}
		e := g.e
		if err := e.sb.Unpause(ctx); err != nil {
			s.stats.unpauseFailures.Add(1)
			s.log.Warn("unpause failed; destroying sandbox", "sandbox", e.id, "error", err)
			s.mu.Lock()
			s.inUse--
			e.state = stateDestroying
			s.mu.Unlock()
			_ = s.destroy(e, ReasonUnpauseFailed)
			continue
		}
		return s.newRef(e, Warm, start), nil
	}
}

// acquireLocked takes an idle sandbox or reserves a slot to create one, or
// failing both enqueues a waiter. It takes s.mu.
func (s *Set) acquireLocked() (grant, *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return grant{err: fmt.Errorf("pool %q: %w", s.cfg.Name, ErrClosed)}, nil
	}
	if len(s.waiters) == 0 {
		if n := len(s.idle); n > 0 {
			e := s.idle[n-1]
			s.idle[n-1] = nil
			s.idle = s.idle[:n-1]
			s.takeLocked(e)
			s.refillLocked()
			return grant{e: e}, nil
		}
		if s.maxSize == 0 || s.live < s.maxSize {
			s.live++
			s.creating++
			s.refillLocked()
			return grant{slot: true}, nil
		}
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
		s.mu.Lock()
		s.inUse--
		ok := s.releaseLocked(g.e)
		s.mu.Unlock()
		if !ok {
			_ = s.destroy(g.e, ReasonClosed)
		}
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
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OpTimeout)
			defer cancel()
			if _, err := s.create(WithBackground(ctx), true); err != nil {
				s.log.Warn("refill failed", "error", err)
			}
		}()
	}
}

// create makes a sandbox in a slot already reserved (live and creating
// counted). A sandbox for a Get is returned in use; a refill is released to
// a waiter or to idle.
func (s *Set) create(ctx context.Context, refill bool) (*entry, error) {
	id := fmt.Sprintf("%s-%016x", s.cfg.Name, rand.Uint64())
	s.mu.Lock()
	s.ids[id] = true
	s.mu.Unlock()
	sb, err := s.makeSandbox(ctx, id)
	s.mu.Lock()
	s.creating--
	if refill {
		s.refilling--
	}
	if err != nil {
		delete(s.ids, id)
		s.live--
		s.freeSlotLocked()
		s.mu.Unlock()
		s.stats.createFailures.Add(1)
		return nil, err
	}
	s.stats.creates.Add(1)
	e := &entry{sb: sb, id: id, lastUsed: time.Now()}
	if !refill {
		e.state = stateInUse
		s.inUse++
		s.mu.Unlock()
		return e, nil
	}
	e.hot = true // created unpaused; pause it after the grace
	if s.cfg.PauseGrace == 0 && len(s.waiters) == 0 && !s.closed {
		e.state = statePausing
		s.pausing++
		s.mu.Unlock()
		return e, s.pauseAndRelease(e)
	}
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
	sb, err := s.fork.Fork(ctx, parent.Sandbox(), spec)
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
	s.freeSlotLocked()
	s.refillLocked()
	s.mu.Unlock()
	return err
}

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
	need := n - len(s.idle) - s.refilling - s.pausing
	if s.maxSize > 0 {
		need = min(need, s.maxSize-s.live)
	}
	need = max(need, 0)
	s.live += need
	s.creating += need
	s.refilling += need
	s.mu.Unlock()

	errs := make(chan error, need)
	for range need {
		go func() {
			_, err := s.create(ctx, true)
			errs <- err
		}()
	}
	var first error
	for range need {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Shrink destroys idle sandboxes, least recently used first, until at most n
// are idle, and lowers MinIdle to n if it was higher.
func (s *Set) Shrink(n int) error {
	if n < 0 {
		return fmt.Errorf("pool %q: shrink %d: must not be negative", s.cfg.Name, n)
	}
	victims := s.shrinkLocked(n)
	var errs []error
	for _, e := range victims {
		errs = append(errs, s.destroy(e, ReasonShrink))
	}
	return errors.Join(errs...)
}

func (s *Set) shrinkLocked(n int) []*entry {
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
			for _, e := range s.expireLocked(now.Add(-ttl)) {
				_ = s.destroy(e, ReasonIdleTTL)
			}
		}
	}
}

// expireLocked removes the idle sandboxes last used before cutoff, keeping
// MinIdle.
func (s *Set) expireLocked(cutoff time.Time) []*entry {
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

// Close destroys the idle sandboxes, fails waiting Gets, and makes every
// later Get fail with ErrClosed. Sandboxes in use are destroyed when they are
// returned. Close waits, until ctx ends, for background work to finish.
func (s *Set) Close(ctx context.Context) error {
	victims, first := s.closeLocked()
	if !first {
		return nil
	}
	var errs []error
	for _, e := range victims {
		errs = append(errs, s.destroy(e, ReasonClosed))
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

func (s *Set) closeLocked() ([]*entry, bool) {
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

// Ref is a sandbox held by one caller, from GetOrCreateUnpaused until Put or
// Destroy. Calling any method after Put or Destroy panics.
type Ref struct {
	set      *Set
	e        *entry
	outcome  Outcome
	released atomic.Bool
}

func (s *Set) newRef(e *entry, o Outcome, start time.Time) *Ref {
	s.stats.got(o, time.Since(start))
	return &Ref{set: s, e: e, outcome: o}
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

// Put returns the sandbox to the pool: to a waiting Get at once, else
// paused (after Config.PauseGrace, off the caller's path, if set). A sandbox
// that fails to pause is destroyed and the error says so; after Close it is
// destroyed. Put does not take a context: a pause cut short would leave the
// sandbox in an unknown state, so the Sandbox bounds its own call.
func (r *Ref) Put() error {
	r.release("Put")
	s, e := r.set, r.e
	s.mu.Lock()
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
	s, e := r.set, r.e
	s.mu.Lock()
	s.inUse--
	e.state = stateDestroying
	s.mu.Unlock()
	return s.destroy(e, reason)
}
