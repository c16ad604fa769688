package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixture is a Set on a MockBackend with scratch directories in a temp dir.
type fixture struct {
	t    *testing.T
	set  *Set
	mock *MockBackend
	root string
}

func newFixture(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, mock: NewMockBackend(), root: t.TempDir()}
	cfg := Config{Name: "fn", Backend: f.mock, Scratch: DirScratch{Root: f.root}}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.set = s
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return f
}

func (f *fixture) get() *Ref {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f.set.GetOrCreateUnpaused(ctx)
	if err != nil {
		f.t.Fatalf("GetOrCreateUnpaused: %v", err)
	}
	if ms := f.mock.Lookup(r.Sandbox().ID()); ms == nil || ms.Paused() {
		f.t.Fatalf("got sandbox %s that is gone or paused", r.Sandbox().ID())
	}
	return r
}

func (f *fixture) put(r *Ref) {
	f.t.Helper()
	if err := r.Put(); err != nil {
		f.t.Fatalf("Put: %v", err)
	}
}

// eventually polls cond until it holds or 10s pass.
func (f *fixture) eventually(what string, cond func(Stats) bool) Stats {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := f.set.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; stats %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// closeAndCheckLeaks closes the set and checks that every sandbox and
// scratch directory is gone.
func (f *fixture) closeAndCheckLeaks() {
	f.t.Helper()
	if err := f.set.Close(context.Background()); err != nil {
		f.t.Fatalf("Close: %v", err)
	}
	created, destroyed, alive := f.mock.Counts()
	if alive != 0 || created != destroyed {
		f.t.Errorf("after Close: created %d, destroyed %d, alive %d (%v)", created, destroyed, alive, f.mock.Alive())
	}
	if st := f.set.Stats(); st.Destroyed() != uint64(destroyed) {
		f.t.Errorf("stats count %d destroys, backend %d", st.Destroyed(), destroyed)
	}
	ents, err := os.ReadDir(f.root)
	if err != nil {
		f.t.Fatal(err)
	}
	if len(ents) != 0 {
		f.t.Errorf("scratch directories left behind: %v", ents)
	}
}

func TestNewSandboxOnFirstGet(t *testing.T) {
	f := newFixture(t, nil)
	r := f.get()
	if r.Outcome() != Cold {
		t.Errorf("outcome %v, want cold", r.Outcome())
	}
	ms := f.mock.Lookup(r.Sandbox().ID())
	if !strings.HasPrefix(ms.ID(), "fn-") {
		t.Errorf("sandbox ID %q does not name its pool", ms.ID())
	}
	if fi, err := os.Stat(ms.Spec().ScratchDir); err != nil || !fi.IsDir() {
		t.Errorf("scratch directory %q: %v", ms.Spec().ScratchDir, err)
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

func TestSameSandboxAfterPut(t *testing.T) {
	f := newFixture(t, nil)
	r := f.get()
	id := r.Sandbox().ID()
	f.put(r)
	if !f.mock.Lookup(id).Paused() {
		t.Fatalf("sandbox %s not paused after Put", id)
	}
	r2 := f.get()
	if r2.Sandbox().ID() != id || r2.Outcome() != Warm {
		t.Errorf("got %s (%v), want %s (warm)", r2.Sandbox().ID(), r2.Outcome(), id)
	}
	f.put(r2)
	st := f.set.Stats()
	if st.ColdMisses != 1 || st.WarmHits != 1 || st.Creates != 1 || st.Idle != 1 {
		t.Errorf("stats %+v", st)
	}
	f.closeAndCheckLeaks()
}

func TestMostRecentlyUsedFirst(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.get(), f.get()
	f.put(a)
	f.put(b)
	r := f.get()
	if r.Sandbox().ID() != b.e.id {
		t.Errorf("got %s, want the most recently returned %s", r.Sandbox().ID(), b.e.id)
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

func TestDeadWhilePausedIsSkipped(t *testing.T) {
	f := newFixture(t, nil)
	a, b, c := f.get(), f.get(), f.get()
	ida, idb, idc := a.Sandbox().ID(), b.Sandbox().ID(), c.Sandbox().ID()
	f.put(a)
	f.put(b)
	f.put(c)
	// c and b are the most recently used; both died while paused.
	for _, id := range []string{idc, idb} {
		if err := f.mock.Kill(id); err != nil {
			t.Fatal(err)
		}
	}
	r := f.get()
	if r.Sandbox().ID() != ida || r.Outcome() != Warm {
		t.Errorf("got %s (%v), want %s (warm)", r.Sandbox().ID(), r.Outcome(), ida)
	}
	for _, id := range []string{idb, idc} {
		if f.mock.Lookup(id) != nil {
			t.Errorf("dead sandbox %s was not destroyed", id)
		}
	}
	st := f.set.Stats()
	if st.UnpauseFailures != 2 || st.Destroys[ReasonUnpauseFailed] != 2 {
		t.Errorf("stats %+v", st)
	}
	// With every idle sandbox dead, a new one is created.
	f.put(r)
	if err := f.mock.Kill(ida); err != nil {
		t.Fatal(err)
	}
	r = f.get()
	if r.Outcome() != Cold || r.Sandbox().ID() == ida {
		t.Errorf("got %s (%v), want a new sandbox", r.Sandbox().ID(), r.Outcome())
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

// A sandbox lost while idle (its container died while paused) is dropped
// as soon as the caller learns of it, not at the next Get, and the pool
// refills to MinIdle; idle sandboxes still alive stay.
func TestDropIdle(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MinIdle = 3 })
	f.eventually("3 idle", func(st Stats) bool { return st.Idle == 3 })
	ids := f.mock.Alive()
	dead := ids[1]
	if err := f.mock.Kill(dead); err != nil {
		t.Fatal(err)
	}
	if n := f.set.DropIdle(func(sb Sandbox, _ time.Time) bool { return sb.ID() == dead }); n != 1 {
		t.Fatalf("DropIdle dropped %d, want 1", n)
	}
	st := f.eventually("refilled to 3 idle", func(st Stats) bool { return st.Idle == 3 && st.Creating == 0 })
	if st.Destroys[ReasonLost] != 1 || st.Creates != 4 {
		t.Errorf("destroys %v, creates %d: want 1 lost, 4 creates", st.Destroys, st.Creates)
	}
	alive := f.mock.Alive()
	for _, id := range ids {
		if id != dead && !slices.Contains(alive, id) {
			t.Errorf("live idle sandbox %s was dropped", id)
		}
	}
	if slices.Contains(alive, dead) {
		t.Errorf("lost sandbox %s is still there", dead)
	}
	if f.set.Knows(dead) || !f.set.Knows(ids[0]) || f.set.Knows("fn-nope") {
		t.Errorf("Knows: dropped %v, idle %v, unknown %v; want false, true, false", f.set.Knows(dead), f.set.Knows(ids[0]), f.set.Knows("fn-nope"))
	}
	if n := f.set.DropIdle(func(Sandbox, time.Time) bool { return false }); n != 0 {
		t.Errorf("DropIdle with nothing lost dropped %d", n)
	}
	f.closeAndCheckLeaks()
}

// A Get that takes a paused sandbox starts the refill it calls for once
// its unpause is done, not alongside it: on one dockerd a create slows the
// unpause the caller waits for (seen: 13 ms raw, 20 ms beside a create).
// One that takes a hot sandbox refills at once.
func TestRefillAfterUnpause(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MinIdle = 1 })
	f.eventually("1 idle", func(st Stats) bool { return st.Idle == 1 && st.Creating == 0 && st.Pausing == 0 })
	f.mock.SetLatency(OpUnpause, 300*time.Millisecond)
	got := make(chan *Ref, 1)
	go func() { got <- f.get() }()
	time.Sleep(150 * time.Millisecond) // well inside the unpause
	if st := f.set.Stats(); st.Creates != 1 || st.Creating != 0 {
		t.Errorf("during the unpause: %d creates, %d creating; want the refill not started", st.Creates, st.Creating)
	}
	r := <-got
	f.eventually("refilled", func(st Stats) bool { return st.Idle == 1 && st.Creates == 2 && st.Creating == 0 })
	f.put(r)
	f.closeAndCheckLeaks()
}

// Sandboxes being paused on their way to idle count toward MinIdle: a Warm
// while a refill's pauses are in flight makes no extra ones.
func TestWarmCountsPausing(t *testing.T) {
	f := newFixture(t, nil)
	f.mock.SetLatency(OpPause, 200*time.Millisecond)
	go f.set.Warm(context.Background(), 3)
	f.eventually("3 pausing", func(st Stats) bool { return st.Pausing == 3 })
	if err := f.set.Warm(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	st := f.eventually("3 idle", func(st Stats) bool { return st.Idle == 3 && st.Pausing == 0 && st.Creating == 0 })
	if st.Creates != 3 {
		t.Errorf("%d creates for min_idle 3", st.Creates)
	}
	f.closeAndCheckLeaks()
}

func mustPanic(t *testing.T, what, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		p := recover()
		if p == nil {
			t.Fatalf("%s did not panic", what)
		}
		if !strings.Contains(fmt.Sprint(p), want) {
			t.Errorf("%s panicked with %q; want it to mention %q", what, p, want)
		}
	}()
	fn()
}

func TestRefMisuse(t *testing.T) {
	tests := []struct {
		name   string
		first  func(*Ref) error
		second func(*Ref)
		want   string
	}{
		{"put twice", (*Ref).Put, func(r *Ref) { _ = r.Put() }, "Put called on a Ref already released"},
		{"destroy after put", (*Ref).Put, func(r *Ref) { _ = r.Destroy("x") }, "Destroy called on a Ref already released"},
		{"put after destroy", func(r *Ref) error { return r.Destroy("x") }, func(r *Ref) { _ = r.Put() }, "Put called on a Ref already released"},
		{"sandbox after put", (*Ref).Put, func(r *Ref) { r.Sandbox() }, "Sandbox called on a released Ref"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			r := f.get()
			if err := tc.first(r); err != nil {
				t.Fatal(err)
			}
			mustPanic(t, tc.name, tc.want, func() { tc.second(r) })
			f.closeAndCheckLeaks()
		})
	}
}

func TestPauseFailureDestroys(t *testing.T) {
	f := newFixture(t, nil)
	r := f.get()
	id := r.Sandbox().ID()
	boom := errors.New("freezer stuck")
	f.mock.SetFault(OpPause, boom)
	err := r.Put()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), id) {
		t.Errorf("Put error %v; want it to wrap the pause error and name %s", err, id)
	}
	if f.mock.Lookup(id) != nil {
		t.Errorf("sandbox %s that failed to pause still exists", id)
	}
	f.mock.SetFault(OpPause, nil)
	r = f.get()
	if r.Sandbox().ID() == id || r.Outcome() != Cold {
		t.Errorf("got %s (%v); a sandbox that failed to pause re-entered the pool", r.Sandbox().ID(), r.Outcome())
	}
	f.put(r)
	if st := f.set.Stats(); st.PauseFailures != 1 || st.Destroys[ReasonPauseFailed] != 1 {
		t.Errorf("stats %+v", st)
	}
	f.closeAndCheckLeaks()
}

