package sandboxset

import (
	"context"
	"fmt"
	"sync"
)

// A runtime makes containers no faster for being asked for many at once:
// in a burst of fresh runs on two cores, dockerd made about 6 sandboxes a
// second with 2, 4 or 8 creates in flight as with no bound (some 40, a
// grown pool's refills and the waiting Gets'), but with 40 each took seven
// seconds. A Limiter, shared by the Sets of one runtime, keeps a few creates
// in flight, so they finish one after another, each going to the Get that
// has waited longest (Gets that find no idle sandbox queue in arrival order
// for whichever create ends first). A create holds its place from its
// scratch directory to the runtime's start of the sandbox (see Started),
// not while it waits for the sandbox to be ready.

// Limiter bounds the creates in flight. Create one with NewLimiter.
type Limiter struct {
	slots chan struct{}
}

// NewLimiter returns a Limiter of n creates at once (n ≥ 1).
func NewLimiter(n int) (*Limiter, error) {
	if n < 1 {
		return nil, fmt.Errorf("creates in flight: %d is less than 1", n)
	}
	return &Limiter{slots: make(chan struct{}, n)}, nil
}

// Cap returns how many creates may be in flight.
func (l *Limiter) Cap() int { return cap(l.slots) }

// InFlight returns how many creates hold a place now.
func (l *Limiter) InFlight() int { return len(l.slots) }

// acquire waits, in arrival order, for a place or for ctx to end. A nil
// Limiter has room for all.
func (l *Limiter) acquire(ctx context.Context) error {
	if l == nil {
		return nil
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a place among %d creates in flight: %w", cap(l.slots), ctx.Err())
	}
}

// release gives a place back.
func (l *Limiter) release() {
	if l != nil {
		<-l.slots
	}
}

// place is a create's place among those in flight, given back once.
type place struct {
	once sync.Once
	l    *Limiter
}

func (p *place) release() { p.once.Do(p.l.release) }

type placeKey struct{}

// Started tells the Set whose create ctx belongs to that the runtime has
// made and started the sandbox: what the create still waits for (the
// sandbox's readiness, its agent) is the sandbox's own start, which holds
// no place among the creates in flight. A Backend calls it where it has one
// to give; it does nothing for a ctx of no such create.
func Started(ctx context.Context) {
	if p, ok := ctx.Value(placeKey{}).(*place); ok {
		p.release()
	}
}
