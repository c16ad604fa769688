package sandboxset

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// concurrencyBackend records the most creates it ever had in flight.
type concurrencyBackend struct {
	*MockBackend
	now, most atomic.Int32
}

func (b *concurrencyBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	n := b.now.Add(1)
	defer b.now.Add(-1)
	for {
		m := b.most.Load()
		if n <= m || b.most.CompareAndSwap(m, n) {
			break
		}
	}
	return b.MockBackend.Create(ctx, spec)
}

func TestNewLimiter(t *testing.T) {
	if _, err := NewLimiter(0); err == nil {
		t.Error("NewLimiter(0): no error")
	}
	l, err := NewLimiter(3)
	if err != nil || l.Cap() != 3 || l.InFlight() != 0 {
		t.Fatalf("NewLimiter(3): %v, %v", l, err)
	}
}

// A burst of Gets on an empty pool makes no more creates at once than the
// Limiter allows, and every Get is served.
func TestCreatesBounded(t *testing.T) {
	cb := &concurrencyBackend{MockBackend: NewMockBackend()}
	cb.SetLatency(OpCreate, 20*time.Millisecond)
	lim, err := NewLimiter(2)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) { c.Backend = cb; c.Creates = lim })
	f.mock = cb.MockBackend
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for range 12 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := f.set.GetOrCreateUnpaused(ctx)
			if err != nil {
				errs <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
			errs <- r.Destroy("test")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if most := cb.most.Load(); most > 2 || most < 1 {
		t.Errorf("%d creates in flight at most; want 1 or 2 (the limit)", most)
	}
	if st := f.set.Stats(); st.ColdMisses != 12 {
		t.Errorf("%d cold Gets of 12", st.ColdMisses)
	}
	f.closeAndCheckLeaks()
}

// A Get that finds no idle sandbox takes the first create to end, here a
// refill started before it, rather than wait for a create of its own
// queued behind the refills.
func TestGetTakesFirstCreateDone(t *testing.T) {
	lim, err := NewLimiter(1)
	if err != nil {
		t.Fatal(err)
	}
	mb := NewMockBackend()
	mb.SetLatency(OpCreate, 40*time.Millisecond)
	f := newFixture(t, func(c *Config) { c.Backend = mb; c.MinIdle = 3; c.Creates = lim })
	f.mock = mb
	r := f.get()
	if st := f.set.Stats(); st.Creating < 1 {
		t.Errorf("the Get returned with %d creates in flight; want it served by the first of the 3 refills, before the others", st.Creating)
	}
	if r.Outcome() != Cold || !r.Missed() {
		t.Errorf("outcome %v, missed %v; want cold, missed", r.Outcome(), r.Missed())
	}
	f.put(r)
	f.closeAndCheckLeaks()
}

