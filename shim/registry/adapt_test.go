package registry

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Back-to-back takes that each destroy their sandbox outrun a refill that
// takes 30 ms: the cold misses grow the target until takes are warm again,
// bounded by max_size (a few creates in flight keep up with a take every
// 10 ms or so); when demand stops, the target falls
// back to the configured min_idle one step at a time. A take that waits for
// a create in flight is cold.
func TestTargetFollowsDemand(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	mb.SetLatency(sandboxset.OpCreate, 30*time.Millisecond)
	r, err := New(Config{Provider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20, MinIdle: 1, MaxSize: 6}); err != nil {
		t.Fatal(err)
	}
	p, _ := r.Pool("fn")
	ctx := context.Background()
	var warmLast10 int
	for i := range 60 {
		_, ref, err := r.take(ctx, "fn", "")
		if err != nil {
			t.Fatal(err)
		}
		if i >= 50 && ref.Outcome() != sandboxset.Cold {
			warmLast10++
		}
		r.finish(p, ref, false) // as a run ends: destroy, then warm the pool

		time.Sleep(10 * time.Millisecond)
	}
	r.bg.Wait()
	grown := p.set.MinIdle()
	if grown <= 1 || grown > 6 {
		t.Fatalf("target after 60 back-to-back takes: %d; want grown above 1, at most max_size 6", grown)
	}
	if warmLast10 < 8 {
		t.Errorf("only %d of the last 10 takes found an idle sandbox with the target at %d", warmLast10, grown)
	}
	// Demand stops: nothing moves before adaptQuiet, then one step per
	// adaptStep down to min_idle.
	now := time.Now()
	r.relax(now.Add(adaptQuiet/2), []*Pool{p})
	if got := p.set.MinIdle(); got != grown {
		t.Fatalf("target %d shrank to %d before demand was quiet for %v", grown, got, adaptQuiet)
	}
	for i := 1; p.set.MinIdle() > 1; i++ {
		before := p.set.MinIdle()
		r.relax(now.Add(adaptQuiet+time.Duration(i)*adaptStep), []*Pool{p})
		if got := p.set.MinIdle(); got != before-1 {
			t.Fatalf("step %d: target %d -> %d, want one less", i, before, got)
		}
	}
	r.relax(now.Add(adaptQuiet+100*adaptStep), []*Pool{p})
	if got := p.set.MinIdle(); got != 1 {
		t.Fatalf("target %d below the configured min_idle 1", got)
	}
}

// An idle daemon's registry looks at its pools once a second, and often
// enough for a short ad-hoc TTL.
func TestSweepEvery(t *testing.T) {
	r, err := New(Config{Provider: testProvider{b: sandboxset.NewMockBackend(), scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	for _, c := range []struct{ ttl, want time.Duration }{
		{10 * time.Minute, time.Second},
		{0, time.Second},
		{300 * time.Millisecond, 75 * time.Millisecond},
		{time.Millisecond, 10 * time.Millisecond},
	} {
		r.mu.Lock()
		r.adhoc.IdleTTL = spec.Duration(c.ttl)
		r.mu.Unlock()
		if got := r.sweepEvery(); got != c.want {
			t.Errorf("ad-hoc ttl %v: sweeps every %v, want %v", c.ttl, got, c.want)
		}
	}
}

// TestTargetBoundedByDemand (issue 37): five runs in a row, each missing
// (a slow create), do not grow the target past what they asked for: it
// stays within the takes seen lately (five), where doubling on each miss
// took it to 32, 33 paused containers on a 2-core host; and it never
// passes the host's bound, 8 per CPU.
func TestTargetBoundedByDemand(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	mb.SetLatency(sandboxset.OpCreate, 50*time.Millisecond)
	r, err := New(Config{Provider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	if _, err := r.PutPool(context.Background(), "shell", spec.PoolConfig{Image: "img", Memory: 32 << 20, MinIdle: 1}); err != nil {
		t.Fatal(err)
	}
	p, _ := r.Pool("shell")
	ctx := context.Background()
	for range 6 {
		_, ref, err := r.take(ctx, "shell", "")
		if err != nil {
			t.Fatal(err)
		}
		r.finish(p, ref, false)
	}
	r.bg.Wait()
	if got := p.set.MinIdle(); got > 6 {
		t.Errorf("target after six takes in a row: %d; want at most the takes seen lately (6)", got)
	}
	if c := r.ceiling(p); c > 8*runtime.NumCPU() {
		t.Errorf("ceiling %d: more than 8 per CPU (%d CPUs)", c, runtime.NumCPU())
	}
}