func TestCloseDestroysIdle(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.get(), f.get()
	f.put(a)
	f.put(b)
	if err := f.set.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, alive := f.mock.Counts(); alive != 0 {
		t.Errorf("%d sandboxes alive after Close", alive)
	}
	_, err := f.set.GetOrCreateUnpaused(context.Background())
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := f.set.Warm(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Warm after Close: %v, want ErrClosed", err)
	}
	f.closeAndCheckLeaks()
}

func TestPutAfterCloseDestroys(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("grace=", grace), func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.PauseGrace = grace })
			r := f.get()
			if err := f.set.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, _, alive := f.mock.Counts(); alive != 1 {
				t.Errorf("in-use sandbox destroyed by Close (alive %d)", alive)
			}
			f.put(r)
			if st := f.set.Stats(); st.Destroys[ReasonClosed] != 1 || st.InUse != 0 {
				t.Errorf("stats %+v", st)
			}
			f.closeAndCheckLeaks()
		})
	}
}

func TestPauseGrace(t *testing.T) {
	const grace = time.Second // long enough that a loaded machine still gets the hot hit
	f := newFixture(t, func(c *Config) { c.PauseGrace = grace })
	r := f.get()
	id := r.Sandbox().ID()
	f.put(r)
	if f.mock.Lookup(id).Paused() {
		t.Fatal("paused at once despite a pause grace")
	}
	// A hot hit makes no backend call: prove it by making unpause fail.
	f.mock.SetFault(OpUnpause, errors.New("unpause must not be called"))
	r = f.get()
	if r.Sandbox().ID() != id || r.Outcome() != Hot {
		t.Fatalf("got %s (%v), want %s hot", r.Sandbox().ID(), r.Outcome(), id)
	}
	f.mock.SetFault(OpUnpause, nil)
	f.put(r)
	// When the grace ends it is paused in the background.
	deadline := time.Now().Add(10 * time.Second)
	for !f.mock.Lookup(id).Paused() {
		if time.Now().After(deadline) {
			t.Fatal("not paused after the grace")
		}
		time.Sleep(time.Millisecond)
	}
	f.eventually("paused sandbox back in idle", func(st Stats) bool { return st.Idle == 1 && st.Pausing == 0 })
	r = f.get()
	if r.Sandbox().ID() != id || r.Outcome() != Warm {
		t.Fatalf("got %s (%v), want %s warm", r.Sandbox().ID(), r.Outcome(), id)
	}
	f.put(r)
	st := f.set.Stats()
	if st.HotHits != 1 || st.WarmHits != 1 || st.ColdMisses != 1 {
		t.Errorf("stats %+v", st)
	}
	f.closeAndCheckLeaks()
}

