package sandboxset

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

const reasonUsed = "run done"

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// busySwitch is a Reaper's busy function the test turns.
type busySwitch struct{ on atomic.Bool }

func (b *busySwitch) busy() bool { return b.on.Load() }

// While creates are waited for, a used sandbox's destroy waits, paused,
// and its slot is free at once; when the runtime is quiet it is done.
func TestDestroyDeferredWhileBusy(t *testing.T) {
	var b busySwitch
	rp := NewReaper(b.busy, 4, time.Hour)
	defer rp.Stop()
	f := newFixture(t, func(c *Config) { c.MaxSize = 1; c.Reaper = rp })
	b.on.Store(true)
	r := f.get()
	id := r.Sandbox().ID()
	if err := r.DestroyDeferred(reasonUsed); err != nil {
		t.Fatal(err)
	}
	ms := f.mock.Lookup(id)
	if ms == nil || !ms.Paused() {
		t.Fatalf("deferred sandbox %s: gone or running (%v); want it paused, waiting", id, ms)
	}
	if st := f.set.Stats(); st.Deferred != 1 || rp.Deferred() != 1 {
		t.Fatalf("deferred %d (reaper %d), want 1", st.Deferred, rp.Deferred())
	}
	// Its slot is free: a Get of this MaxSize-1 pool creates now.
	r2 := f.get()
	if r2.Sandbox().ID() == id {
		t.Fatal("the deferred sandbox was handed out")
	}
	time.Sleep(5 * reaperTick) // busy: nothing happens to it
	if f.mock.Lookup(id) == nil {
		t.Fatal("destroyed while creates were waited for")
	}
	b.on.Store(false)
	eventually(t, "the deferred destroy is done once the runtime is quiet", func() bool { return f.mock.Lookup(id) == nil })
	// The runtime's destroy returns before the set counts it: wait for the
	// count too (a check made at once raced it, in one CI run).
	eventually(t, "the deferred destroy counted: deferred 0, destroys[used] 1", func() bool {
		st := f.set.Stats()
		return st.Deferred == 0 && st.Destroys[reasonUsed] == 1
	})
	f.put(r2)
}

// Quiet: DestroyDeferred destroys at once, like Destroy.
func TestDestroyDeferredQuietIsImmediate(t *testing.T) {
	var b busySwitch
	rp := NewReaper(b.busy, 4, time.Hour)
	defer rp.Stop()
	f := newFixture(t, func(c *Config) { c.Reaper = rp })
	r := f.get()
	id := r.Sandbox().ID()
	if err := r.DestroyDeferred(reasonUsed); err != nil {
		t.Fatal(err)
	}
	if f.mock.Lookup(id) != nil {
		t.Fatal("not destroyed at once while quiet")
	}
}

// The deferral is bounded: with MaxDeferred held, a destroy is done at
// once (the held ones stay), and none waits longer than MaxDelay, busy or
// not.
func TestDestroyDeferredBounded(t *testing.T) {
	var b busySwitch
	b.on.Store(true)
	rp := NewReaper(b.busy, 2, 2*time.Second)
	defer rp.Stop()
	f := newFixture(t, func(c *Config) { c.Reaper = rp })
	var ids []string
	start := time.Now()
	for i := range 5 {
		r := f.get()
		id := r.Sandbox().ID()
		ids = append(ids, id)
		if err := r.DestroyDeferred(reasonUsed); err != nil {
			t.Fatal(err)
		}
		if gone := f.mock.Lookup(id) == nil; gone != (i >= 2) {
			t.Errorf("destroy %d: gone at once %v; want the first 2 held, the rest destroyed at once", i, gone)
		}
	}
	if n := rp.Deferred(); n != 2 {
		t.Errorf("%d held back, want 2", n)
	}
	for _, id := range ids[:2] {
		if f.mock.Lookup(id) == nil && time.Since(start) < 2*time.Second {
			t.Errorf("%s, held, was destroyed before MaxDelay while busy", id)
		}
	}
	eventually(t, "none held back past MaxDelay", func() bool { return rp.Deferred() == 0 && len(f.mock.Alive()) == 0 })
}

// Close destroys what is held back, under the reason given.
func TestCloseDestroysDeferred(t *testing.T) {
	var b busySwitch
	b.on.Store(true)
	rp := NewReaper(b.busy, 4, time.Hour)
	defer rp.Stop()
	f := newFixture(t, func(c *Config) { c.Reaper = rp })
	r := f.get()
	if err := r.DestroyDeferred(reasonUsed); err != nil {
		t.Fatal(err)
	}
	if err := f.set.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.mock.Alive()); n != 0 {
		t.Fatalf("%d sandboxes left after Close", n)
	}
	if st := f.set.Stats(); st.Destroys[reasonUsed] != 1 || st.Deferred != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Stop does every held-back destroy.
func TestReaperStopFlushes(t *testing.T) {
	var b busySwitch
	b.on.Store(true)
	rp := NewReaper(b.busy, 4, time.Hour)
	f := newFixture(t, func(c *Config) { c.Reaper = rp })
	r := f.get()
	if err := r.DestroyDeferred(reasonUsed); err != nil {
		t.Fatal(err)
	}
	rp.Stop()
	if n := len(f.mock.Alive()); n != 0 {
		t.Fatalf("%d sandboxes left after Stop", n)
	}
}

// A Reaper holding nothing sleeps: it looks at nothing until a destroy is
// deferred (an idle daemon wakes for nothing; it woke 40 times a second).
func TestIdleReaperSleeps(t *testing.T) {
	var looks atomic.Int64
	rp := NewReaper(func() bool { looks.Add(1); return false }, 4, time.Hour)
	defer rp.Stop()
	time.Sleep(10 * reaperTick)
	if n := looks.Load(); n != 0 {
		t.Errorf("an empty Reaper looked at its queue %d times in %v", n, 10*reaperTick)
	}
}
