package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
)

// lease is an acquired sandbox: what the API shows, its ref, and the timer
// that destroys it when it expires.
type lease struct {
	api.Lease
	owner string // Owner.Key of who acquired it; empty: no one in particular
	ref   *sandboxset.Ref
	timer *time.Timer
}

// How many released lease IDs the registry remembers, and how long: a
// release or renew of one answers 409 (already released) instead of 404.
// Both bounds hold whatever the traffic.
const (
	maxReleased = 4096
	releasedFor = 10 * time.Minute
)

type ownerKey struct{}

// Owner is who acquires a lease: a local peer of the API socket (its uid)
// or a remote client (its TLS certificate's subject).
type Owner struct {
	// Key tells owners apart ("uid:1000", "tls:CN=worker-1").
	Key string
	// UID is a local peer's; Client a remote one's subject. The lease
	// shows them.
	UID    *uint32
	Client string
	// Admin: local root, who may act on every pool and lease.
	Admin bool
}

// caller returns the key of who calls with ctx, and false for the
// administrator: local root, or an in-process caller that named no one.
func caller(ctx context.Context) (string, bool) {
	o, ok := ctx.Value(ownerKey{}).(Owner)
	if !ok || o.Admin {
		return "", false
	}
	return o.Key, true
}

// WithOwner returns ctx saying that the acquisitions made with it belong
// to o.
func WithOwner(ctx context.Context, o Owner) context.Context {
	return context.WithValue(ctx, ownerKey{}, o)
}

// LeaseOwner returns the Owner.Key of who acquired lease id, empty if no
// one in particular did or it is not held.
func (r *Registry) LeaseOwner(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.leases[id]; ok {
		return l.owner
	}
	return ""
}

