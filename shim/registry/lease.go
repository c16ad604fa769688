package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
)

// lease is an acquired sandbox: what the API shows, and its ref.
type lease struct {
	api.Lease
	ref *sandboxset.Ref
}

// take gets a sandbox from the named pool (or the pool of image), timing it
// and marking the pool used.
func (r *Registry) take(ctx context.Context, pool, image string) (*Pool, *sandboxset.Ref, error) {
	p, err := r.poolFor(pool, image)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	ref, err := p.set.GetOrCreateUnpaused(ctx)
	if err != nil {
		return nil, nil, err
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(p.Name, ref.Outcome().String(), time.Since(start))
	}
	p.lastUsed.Store(time.Now().UnixNano())
	return p, ref, nil
}

// Acquire takes a sandbox from a pool (or the pool of an image) under a
// lease that expires unless renewed.
func (r *Registry) Acquire(ctx context.Context, pool, image string) (*api.Lease, error) {
	p, ref, err := r.take(ctx, pool, image)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	l := &lease{Lease: api.Lease{
		ID:        hex.EncodeToString(b),
		Pool:      p.Name,
		SandboxID: ref.Sandbox().ID(),
		Outcome:   ref.Outcome().String(),
		Expires:   time.Now().Add(r.cfg.Lease),
	}, ref: ref}
	l.ContainerID, l.ScratchPath = r.cfg.Provider.Describe(ref.Sandbox())
	r.mu.Lock()
	r.leases[l.ID] = l
	r.mu.Unlock()
	c := l.Lease
	return &c, nil
}

// takeLease removes lease id from the table.
func (r *Registry) takeLease(id string) (*lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := r.leaseLocked(id)
	if err != nil {
		return nil, err
	}
	delete(r.leases, id)
	r.released[id] = time.Now()
	return l, nil
}

// leaseLocked looks lease id up; one released before is a conflict, an
// unknown one not found. r.mu must be held.
func (r *Registry) leaseLocked(id string) (*lease, error) {
	if l, ok := r.leases[id]; ok {
		return l, nil
	}
	if _, was := r.released[id]; was {
		return nil, fmt.Errorf("lease %q: %w: already released", id, errdefs.ErrConflict)
	}
	return nil, fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
}

// Release returns a leased sandbox to its pool (paused). The error says
// if the sandbox could not go back (it died, say) and was destroyed.
func (r *Registry) Release(id string) error {
	l, err := r.takeLease(id)
	if err != nil {
		return err
	}
	return l.ref.Put()
}

// Destroy destroys a leased sandbox.
func (r *Registry) Destroy(id, reason string) error {
	l, err := r.takeLease(id)
	if err != nil {
		return err
	}
	if reason == "" {
		reason = "destroyed by client"
	}
	return l.ref.Destroy(reason)
}

// Renew extends a lease by d (the default lease if 0) from now.
func (r *Registry) Renew(id string, d time.Duration) (*api.Lease, error) {
	if d <= 0 {
		d = r.cfg.Lease
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := r.leaseLocked(id)
	if err != nil {
		return nil, err
	}
	l.Expires = time.Now().Add(d)
	c := l.Lease
	return &c, nil
}

// Leases returns the current leases, the soonest to expire first.
func (r *Registry) Leases() []api.Lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.Lease, 0, len(r.leases))
	for _, l := range r.leases {
		out = append(out, l.Lease)
	}
	slices.SortFunc(out, func(a, b api.Lease) int { return a.Expires.Compare(b.Expires) })
	return out
}

// expire expires leases and removes ad-hoc pools idle past their TTL,
// until Close.
func (r *Registry) expire() {
	defer close(r.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-tick.C:
			r.sweep(now)
		}
	}
}

func (r *Registry) sweep(now time.Time) {
	r.mu.Lock()
	var expired []*lease
	for id, l := range r.leases {
		if now.After(l.Expires) {
			expired = append(expired, l)
			delete(r.leases, id)
			r.released[id] = now
		}
	}
	for id, t := range r.released {
		if now.Sub(t) > time.Hour {
			delete(r.released, id)
		}
	}
	held := map[string]bool{}
	for _, l := range r.leases {
		held[l.Pool] = true
	}
	var idle []*Pool
	ttl := time.Duration(r.adhoc.IdleTTL)
	for name, p := range r.pools {
		if p.AdHoc && ttl > 0 && !held[name] && now.Sub(time.Unix(0, p.lastUsed.Load())) > ttl && p.set.Stats().InUse == 0 {
			idle = append(idle, p)
			delete(r.pools, name)
		}
	}
	r.mu.Unlock()
	for _, l := range expired {
		r.log.Warn("lease expired; destroying sandbox", "lease", l.ID, "pool", l.Pool, "sandbox", l.SandboxID)
		if err := l.ref.Destroy(ReasonLeaseExpired); err != nil {
			r.log.Error("destroy expired sandbox", "sandbox", l.SandboxID, "error", err)
		}
	}
	for _, p := range idle {
		r.log.Info("ad-hoc pool idle past its ttl; removing", "pool", p.Name)
		_ = r.drain(p)
	}
}