// A Get whose context ends before it is served gives up its create, with
// its context's cause, and leaves nothing behind.
func TestGetGivesUpItsCreate(t *testing.T) {
	f := newFixture(t, nil)
	f.mock.SetLatency(OpCreate, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := f.set.GetOrCreateUnpaused(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with a 50ms deadline on a create of an hour: %v; want deadline exceeded", err)
	}
	if st := f.set.Stats(); st.Creating != 0 || st.Waiting != 0 || st.CreateFailures != 1 {
		t.Errorf("after the Get gave up: %+v; want no create in flight, no waiter, one failed create", st)
	}
	f.closeAndCheckLeaks()
}

// A Get served by a sandbox returned meanwhile leaves its create running
// after its context ends: it goes idle for the next Get.
func TestServedGetKeepsItsCreate(t *testing.T) {
	f := newFixture(t, nil)
	r1 := f.get()
	id1 := r1.Sandbox().ID()
	f.mock.SetLatency(OpCreate, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *Ref, 1)
	go func() {
		r, err := f.set.GetOrCreateUnpaused(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	f.eventually("a waiting Get with its create", func(st Stats) bool { return st.Waiting == 1 && st.Creating == 1 })
	f.put(r1)
	r2 := <-got
	cancel()
	if r2 == nil || r2.Sandbox().ID() != id1 {
		t.Fatalf("the waiting Get got %v; want the returned sandbox", r2)
	}
	f.eventually("its create, done after its context ended, idle", func(st Stats) bool {
		return st.Creating == 0 && st.Idle == 1 && st.Creates == 2 && st.CreateFailures == 0
	})
	f.put(r2)
	f.closeAndCheckLeaks()
}

// Raise grows the target within MaxSize with refills, which are background
// creates (a memory budget does not wait or evict for them).
func TestRaise(t *testing.T) {
	rb := &recordingBackend{MockBackend: NewMockBackend()}
	f := newFixture(t, func(c *Config) { c.Backend = rb; c.MaxSize = 3 })
	f.mock = rb.MockBackend
	if got := f.set.Raise(5); got != 3 {
		t.Errorf("Raise(5) with max size 3: MinIdle %d, want 3", got)
	}
	f.eventually("3 idle", func(st Stats) bool { return st.Idle == 3 && st.Creating == 0 && st.Pausing == 0 })
	rb.mu.Lock()
	for i, bg := range rb.background {
		if !bg {
			t.Errorf("create %d of Raise was not a background one", i)
		}
	}
	rb.mu.Unlock()
	if got := f.set.Raise(1); got != 3 {
		t.Errorf("Raise(1) lowered MinIdle to %d", got)
	}
	f.closeAndCheckLeaks()
}

// slowReadyBackend starts a sandbox, calls Started, then waits for ready
// (a pool's readiness check) until released.
type slowReadyBackend struct {
	*MockBackend
	waiting atomic.Int32
	ready   chan struct{}
}

func (b *slowReadyBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	sb, err := b.MockBackend.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	Started(ctx)
	b.waiting.Add(1)
	<-b.ready
	return sb, nil
}

// A create waiting for its sandbox to be ready holds no place among the
// creates in flight: with one place, a second create starts meanwhile.
func TestStartedFreesThePlace(t *testing.T) {
	lim, err := NewLimiter(1)
	if err != nil {
		t.Fatal(err)
	}
	sb := &slowReadyBackend{MockBackend: NewMockBackend(), ready: make(chan struct{})}
	f := newFixture(t, func(c *Config) { c.Backend = sb; c.Creates = lim; c.MinIdle = 2 })
	f.mock = sb.MockBackend
	eventually(t, "both creates waiting for ready at once", func() bool { return sb.waiting.Load() == 2 })
	if n := lim.InFlight(); n != 0 {
		t.Errorf("%d places held by creates waiting for ready, want 0", n)
	}
	close(sb.ready)
	f.eventually("2 idle", func(st Stats) bool { return st.Idle == 2 && st.Creating == 0 && st.Pausing == 0 })
	f.closeAndCheckLeaks()
}

// refusingBackend refuses background creates (as a full memory budget
// refuses refills) after a while, and makes the others.
type refusingBackend struct {
	*MockBackend
}

func (b refusingBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	if IsBackground(ctx) {
		time.Sleep(50 * time.Millisecond)
		return nil, errors.New("refill refused")
	}
	return b.MockBackend.Create(ctx, spec)
}

// A Get covered by a refill under way is not left waiting when the refill
// fails: a create is started for it.
func TestFailedRefillUncoversGet(t *testing.T) {
	rb := refusingBackend{NewMockBackend()}
	f := newFixture(t, func(c *Config) { c.Backend = rb; c.MinIdle = 1 })
	f.mock = rb.MockBackend
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := f.set.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatalf("Get while the only refill under way fails: %v", err)
	}
	if st := f.set.Stats(); st.CreateFailures < 1 {
		t.Errorf("the refill did not fail first: %+v", st)
	}
	f.put(r)
	f.closeAndCheckLeaks()
}
