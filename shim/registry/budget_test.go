package registry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
)

func TestBudgetEvictsLRUThenWaits(t *testing.T) {
	mock := sandboxset.NewMockBackend()
	b := NewBudget(300)
	var sets []*sandboxset.Set
	b.Evict = func() bool {
		// The least recently used idle sandbox across pools.
		var oldest *sandboxset.Set
		var when time.Time
		for _, s := range sets {
			if t, ok := s.OldestIdle(); ok && (oldest == nil || t.Before(when)) {
				oldest, when = s, t
			}
		}
		return oldest != nil && oldest.EvictIdle()
	}
	mk := func(name string) *sandboxset.Set {
		s, err := sandboxset.New(sandboxset.Config{Name: name, Backend: b.Wrap(mock, name, 100), Scratch: sandboxset.DirScratch{Root: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		sets = append(sets, s)
		return s
	}
	a, c := mk("a"), mk("c")
	ctx := context.Background()
	get := func(s *sandboxset.Set) *sandboxset.Ref {
		t.Helper()
		r, err := s.GetOrCreateUnpaused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a1, a2 := get(a), get(a)
	a1.Put() // idle, older
	time.Sleep(2 * time.Millisecond)
	a2.Put() // idle, newer
	c1 := get(c)
	if used, _ := b.Usage(); used != 300 {
		t.Fatalf("used %d, want 300", used)
	}
	// A fourth sandbox evicts the least recently used idle one (a1).
	c2 := get(c)
	if st := a.Stats(); st.Idle != 1 || st.Destroys[sandboxset.ReasonEvicted] != 1 {
		t.Errorf("pool a after eviction: %+v", st)
	}
	// With nothing idle left to evict, a create waits, then fails.
	a3 := get(a) // takes a2, warm: no new memory
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := c.GetOrCreateUnpaused(short)
	if !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "300 of 300 bytes in use") {
		t.Errorf("create past the budget: %v", err)
	}
	// A release lets a waiting create through.
	done := make(chan error)
	go func() {
		r, err := c.GetOrCreateUnpaused(ctx)
		if err == nil {
			r.Put()
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := a3.Destroy("test"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("waiting create: %v", err)
	}
	c1.Put()
	c2.Put()
	for _, s := range sets {
		s.Close(ctx)
	}
	if used, _ := b.Usage(); used != 0 {
		t.Errorf("after closing everything %d bytes still charged", used)
	}
}

func TestBudgetTooBigAndBackground(t *testing.T) {
	b := NewBudget(100)
	if err := b.reserve(context.Background(), 200, "big"); !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "more than the whole budget") {
		t.Errorf("reserve past the total: %v", err)
	}
	if err := b.reserve(context.Background(), 100, "p"); err != nil {
		t.Fatal(err)
	}
	evicted := false
	b.Evict = func() bool { evicted = true; return false }
	if err := b.reserve(sandboxset.WithBackground(context.Background()), 10, "p"); !errors.Is(err, ErrBudget) || evicted {
		t.Errorf("background reserve: %v (evicted %v); want a refusal without eviction", err, evicted)
	}
}
