package registry

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
)

// ErrBudget marks a create refused because the host memory budget is
// spent and nothing idle could be evicted in time. It is of class
// errdefs.ErrUnavailable.
var ErrBudget = errdefs.ErrUnavailable.WithMessage("memory budget exhausted")

// Budget keeps the memory limits of live sandboxes, summed over every
// pool, within a host-wide total. When a create would pass it, idle
// sandboxes are evicted (least recently used across pools first, through
// Evict); if that is not enough the create waits for room until its context
// ends. Background creates (MinIdle refills) never evict and never wait.
type Budget struct {
	total int64
	// Evict destroys one idle sandbox somewhere and reports whether it
	// found one. It is called with no lock held.
	Evict func() bool

	mu    sync.Mutex
	used  int64         // guarded by mu
	freed chan struct{} // guarded by mu: closed and replaced on every release
}

// NewBudget returns a budget of total bytes; total <= 0 means no budget.
func NewBudget(total int64) *Budget {
	return &Budget{total: total, freed: make(chan struct{})}
}

// Usage returns the bytes reserved and the total.
func (b *Budget) Usage() (used, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.total
}

// reserve takes n bytes, evicting or waiting as the Budget doc says.
func (b *Budget) reserve(ctx context.Context, n int64, pool string) error {
	if b.total <= 0 || n <= 0 {
		return nil
	}
	if n > b.total {
		return fmt.Errorf("pool %q: sandbox memory %d bytes: %w: more than the whole budget of %d bytes", pool, n, ErrBudget, b.total)
	}
	for {
		b.mu.Lock()
		if b.used+n <= b.total {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		freed, used := b.freed, b.used
		b.mu.Unlock()
		if sandboxset.IsBackground(ctx) {
			return fmt.Errorf("pool %q: %w (%d of %d bytes in use; a refill does not evict)", pool, ErrBudget, used, b.total)
		}
		if b.Evict != nil && b.Evict() {
			continue
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return fmt.Errorf("pool %q: %w: %d of %d bytes in use, %d more needed, nothing idle to evict: %w", pool, ErrBudget, used, b.total, n, context.Cause(ctx))
		}
	}
}

func (b *Budget) release(n int64) {
	if b.total <= 0 || n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
}

// Wrap returns a Backend that charges each sandbox's memory to the budget
// from before its create until its destroy.
func (b *Budget) Wrap(inner sandboxset.Backend, pool string, memory int64) sandboxset.Backend {
	return b.wrap(inner, pool, memory)
}

func (b *Budget) wrap(inner sandboxset.Backend, pool string, memory int64) *budgetBackend {
	return &budgetBackend{inner: inner, b: b, pool: pool, mem: memory}
}

type budgetBackend struct {
	inner sandboxset.Backend
	b     *Budget
	pool  string
	mem   int64
}

func (bb *budgetBackend) Create(ctx context.Context, spec sandboxset.Spec) (sandboxset.Sandbox, error) {
	if err := bb.b.reserve(ctx, bb.mem, bb.pool); err != nil {
		return nil, err
	}
	sb, err := bb.inner.Create(ctx, spec)
	if err != nil {
		bb.b.release(bb.mem)
		return nil, err
	}
	return &budgetSandbox{Sandbox: sb, bb: bb}, nil
}

// adopt charges an adopted sandbox (found by Reconcile) to the budget,
// without waiting: it already exists.
func (bb *budgetBackend) adopt(sb sandboxset.Sandbox) sandboxset.Sandbox {
	if bb.b.total > 0 {
		bb.b.mu.Lock()
		bb.b.used += bb.mem
		bb.b.mu.Unlock()
	}
	return &budgetSandbox{Sandbox: sb, bb: bb}
}

// budgetSandbox releases its memory once, at its first Destroy.
type budgetSandbox struct {
	sandboxset.Sandbox
	bb   *budgetBackend
	once sync.Once
}

func (s *budgetSandbox) Destroy(ctx context.Context, reason string) error {
	err := s.Sandbox.Destroy(ctx, reason)
	s.once.Do(func() { s.bb.b.release(s.bb.mem) })
	return err
}

// Unwrap returns the backend's own sandbox.
func (s *budgetSandbox) Unwrap() sandboxset.Sandbox { return s.Sandbox }
