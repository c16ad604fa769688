package registry

import (
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
)

// host is the registry as its Janitor sees it.
type host struct{ r *Registry }

var _ Host = host{}

// Knows reports whether a pool, live or draining, or a lease holds sandbox
// id.
func (h host) Knows(id string) bool {
	r := h.r
	r.mu.Lock()
	sets := make([]*sandboxset.Set, 0, len(r.pools)+len(r.draining))
	for _, p := range r.pools {
		sets = append(sets, p.set)
	}
	for p := range r.draining {
		sets = append(sets, p.set)
	}
	leased := r.leasedLocked(id)
	r.mu.Unlock()
	if leased {
		return true
	}
	for _, s := range sets {
		if s.Knows(id) {
			return true
		}
	}
	return false
}

// Leased reports whether a lease holds sandbox id.
func (h host) Leased(id string) bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	return h.r.leasedLocked(id)
}

// leasedLocked reports whether a lease holds sandbox id. r.mu must be held.
func (r *Registry) leasedLocked(id string) bool {
	for _, l := range r.leases {
		if l.SandboxID == id {
			return true
		}
	}
	return false
}

// DropIdle destroys the idle sandboxes lost reports, in every pool.
func (h host) DropIdle(lost func(sb sandboxset.Sandbox, idleSince time.Time) bool) {
	for _, p := range h.r.Pools() {
		if n := p.set.DropIdle(lost); n > 0 {
			h.r.log.Warn("idle sandboxes lost (their containers died); replacing them", "pool", p.Name, "lost", n)
		}
	}
}

// Refill warms every pool to its min_idle.
func (h host) Refill() {
	for _, p := range h.r.Pools() {
		h.r.warm(p)
	}
}

// TopUp warms the pools below their min_idle with nothing being created:
// a refill whose creates failed (the backend swamped or away) is not
// retried by the pool itself.
func (h host) TopUp() {
	for _, p := range h.r.Pools() {
		if st := p.set.Stats(); !st.Closed && st.Idle+st.Creating < st.MinIdle {
			h.r.log.Info("pool below min_idle with nothing being created; warming it again", "pool", p.Name, "idle", st.Idle, "min_idle", st.MinIdle)
			h.r.warm(p)
		}
	}
}