func TestPauseGraceFailureDestroys(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.PauseGrace = time.Millisecond })
	r := f.get()
	id := r.Sandbox().ID()
	f.mock.SetFault(OpPause, errors.New("freezer stuck"))
	f.put(r)
	f.eventually("sandbox destroyed after a failed background pause", func(st Stats) bool {
		return st.Destroys[ReasonPauseFailed] == 1 && st.Idle == 0
	})
	if f.mock.Lookup(id) != nil {
		t.Errorf("sandbox %s still exists", id)
	}
	f.closeAndCheckLeaks()
}

func TestMinIdleWarmShrink(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MinIdle = 3 })
	f.eventually("prewarm to 3", func(st Stats) bool { return st.Idle == 3 && st.Creating == 0 && st.Pausing == 0 })
	for _, id := range f.mock.Alive() {
		if !f.mock.Lookup(id).Paused() {
			t.Errorf("idle sandbox %s is not paused", id)
		}
	}
	r := f.get()
	if r.Outcome() != Warm {
		t.Errorf("outcome %v, want warm from the prewarmed pool", r.Outcome())
	}
	f.eventually("refill to 3", func(st Stats) bool { return st.Idle == 3 && st.Creating == 0 && st.Pausing == 0 })
	f.put(r)

	if err := f.set.Warm(context.Background(), 6); err != nil {
		t.Fatal(err)
	}
	f.eventually("warm to 6", func(st Stats) bool { return st.Idle == 6 && st.MinIdle == 6 })

	if err := f.set.Shrink(2); err != nil {
		t.Fatal(err)
	}
	st := f.set.Stats()
	if st.Idle != 2 || st.MinIdle != 2 || st.Destroys[ReasonShrink] != 4 {
		t.Errorf("after Shrink(2): %+v", st)
	}
	if err := f.set.Warm(context.Background(), -1); err == nil {
		t.Error("Warm(-1) succeeded")
	}
	f.closeAndCheckLeaks()
}

