package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse runs Gets, Puts, Destroys, Warms, Shrinks, kills and a
// Close at once, and checks that no sandbox is ever held by two callers and
// that nothing leaks.
func TestConcurrentUse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		grace   time.Duration
		maxSize int
		procs   int
	}{
		{"grace=0", 0, 12, 0},
		{"grace=1ms", time.Millisecond, 12, 0},
		{"unbounded", 0, 0, 0},
		{"gomaxprocs=1", 100 * time.Microsecond, 12, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.procs > 0 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
			}
			f := newFixture(t, func(c *Config) {
				c.MaxSize = tc.maxSize
				c.MinIdle = 2
				c.PauseGrace = tc.grace
				c.IdleTTL = 5 * time.Millisecond
			})
			f.mock.SetLatency(OpCreate, 200*time.Microsecond)
			f.mock.SetLatency(OpUnpause, 20*time.Microsecond)

			var (
				mu   sync.Mutex
				held = map[string]int{} // sandbox ID -> worker holding it
			)
			errc := make(chan error, 1000)
			report := func(err error) {
				select {
				case errc <- err:
				default:
				}
			}
			const workers, rounds = 32, 150
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range rounds {
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(20)+1)*time.Millisecond)
						r, err := f.set.GetOrCreateUnpaused(ctx)
						cancel()
						if errors.Is(err, ErrClosed) {
							return
						}
						if err != nil {
							if !errors.Is(err, context.DeadlineExceeded) {
								report(fmt.Errorf("worker %d round %d: %w", w, i, err))
							}
							continue
						}
						id := r.Sandbox().ID()
						mu.Lock()
						if other, ok := held[id]; ok {
							report(fmt.Errorf("sandbox %s held by workers %d and %d", id, other, w))
						}
						held[id] = w
						mu.Unlock()
						if ms := f.mock.Lookup(id); ms == nil || ms.Paused() {
							report(fmt.Errorf("worker %d got sandbox %s gone or paused", w, id))
						}
						if rand.IntN(4) == 0 {
							time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
						}
						mu.Lock()
						delete(held, id)
						mu.Unlock()
						if rand.IntN(5) == 0 {
							_ = r.Destroy("worker")
						} else if err := r.Put(); err != nil && !errors.Is(err, ErrSandboxDead) {
							report(fmt.Errorf("worker %d: put %s: %w", w, id, err))
						}
					}
				})
			}
			// Chaos: kill sandboxes (paused or not), warm and shrink.
			stop := make(chan struct{})
			var chaos sync.WaitGroup
			chaos.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					if ids := f.mock.Alive(); len(ids) > 0 && rand.IntN(3) == 0 {
						_ = f.mock.Kill(ids[rand.IntN(len(ids))])
					}
					switch rand.IntN(4) {
					case 0:
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
						if err := f.set.Warm(ctx, rand.IntN(5)); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.DeadlineExceeded) {
							report(fmt.Errorf("warm: %w", err))
						}
						cancel()
					case 1:
						_ = f.set.Shrink(rand.IntN(3))
					}
				}
			})
			// Close while the workers are still busy, once they have made
			// enough sandboxes (however loaded the machine is).
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if created, _, _ := f.mock.Counts(); created >= 30 {
					break
				}
			}
			if err := f.set.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
			wg.Wait()
			close(stop)
			chaos.Wait()
			close(errc)
			n := 0
			for err := range errc {
				if n++; n <= 10 {
					t.Error(err)
				}
			}
			st := f.set.Stats()
			if st.Idle+st.InUse+st.Creating+st.Pausing+st.Waiting != 0 {
				t.Errorf("after Close and all returns: %+v", st)
			}
			created, destroyed, alive := f.mock.Counts()
			t.Logf("created %d, destroyed %d (%v), hot %d warm %d cold %d, unpause failures %d", created, destroyed, st.Destroys, st.HotHits, st.WarmHits, st.ColdMisses, st.UnpauseFailures)
			if created < 20 {
				t.Errorf("only %d sandboxes created: the load did not exercise the pool", created)
			}
			if alive != 0 {
				t.Errorf("%d sandboxes alive after Close", alive)
			}
			f.closeAndCheckLeaks()
		})
	}
}
