package registry

import (
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
)

// Pools follow demand, as OpenWhisk's reactive prewarming does: a take that
// finds no idle sandbox (a miss: it had to create one or wait for one, as
// runs consume sandboxes faster than the pool refills them) doubles the
// pool's target of idle sandboxes, up to its ceiling and to the takes it
// saw in the last adaptQuiet (the load that asked: five runs in a row ask
// for five, not 32); a pool with no cold miss for adaptQuiet loses one of
// its target every adaptStep, down to its configured min_idle (adapt =
// false in a pool's config keeps it at min_idle). The target is what status
// shows as the pool's min_idle now, next to the configured one.
const (
	// AdaptiveMax bounds the target of a pool that sets no max_size.
	AdaptiveMax = 32
	// adaptPerCPU bounds it by the host's size: paused sandboxes cost
	// memory and a create's CPU, and a host of few CPUs refills few at
	// once.
	adaptPerCPU = 8
	adaptQuiet  = 30 * time.Second
	adaptStep   = 10 * time.Second
)

// demand counts a pool's takes over the last adaptQuiet, by second.
type demand struct {
	mu     sync.Mutex
	counts [int(adaptQuiet / time.Second)]int
	secs   [int(adaptQuiet / time.Second)]int64
}

// add counts a take at now.
func (d *demand) add(now time.Time) {
	s := now.Unix()
	i := int(s % int64(len(d.counts)))
	d.mu.Lock()
	if d.secs[i] != s {
		d.secs[i], d.counts[i] = s, 0
	}
	d.counts[i]++
	d.mu.Unlock()
}

// recent returns the takes of the last adaptQuiet before now.
func (d *demand) recent(now time.Time) int {
	s := now.Unix()
	n := 0
	d.mu.Lock()
	for i, at := range d.secs {
		if s-at < int64(len(d.counts)) {
			n += d.counts[i]
		}
	}
	d.mu.Unlock()
	return n
}

// ceiling is the highest target p may grow to: AdaptiveMax, adaptPerCPU
// per CPU, its max_size, the host's bound, and what the memory budget
// holds; never below its configured min_idle.
func (r *Registry) ceiling(p *Pool) int {
	c := min(AdaptiveMax, adaptPerCPU*runtime.NumCPU(), r.cfg.MaxPoolSize)
	if p.Config.MaxSize > 0 {
		c = min(c, p.Config.MaxSize)
	}
	if _, total := r.budget.Usage(); total > 0 && p.Config.Memory > 0 {
		c = min(c, int(total/int64(p.Config.Memory)))
	}
	return max(c, p.Config.MinIdle)
}

// missed records a cold miss of p and grows its target. The refills it
// calls for are the pool's own (background: they do not evict other pools'
// sandboxes nor wait for room in the memory budget).
func (r *Registry) missed(p *Pool) {
	if !p.Config.Adapts() {
		return
	}
	now := time.Now()
	p.lastMiss.Store(now.UnixNano())
	cur := p.set.MinIdle()
	next := min(r.ceiling(p), max(2*cur, cur+1), max(p.demand.recent(now), p.Config.MinIdle))
	if next <= cur {
		return
	}
	r.log.Debug("pool target grows with demand", "pool", p.Name, "from", cur, "to", next)
	p.set.Raise(next)
}

// relax lowers the target of pools whose demand fell, one step at a time.
func (r *Registry) relax(now time.Time, pools []*Pool) {
	for _, p := range pools {
		cur := p.set.MinIdle()
		if cur <= p.Config.MinIdle {
			continue
		}
		last := max(p.lastMiss.Load(), p.lastRelax.Load())
		if now.Sub(time.Unix(0, p.lastMiss.Load())) < adaptQuiet || now.Sub(time.Unix(0, last)) < adaptStep {
			continue
		}
		p.lastRelax.Store(now.UnixNano())
		r.log.Debug("pool target shrinks as demand fell", "pool", p.Name, "from", cur, "to", cur-1)
		if err := p.set.Shrink(cur - 1); err != nil && !errors.Is(err, sandboxset.ErrClosed) {
			r.log.Warn("shrink pool as demand fell", "pool", p.Name, "error", err)
		}
	}
}