// take gets a sandbox from the named pool (or the pool of image), timing it
// and marking the pool used.
func (r *Registry) take(ctx context.Context, pool, image string) (*Pool, *sandboxset.Ref, error) {
	p, err := r.poolFor(ctx, pool, image, "")
	if err != nil {
		return nil, nil, err
	}
	ref, err := r.takeFrom(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	return p, ref, nil
}

// takeFrom takes a sandbox from p, counting the take for its demand.
//
// A sandbox is handed only to who held it last (ctx's caller), or to anyone
// if no one has: one another caller held may hold what they left in it (its
// root file system, /host, /tmp, /dev/shm), so it is recycled where its pool
// recycles, else destroyed, and the take goes on with another.
func (r *Registry) takeFrom(ctx context.Context, p *Pool) (*sandboxset.Ref, error) {
	start := time.Now()
	key, _ := caller(ctx)
	var ref *sandboxset.Ref
	for tries := 0; ; tries++ {
		var err error
		if ref, err = p.set.GetOrCreateUnpaused(ctx); err != nil {
			return nil, err
		}
		id := ref.Sandbox().ID()
		if !p.hold(id, key) {
			break
		}
		if r.recycleFor(ctx, p, ref, key) {
			break
		}
		if err := ref.DestroyDeferred(ReasonOtherOwner); err != nil {
			r.log.Warn("destroy a sandbox another owner held", "pool", p.Name, "sandbox", id, "error", err)
		}
		p.unhold(id)
		if tries == maxOwnerRetries {
			return nil, fmt.Errorf("pool %q: %w: %d sandboxes in a row were other owners'", p.Name, errdefs.ErrUnavailable, tries+1)
		}
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(p.Name, ref.Outcome().String(), time.Since(start))
	}
	p.lastUsed.Store(time.Now().UnixNano())
	// The first take of a pool is cold by construction: no demand yet.
	p.demand.add(time.Now())
	if p.takes.Add(1) > 1 && ref.Missed() {
		r.missed(p)
	}
	return ref, nil
}

// maxOwnerRetries bounds how many sandboxes of other owners a take
// destroys before it gives up: each is gone once destroyed, so only others
// putting theirs back meanwhile could make a take meet more.
const maxOwnerRetries = 16

// recycleFor makes ref's sandbox as made for key, where p recycles, and
// reports whether it did.
func (r *Registry) recycleFor(ctx context.Context, p *Pool, ref *sandboxset.Ref, key string) bool {
	rc, ok := Innermost(ref.Sandbox()).(Recycler)
	if !ok || !p.Config.Recycle {
		return false
	}
	if err := rc.Recycle(ctx); err != nil {
		r.log.Warn("recycle a sandbox another owner held; destroying it", "pool", p.Name, "sandbox", ref.Sandbox().ID(), "error", err)
		return false
	}
	p.recycled.Add(1)
	p.unhold(ref.Sandbox().ID())
	p.hold(ref.Sandbox().ID(), key)
	return true
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
	if o, ok := ctx.Value(ownerKey{}).(Owner); ok {
		l.owner, l.Owner, l.Client = o.Key, o.UID, o.Client
	}
	l.ContainerID, l.ScratchPath = r.cfg.Provider.Describe(ref.Sandbox())
	id := l.ID
	r.mu.Lock()
	r.leases[id] = l
	l.timer = time.AfterFunc(r.cfg.Lease, func() { r.expireLease(id) })
	c := l.Lease
	r.mu.Unlock()
	return &c, nil
}

// expireLease destroys the sandbox of lease id if it is still held and its
// expiry has passed (a renew may have moved it).
func (r *Registry) expireLease(id string) {
	r.mu.Lock()
	l, ok := r.leases[id]
	if !ok {
		r.mu.Unlock()
		return
	}
	if left := time.Until(l.Expires); left > 0 {
		l.timer.Reset(left)
		r.mu.Unlock()
		return
	}
	delete(r.leases, id)
	r.released.add(id)
	r.mu.Unlock()
	r.log.Warn("lease expired; destroying sandbox", "lease", l.ID, "pool", l.Pool, "sandbox", l.SandboxID)
	if err := l.ref.Destroy(ReasonLeaseExpired); err != nil {
		r.log.Error("destroy expired sandbox", "sandbox", l.SandboxID, "error", err)
	}
}

// Lease returns lease id.
func (r *Registry) Lease(id string) (api.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := r.leaseLocked(id)
	if err != nil {
		return api.Lease{}, err
	}
	return l.Lease, nil
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
	l.timer.Stop()
	r.released.add(id)
	return l, nil
}

// leaseLocked looks lease id up; one released before is a conflict, an
// unknown one not found. r.mu must be held.
func (r *Registry) leaseLocked(id string) (*lease, error) {
	if l, ok := r.leases[id]; ok {
		return l, nil
	}
	if r.released.has(id) {
		return nil, fmt.Errorf("lease %q: %w: already released", id, errdefs.ErrConflict)
	}
	return nil, fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
}

// Release returns a leased sandbox to its pool (paused). Once the lease is
// found the release succeeds: a sandbox that cannot go back (it died while
// leased, say) is destroyed instead, the pool refills, and the log says
// why. The caller's part is done either way.
func (r *Registry) Release(id string) error {
	l, err := r.takeLease(id)
	if err != nil {
		return err
	}
	if err := l.ref.Put(); err != nil {
		r.log.Warn("released sandbox could not go back to its pool; destroyed it", "lease", id, "pool", l.Pool, "sandbox", l.SandboxID, "error", err)
	}
	return nil
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
	l.timer.Reset(d)
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

// expire removes ad-hoc pools idle past their TTL, until Close. It looks
// at pools only, which are bounded in number; leases expire by their own
// timers.
func (r *Registry) expire() {
	defer close(r.done)
	t := time.NewTimer(r.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.sweep(now)
			t.Reset(r.sweepEvery())
		}
	}
}

// sweepEvery is how often expire looks at the pools: a quarter of the
// ad-hoc pools' TTL, within [10 ms, 1 s] (targets relax a step per
// adaptStep, far longer), so that an idle daemon wakes once a second.
func (r *Registry) sweepEvery() time.Duration {
	r.mu.Lock()
	ttl := time.Duration(r.adhoc.IdleTTL)
	r.mu.Unlock()
	if ttl <= 0 {
		return time.Second
	}
	return min(max(ttl/4, 10*time.Millisecond), time.Second)
}

func (r *Registry) sweep(now time.Time) {
	r.mu.Lock()
	var idle []*Pool
	all := slices.Collect(maps.Values(r.pools))
	ttl := time.Duration(r.adhoc.IdleTTL)
	for name, p := range r.pools {
		if p.AdHoc && ttl > 0 && now.Sub(time.Unix(0, p.lastUsed.Load())) > ttl && !r.poolLeasedLocked(name) && p.set.Stats().InUse == 0 {
			idle = append(idle, p)
			delete(r.pools, name)
		}
	}
	r.mu.Unlock()
	for _, p := range all {
		p.pruneHeld()
	}
	r.relax(now, all)
	for _, p := range idle {
		r.log.Info("ad-hoc pool idle past its ttl; removing", "pool", p.Name)
		_ = r.drain(p)
	}
}

// recent remembers the last n keys added for at most d each.
type recent struct {
	n    int
	d    time.Duration
	when map[string]time.Time
	ring []string // insertion order; ring[head] is the oldest once full
	head int
}

func newRecent(n int, d time.Duration) *recent {
	return &recent{n: n, d: d, when: make(map[string]time.Time, n)}
}

func (c *recent) add(k string) {
	if len(c.ring) < c.n {
		c.ring = append(c.ring, k)
	} else {
		delete(c.when, c.ring[c.head])
		c.ring[c.head] = k
		c.head = (c.head + 1) % c.n
	}
	c.when[k] = time.Now()
}

func (c *recent) has(k string) bool {
	t, ok := c.when[k]
	return ok && time.Since(t) < c.d
}