func TestMaxSizeWaitsAndTimesOut(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
	r := f.get()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := f.set.GetOrCreateUnpaused(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "max size 1") {
		t.Errorf("Get on a full pool: %v; want a deadline error naming the max size", err)
	}
	if st := f.set.Stats(); st.Waiting != 0 {
		t.Errorf("a cancelled waiter is still queued: %+v", st)
	}
	// Destroying the held sandbox frees a slot for the next Get.
	done := make(chan *Ref)
	go func() {
		r, err := f.set.GetOrCreateUnpaused(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	f.eventually("a waiter", func(st Stats) bool { return st.Waiting == 1 })
	if err := r.Destroy("test"); err != nil {
		t.Fatal(err)
	}
	r2 := <-done
	if r2 == nil || r2.Outcome() != Cold {
		t.Fatalf("waiter got %v", r2)
	}
	f.put(r2)
	f.closeAndCheckLeaks()
}

func TestWaitersServedInArrivalOrder(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
	held := f.get()
	const n = 8
	order := make(chan int, n)
	refs := make(chan *Ref, n)
	for i := range n {
		go func() {
			r, err := f.set.GetOrCreateUnpaused(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			refs <- r
		}()
		f.eventually(fmt.Sprintf("waiter %d queued", i), func(st Stats) bool { return st.Waiting == i+1 })
	}
	f.put(held)
	for want := range n {
		if got := <-order; got != want {
			t.Errorf("waiter %d served in place %d", got, want)
		}
		r := <-refs
		if r.Outcome() != Hot {
			t.Errorf("handed-over sandbox outcome %v, want hot (no pause, no unpause)", r.Outcome())
		}
		f.put(r)
	}
	f.closeAndCheckLeaks()
}

func TestCloseFailsWaiters(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
	r := f.get()
	errc := make(chan error)
	go func() {
		_, err := f.set.GetOrCreateUnpaused(context.Background())
		errc <- err
	}()
	f.eventually("a waiter", func(st Stats) bool { return st.Waiting == 1 })
	if err := f.set.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("waiter got %v, want ErrClosed", err)
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

func TestIdleTTL(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.IdleTTL = 30 * time.Millisecond; c.MinIdle = 1 })
	f.eventually("prewarm", func(st Stats) bool { return st.Idle == 1 })
	refs := []*Ref{f.get(), f.get(), f.get()}
	for _, r := range refs {
		f.put(r)
	}
	st := f.eventually("idle ttl down to min idle", func(st Stats) bool {
		return st.Idle == 1 && st.Creating == 0 && st.Destroys[ReasonIdleTTL] == st.Creates-1
	})
	if st.Creates < 3 {
		t.Errorf("stats %+v", st)
	}
	f.closeAndCheckLeaks()
}

// noFork hides MockBackend's Fork.
type noFork struct{ Backend }

func TestFork(t *testing.T) {
	parent := newFixture(t, nil)
	child := newFixture(t, func(c *Config) { c.Parent = parent.set; c.Backend = parent.mock })
	child.mock = parent.mock
	r := child.get()
	ms := parent.mock.Lookup(r.Sandbox().ID())
	if ms.Parent() == "" || !strings.HasPrefix(ms.Parent(), "fn-") {
		t.Errorf("child %s has parent %q", ms.ID(), ms.Parent())
	}
	if st := parent.set.Stats(); st.Idle != 1 || st.InUse != 0 {
		t.Errorf("parent pool after fork: %+v", st)
	}
	child.put(r)
	for _, s := range []*Set{child.set, parent.set} {
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	created, destroyed, alive := parent.mock.Counts()
	if created != 2 || destroyed != 2 || alive != 0 {
		t.Errorf("created %d, destroyed %d, alive %d; want 2, 2, 0", created, destroyed, alive)
	}

	_, err := New(Config{Name: "c", Backend: noFork{NewMockBackend()}, Scratch: DirScratch{Root: t.TempDir()}, Parent: parent.set})
	if !errors.Is(err, ErrForkUnsupported) {
		t.Errorf("New with a parent on a backend that cannot fork: %v, want ErrForkUnsupported", err)
	}
}

type failScratch struct{ DirScratch }

func (failScratch) Make(context.Context, string) (string, error) {
	return "", errors.New("no space left on device")
}

func TestCreateFailures(t *testing.T) {
	t.Run("backend", func(t *testing.T) {
		f := newFixture(t, nil)
		f.mock.SetFault(OpCreate, errors.New("image not found"))
		_, err := f.set.GetOrCreateUnpaused(context.Background())
		if err == nil || !strings.Contains(err.Error(), "image not found") || !strings.Contains(err.Error(), `pool "fn"`) {
			t.Errorf("error %v; want it to name the pool and the cause", err)
		}
		if st := f.set.Stats(); st.CreateFailures != 1 || st.Creating != 0 {
			t.Errorf("stats %+v", st)
		}
		f.closeAndCheckLeaks() // the scratch directory was removed
	})
	t.Run("scratch", func(t *testing.T) {
		f := newFixture(t, func(c *Config) { c.Scratch = failScratch{} })
		_, err := f.set.GetOrCreateUnpaused(context.Background())
		if err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("error %v; want the scratch cause", err)
		}
		if _, _, alive := f.mock.Counts(); alive != 0 {
			t.Errorf("a sandbox was created without a scratch directory")
		}
	})
	t.Run("frees the slot", func(t *testing.T) {
		f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
		f.mock.SetFault(OpCreate, errors.New("boom"))
		for range 3 {
			if _, err := f.set.GetOrCreateUnpaused(context.Background()); err == nil {
				t.Fatal("create fault ignored")
			}
		}
		f.mock.SetFault(OpCreate, nil)
		f.put(f.get())
		f.closeAndCheckLeaks()
	})
}

func TestDestroyReportsBackendError(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
	r := f.get()
	f.mock.SetFault(OpDestroy, errors.New("device busy"))
	if err := r.Destroy("done"); err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Errorf("Destroy: %v", err)
	}
	f.mock.SetFault(OpDestroy, nil)
	// The slot is free all the same.
	f.put(f.get())
	if st := f.set.Stats(); st.Destroys["done"] != 1 {
		t.Errorf("stats %+v", st)
	}
	f.closeAndCheckLeaks()
}

func TestInvalidConfig(t *testing.T) {
	m, sc := NewMockBackend(), DirScratch{Root: t.TempDir()}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad name", Config{Name: "../x", Backend: m, Scratch: sc}, "pool name"},
		{"empty name", Config{Backend: m, Scratch: sc}, "pool name"},
		{"no backend", Config{Name: "a", Scratch: sc}, "no backend"},
		{"no scratch", Config{Name: "a", Backend: m}, "no scratch"},
		{"negative min idle", Config{Name: "a", Backend: m, Scratch: sc, MinIdle: -1}, "min idle -1"},
		{"min idle over max", Config{Name: "a", Backend: m, Scratch: sc, MinIdle: 3, MaxSize: 2}, "more than max size"},
		{"negative ttl", Config{Name: "a", Backend: m, Scratch: sc, IdleTTL: -time.Second}, "idle ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want ErrInvalidConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestGetHonoursContextDuringUnpause(t *testing.T) {
	f := newFixture(t, nil)
	f.put(f.get())
	f.mock.SetLatency(OpUnpause, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.set.GetOrCreateUnpaused(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get: %v, want deadline exceeded", err)
	}
	f.mock.SetLatency(OpUnpause, 0)
	f.closeAndCheckLeaks()
}

func TestStatsLatency(t *testing.T) {
	f := newFixture(t, nil)
	f.mock.SetLatency(OpCreate, 5*time.Millisecond)
	r := f.get()
	f.put(r)
	f.put(f.get())
	st := f.set.Stats()
	cold, warm := st.Latency["cold"], st.Latency["warm"]
	if cold.Count != 1 || warm.Count != 1 {
		t.Fatalf("latency counts %+v", st.Latency)
	}
	if cold.P50 < 5*time.Millisecond || cold.Max < cold.P50 {
		t.Errorf("cold latency %+v shorter than the 5ms create", cold)
	}
	f.closeAndCheckLeaks()
}

func TestAdopt(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSize = 1 })
	sb, err := f.mock.Create(context.Background(), Spec{ID: "fn-adopted", Pool: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.set.cfg.Scratch.Make(context.Background(), "fn-adopted"); err != nil {
		t.Fatal(err)
	}
	if err := sb.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.set.Adopt(sb); err != nil {
		t.Fatal(err)
	}
	other, _ := NewMockBackend().Create(context.Background(), Spec{ID: "fn-extra", Pool: "fn"})
	if err := f.set.Adopt(other); err == nil || !strings.Contains(err.Error(), "max size 1") {
		t.Errorf("Adopt past max size: %v", err)
	}
	_ = other.Destroy(context.Background(), "test")
	r := f.get()
	if r.Sandbox().ID() != "fn-adopted" || r.Outcome() != Warm {
		t.Errorf("got %s (%v), want the adopted sandbox, warm", r.Sandbox().ID(), r.Outcome())
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

// recordingBackend notes whether each create was a background one.
type recordingBackend struct {
	*MockBackend
	mu         sync.Mutex
	background []bool
}

func (b *recordingBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	b.mu.Lock()
	b.background = append(b.background, IsBackground(ctx))
	b.mu.Unlock()
	return b.MockBackend.Create(ctx, spec)
}

func TestEvictIdleAndBackground(t *testing.T) {
	rb := &recordingBackend{MockBackend: NewMockBackend()}
	f := newFixture(t, func(c *Config) { c.MinIdle = 1; c.Backend = rb })
	f.mock = rb.MockBackend
	f.eventually("prewarm", func(st Stats) bool { return st.Idle == 1 && st.Pausing == 0 })
	r1, r2 := f.get(), f.get() // a warm hit, then a cold miss
	f.put(r1)
	time.Sleep(2 * time.Millisecond)
	f.put(r2)
	f.eventually("refill", func(st Stats) bool { return st.Idle >= 3 && st.Creating == 0 && st.Pausing == 0 })
	rb.mu.Lock()
	var bg, fg int
	for _, b := range rb.background {
		if b {
			bg++
		} else {
			fg++
		}
	}
	rb.mu.Unlock()
	// The second Get takes the first sandbox to come free: the refill
	// the warm hit started (once paused, or as made), or one a create of
	// its own (foreground) made if nothing on its way covered it.
	if st := f.set.Stats(); uint64(fg) > st.ColdMisses || bg < 2 || uint64(fg+bg) != st.Creates {
		t.Errorf("%d foreground and %d background creates, %d cold Gets; want at most one foreground per cold Get and the rest refills (%d creates)", fg, bg, st.ColdMisses, st.Creates)
	}
	oldest, ok := f.set.OldestIdle()
	if !ok || oldest.After(time.Now()) {
		t.Fatalf("OldestIdle: %v, %v", oldest, ok)
	}
	idle := f.set.Stats().Idle
	if !f.set.EvictIdle() {
		t.Fatal("EvictIdle found nothing")
	}
	if st := f.set.Stats(); st.Idle != idle-1 || st.Destroys[ReasonEvicted] != 1 {
		t.Errorf("after EvictIdle: %+v", st)
	}
	f.closeAndCheckLeaks()
}

func TestValidateSandboxID(t *testing.T) {
	long := strings.Repeat("p", 100)
	for id, ok := range map[string]bool{
		"fn-0123456789abcdef":       true,
		long + "-0123456789abcdef":  true, // a 117-character ID of a 100-character pool
		long + "p-0123456789abcdef": false,
		"fn":                        false,
		"../x-0123456789abcdef":     false,
		"fn-0123456789ABCDEF":       false,
		"fn-0123456789abcdef/..":    false,
		"-0123456789abcdef":         false,
		"fn-0123456789abcdef0":      false,
	} {
		if err := ValidateSandboxID(id); (err == nil) != ok {
			t.Errorf("ValidateSandboxID(%q) = %v; want ok=%v", id, err, ok)
		}
	}
	f := newFixture(t, func(c *Config) { c.Name = long })
	ref := f.get()
	if err := ValidateSandboxID(ref.Sandbox().ID()); err != nil {
		t.Errorf("an ID the set made: %v", err)
	}
	ref.Put()
}

// A Get while the only sandbox is being paused waits for that pause and
// unpauses it (warm) rather than creating a sandbox (cold): the pause takes
// milliseconds, a create hundreds.
func TestGetWaitsForAPauseInFlight(t *testing.T) {
	mb := NewMockBackend()
	mb.SetLatency(OpPause, 50*time.Millisecond)
	s, err := New(Config{Name: "p", Backend: mb, Scratch: DirScratch{Root: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	ref, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := ref.Sandbox().ID()
	put := make(chan error, 1)
	go func() { put <- ref.Put() }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Pausing == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the Put never started pausing")
		}
		time.Sleep(time.Millisecond)
	}
	ref2, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if ref2.Outcome() != Warm || ref2.Sandbox().ID() != first {
		t.Fatalf("Get during the pause: %v sandbox %s; want the paused one (%s), warm", ref2.Outcome(), ref2.Sandbox().ID(), first)
	}
	if created, _, _ := mb.Counts(); created != 1 {
		t.Fatalf("%d sandboxes created; want 1", created)
	}
	ref2.Destroy("test")
}

// cleaningBackend makes sandboxes that are Cleaners: each counts its
// marks and sweeps, and a sweep fails while failSweep is set.
type cleaningBackend struct {
	*MockBackend
	mu        sync.Mutex
	marks     int
	sweeps    int
	failSweep bool
	sweepGate chan struct{} // if set, a sweep waits until it is closed
}

type cleaningSandbox struct {
	Sandbox
	b *cleaningBackend
}

func (b *cleaningBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	sb, err := b.MockBackend.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &cleaningSandbox{Sandbox: sb, b: b}, nil
}

func (c *cleaningSandbox) Mark(context.Context) error {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.marks++
	return nil
}

func (c *cleaningSandbox) Sweep(context.Context) (int, error) {
	c.b.mu.Lock()
	gate := c.b.sweepGate
	c.b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.sweeps++
	if c.b.failSweep {
		return 0, errors.New("a process would not die")
	}
	return 1, nil
}

// TestCleanerMarkedAndSwept: every sandbox handed out is marked (cold,
// warm and hot alike), every one returned is swept before anyone else can
// have it, and one whose sweep fails is destroyed, not handed out again.
func TestCleanerMarkedAndSwept(t *testing.T) {
	cb := &cleaningBackend{MockBackend: NewMockBackend()}
	f := newFixture(t, func(c *Config) { c.Backend = cb; c.PauseGrace = time.Hour })
	f.mock = cb.MockBackend
	r := f.get() // cold
	f.put(r)
	r = f.get() // hot: within the pause grace
	f.put(r)
	cb.mu.Lock()
	marks, sweeps := cb.marks, cb.sweeps
	cb.failSweep = true
	cb.mu.Unlock()
	if marks != 2 || sweeps != 2 {
		t.Errorf("%d marks and %d sweeps for two gets and two puts", marks, sweeps)
	}
	r = f.get()
	id := r.Sandbox().ID()
	if err := r.Put(); err == nil {
		t.Error("Put of a sandbox whose sweep failed: no error")
	}
	if st := f.set.Stats(); st.Destroys[ReasonUnclean] != 1 || st.Idle != 0 {
		t.Errorf("after a failed sweep: %+v", st)
	}
	if f.mock.Lookup(id) != nil {
		t.Errorf("sandbox %s whose sweep failed still exists", id)
	}
	f.closeAndCheckLeaks()
}

// putAsyncGated takes a sandbox and gives it back with PutAsync, its sweep
// held until the returned open is called (failing, with failSweep), and
// starts a Get that must wait for it.
func putAsyncGated(t *testing.T, failSweep bool) (f *fixture, cb *cleaningBackend, id string, open func(), putErr <-chan error, got <-chan *Ref) {
	t.Helper()
	cb = &cleaningBackend{MockBackend: NewMockBackend()}
	f = newFixture(t, func(c *Config) { c.Backend = cb; c.PauseGrace = time.Hour })
	f.mock = cb.MockBackend
	r := f.get()
	id = r.Sandbox().ID()
	gate := make(chan struct{})
	var once sync.Once
	open = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open) // a failed check must not leave Close waiting on the sweep
	cb.mu.Lock()
	cb.sweepGate, cb.failSweep = gate, failSweep
	cb.mu.Unlock()
	errs := make(chan error, 1)
	r.PutAsync(func(err error) { errs <- err })
	refs := make(chan *Ref, 1)
	go func() { refs <- f.get() }()
	f.eventually("a waiting Get", func(st Stats) bool { return st.Waiting == 1 })
	return f, cb, id, open, errs, refs
}

// A sandbox given back with PutAsync is on its way to idle while it is
// swept: a Get meanwhile waits for it and starts no create, and gets it.
func TestPutAsyncCoversGet(t *testing.T) {
	f, _, id, open, putErr, got := putAsyncGated(t, false)
	if st := f.set.Stats(); st.Creating != 0 || st.Creates != 1 {
		t.Errorf("a Get while a returned sandbox is swept started a create: %+v", st)
	}
	open()
	r2 := <-got
	if r2.Sandbox().ID() != id {
		t.Errorf("the waiting Get got %s, not the returned %s", r2.Sandbox().ID(), id)
	}
	if r2.Missed() {
		t.Error("a Get served by a sandbox on its way back counts as a miss (it grows the pool's target)")
	}
	if err := <-putErr; err != nil {
		t.Errorf("PutAsync: %v", err)
	}
	f.put(r2)
	f.closeAndCheckLeaks()
}

// A Get that waited for a PutAsync whose sweep fails gets a sandbox made
// for it; the unclean one is destroyed and its error reported.
func TestPutAsyncFailedSweepUncoversGet(t *testing.T) {
	f, cb, id, open, putErr, got := putAsyncGated(t, true)
	open()
	r2 := <-got
	if r2.Sandbox().ID() == id {
		t.Errorf("the waiting Get got the sandbox whose sweep failed")
	}
	if err := <-putErr; err == nil {
		t.Error("PutAsync of a sandbox whose sweep failed: no error")
	}
	if st := f.set.Stats(); st.Destroys[ReasonUnclean] != 1 {
		t.Errorf("after a failed sweep: %+v", st)
	}
	cb.mu.Lock()
	cb.sweepGate, cb.failSweep = nil, false
	cb.mu.Unlock()
	f.put(r2)
	f.closeAndCheckLeaks()
}
