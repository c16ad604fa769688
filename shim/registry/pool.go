package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/imageref"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Pool is one pool of the registry.
type Pool struct {
	Name   string
	Config spec.PoolConfig
	// RunsAs is who its processes run as: its config's user, else the
	// registry's SandboxUser; "" for the image's USER.
	RunsAs string
	AdHoc  bool
	// API: made through the API (PutPool), stored, kept across restarts
	// and config reloads; else the config file's (or ad hoc).
	API bool

	set      *sandboxset.Set
	backend  sandboxset.Backend                          // the provider's, unwrapped
	wrap     func(sandboxset.Sandbox) sandboxset.Sandbox // budget charge of adopted sandboxes
	lastUsed atomic.Int64                                // unix nanoseconds
	// Demand (adapt.go).
	lastMiss  atomic.Int64 // unix nanoseconds of the last cold miss
	demand    demand       // takes lately, which bound the target
	lastRelax atomic.Int64 // unix nanoseconds the target last shrank
	takes     atomic.Int64 // sandboxes taken from it
	recycled  atomic.Int64 // sandboxes recycled after runs (Config.Recycle)

	heldMu sync.Mutex
	heldBy map[string]string // guarded by heldMu: sandbox ID -> key of who took it last ("" the administrator)
}

// hold records that key takes sandbox id, and reports whether someone
// else held it before (it may hold what they left).
func (p *Pool) hold(id, key string) (other bool) {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	prev, ok := p.heldBy[id]
	if ok && prev != key {
		return true
	}
	if p.heldBy == nil {
		p.heldBy = map[string]string{}
	}
	p.heldBy[id] = key
	return false
}

// unhold forgets who held sandbox id: it is as made (recycled), or gone.
func (p *Pool) unhold(id string) {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	delete(p.heldBy, id)
}

// pruneHeld forgets the holders of sandboxes the pool no longer has.
func (p *Pool) pruneHeld() {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	for id := range p.heldBy {
		if !p.set.Knows(id) {
			delete(p.heldBy, id)
		}
	}
}

// Stats returns the pool's counters.
func (p *Pool) Stats() sandboxset.Stats { return p.set.Stats() }

// Status returns the pool's state as the API shows it.
func (p *Pool) Status() api.PoolStatus {
	src := "config"
	switch {
	case p.AdHoc:
		src = "adhoc"
	case p.API:
		src = "api"
	}
	return api.PoolStatus{Name: p.Name, Image: p.Config.Image, AdHoc: p.AdHoc, Source: src, Config: p.Config, Stats: apiStats(p.set.Stats()), Recycled: p.recycled.Load()}
}

// apiStats is st as the API shows it.
func apiStats(st sandboxset.Stats) api.PoolStats {
	out := api.PoolStats{Pool: st.Pool, Idle: st.Idle, InUse: st.InUse, Creating: st.Creating, Pausing: st.Pausing,
		Deferred: st.Deferred, Waiting: st.Waiting, MinIdle: st.MinIdle, MaxSize: st.MaxSize, Closed: st.Closed,
		HotHits: st.HotHits, WarmHits: st.WarmHits, ColdMisses: st.ColdMisses, Creates: st.Creates,
		CreateFailures: st.CreateFailures, PauseFailures: st.PauseFailures, UnpauseFailures: st.UnpauseFailures,
		Destroys: st.Destroys}
	if st.Latency != nil {
		out.Latency = make(map[string]api.LatencySummary, len(st.Latency))
		for k, l := range st.Latency {
			out.Latency[k] = api.LatencySummary(l)
		}
	}
	return out
}

// newPool makes a pool with MinIdle 0; the caller warms it.
func (r *Registry) newPool(name string, pc spec.PoolConfig, adhoc bool) (*Pool, error) {
	if err := spec.ValidatePoolName(name); err != nil {
		return nil, err
	}
	if err := imageref.Pool(pc); err != nil {
		return nil, fmt.Errorf("pool %q: %w", name, err)
	}
	if err := r.allowed(name, pc); err != nil {
		return nil, err
	}
	maxSize := pc.MaxSize
	if maxSize == 0 {
		maxSize = r.cfg.MaxPoolSize
	}
	eff := pc
	if eff.User == "" {
		eff.User = r.cfg.SandboxUser
	}
	backend, scratch, err := r.cfg.Provider.Pool(name, eff)
	if err != nil {
		return nil, err
	}
	p := &Pool{Name: name, Config: pc, RunsAs: eff.User, AdHoc: adhoc, backend: backend}
	bb := r.budget.wrap(backend, name, int64(pc.Memory))
	p.wrap = bb.adopt
	set, err := sandboxset.New(sandboxset.Config{
		Name:       name,
		Backend:    bb,
		Scratch:    scratch,
		MaxSize:    maxSize,
		IdleTTL:    time.Duration(pc.IdleTTL),
		PauseGrace: time.Duration(pc.PauseGrace),
		Logger:     r.log,
		Reaper:     r.reaper,
		Creates:    r.creates,
	})
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", name, err)
	}
	p.set = set
	p.lastUsed.Store(time.Now().UnixNano())
	return p, nil
}

// allowed checks a pool against the host's bounds and the daemon's policy:
// its counts within MaxPoolSize and the memory budget, pulling and networks
// only where the daemon's config allows them. Errors are ErrInvalidSpec.
func (r *Registry) allowed(name string, pc spec.PoolConfig) error {
	for _, c := range []struct {
		what string
		n    int
	}{{"min_idle", pc.MinIdle}, {"max_size", pc.MaxSize}} {
		if err := r.checkCount(name, c.what, c.n, int64(pc.Memory)); err != nil {
			return err
		}
	}
	if int64(pc.ScratchSize) > r.cfg.MaxScratchSize {
		return fmt.Errorf("pool %q: %w: scratch_size %d bytes: more than this host's bound of %d (max_scratch_size in [daemon])", name, spec.ErrInvalidSpec, int64(pc.ScratchSize), r.cfg.MaxScratchSize)
	}
	if pc.Pids > r.cfg.MaxPids {
		return fmt.Errorf("pool %q: %w: pids %d: more than this host's bound of %d (max_pids in [daemon])", name, spec.ErrInvalidSpec, pc.Pids, r.cfg.MaxPids)
	}
	if pc.Pull == spec.PullMissing && !r.cfg.AllowPull {
		return fmt.Errorf("pool %q: %w: pull %q: this daemon does not pull images (allow_pull in [daemon])", name, spec.ErrInvalidSpec, pc.Pull)
	}
	if n := pc.Spec().NetworkMode(); n != "none" && !r.cfg.AllowNetworks {
		return fmt.Errorf("pool %q: %w: network %q: this daemon keeps sandboxes off networks (allow_networks in [daemon])", name, spec.ErrInvalidSpec, n)
	}
	return nil
}

// checkCount bounds a count of sandboxes of memory bytes each: by
// MaxPoolSize, and by what the memory budget holds.
func (r *Registry) checkCount(pool, what string, n int, memory int64) error {
	if n > r.cfg.MaxPoolSize {
		return fmt.Errorf("pool %q: %w: %s %d: more than this host's bound of %d sandboxes per pool", pool, spec.ErrInvalidSpec, what, n, r.cfg.MaxPoolSize)
	}
	if _, total := r.budget.Usage(); total > 0 && memory > 0 && int64(n) > total/memory {
		return fmt.Errorf("pool %q: %w: %s %d: sandboxes of %d bytes each, more than the memory budget of %d bytes holds", pool, spec.ErrInvalidSpec, what, n, memory, total)
	}
	return nil
}

// warm fills p to its target (MinIdle, or what demand raised it to) in
// the background.
func (r *Registry) warm(p *Pool) {
	// To its target now: min_idle, or higher where demand raised it.
	n := max(p.Config.MinIdle, p.set.MinIdle())
	if n == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := p.set.Warm(ctx, n); err != nil && !errors.Is(err, sandboxset.ErrClosed) {
			r.log.Warn("warm pool", "pool", p.Name, "error", err)
		}
	}()
}

// PutPool creates pool name or, if its config changed, replaces it, for a
// client of the API: the pool is stored (see PoolStore) and kept across
// restarts and config reloads. It reports whether anything changed.
//
// The pool is its caller's (ctx's Owner): a client other than root may
// replace only a pool made through the API that it owns, may not name
// another owner, and may not share a pool (ErrPermissionDenied).
func (r *Registry) PutPool(ctx context.Context, name string, pc spec.PoolConfig) (bool, error) {
	if key, limited := caller(ctx); limited {
		if pc.Owner != "" && pc.Owner != key {
			return false, fmt.Errorf("pool %q: %w: owner %.80q: a client may make pools of its own only", name, errdefs.ErrPermissionDenied, pc.Owner)
		}
		if pc.Shared {
			return false, fmt.Errorf("pool %q: %w: shared: only root on this host shares a pool", name, errdefs.ErrPermissionDenied)
		}
		pc.Owner = key
		if old, err := r.Pool(name); err == nil && !mayChange(old, key, true) {
			return false, fmt.Errorf("pool %q: %w: the name is taken by a pool of %s", name, errdefs.ErrPermissionDenied, whose(old))
		}
	}
	return r.putPool(name, pc, true)
}

// whose names a pool's owner for an error another client sees.
func whose(p *Pool) string {
	if p.Config.Owner == "" {
		return "the administrator"
	}
	return "another owner"
}

// mayUse reports whether a caller (key; limited false for the
// administrator) may take sandboxes from p: its own pools, and the
// administrator's, by name; by image, only its own and the shared ones.
func mayUse(p *Pool, key string, limited, byImage bool) bool {
	switch {
	case !limited || p.Config.Owner == key:
		return true
	case p.Config.Owner != "":
		return false
	default:
		return !p.AdHoc && (!byImage || p.Config.Shared)
	}
}

// mayChange reports whether a caller may change, warm, shrink or remove
// p: the administrator any; another caller only the API-made pools it owns.
func mayChange(p *Pool, key string, limited bool) bool {
	return !limited || p.API && p.Config.Owner == key
}

// PoolOf returns pool name as its caller (ctx's Owner) may see it: one
// it may not use is not found, as if it did not exist.
func (r *Registry) PoolOf(ctx context.Context, name string) (*Pool, error) {
	p, err := r.Pool(name)
	if err != nil {
		return nil, err
	}
	if key, limited := caller(ctx); !mayUse(p, key, limited, false) {
		return nil, fmt.Errorf("pool %q: %w", name, errdefs.ErrNotFound)
	}
	return p, nil
}

// PoolsOf returns the pools ctx's caller may see, sorted by name.
func (r *Registry) PoolsOf(ctx context.Context) []*Pool {
	key, limited := caller(ctx)
	var out []*Pool
	for _, p := range r.Pools() {
		if mayUse(p, key, limited, false) {
			out = append(out, p)
		}
	}
	return out
}

// changeable returns pool name if ctx's caller may change it: one it may
// not see is not found, one it may see but not change is refused.
func (r *Registry) changeable(ctx context.Context, name string) (*Pool, error) {
	p, err := r.PoolOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if key, limited := caller(ctx); !mayChange(p, key, limited) {
		return nil, fmt.Errorf("pool %q: %w: it is a pool of %s", name, errdefs.ErrPermissionDenied, whose(p))
	}
	return p, nil
}

// putPool is PutPool for the API (api) or the config file.
func (r *Registry) putPool(name string, pc spec.PoolConfig, fromAPI bool) (bool, error) {
	r.mu.Lock()
	old, ok := r.pools[name]
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return false, fmt.Errorf("pool %q: %w", name, sandboxset.ErrClosed)
	}
	if strings.HasPrefix(name, adhocPrefix) {
		return false, fmt.Errorf("pool %q: %w: names starting %q belong to the pools ol-shim makes for images on demand", name, spec.ErrInvalidSpec, adhocPrefix)
	}
	if ok && !old.AdHoc && old.API == fromAPI && reflect.DeepEqual(old.Config, pc) {
		return false, nil
	}
	p, err := r.newPool(name, pc, false)
	if err != nil {
		return false, err
	}
	p.API = fromAPI
	if fromAPI {
		if err := r.remember(name, pc); err != nil {
			p.set.Close(context.Background())
			return false, err
		}
	} else if ok && old.API {
		r.log.Info("the config file now has a pool made through the API; the file's replaces it", "pool", name)
		r.forget(name)
	}
	r.mu.Lock()
	cur := r.pools[name]
	r.pools[name] = p
	r.mu.Unlock()
	if cur != nil {
		r.log.Info("pool changed; draining the old one", "pool", name)
		r.drainInBackground(cur)
	}
	r.warm(p)
	return true, nil
}

// DeletePool removes a pool, if ctx's caller may change it; its idle
// sandboxes go at once, leased ones when released.
func (r *Registry) DeletePool(ctx context.Context, name string) error {
	want, err := r.changeable(ctx, name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	p, ok := r.pools[name]
	if ok && p == want {
		delete(r.pools, name)
	}
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("pool %q: %w", name, errdefs.ErrNotFound)
	}
	if p != want {
		return fmt.Errorf("pool %q: %w: replaced meanwhile", name, errdefs.ErrConflict)
	}
	if p.API {
		r.forget(name)
	}
	return r.drain(p)
}

// drain closes a pool taken out of the registry: its idle sandboxes go now,
// leased ones when released. Until then the janitor still counts its
// sandboxes as known.
func (r *Registry) drain(p *Pool) error {
	r.mu.Lock()
	r.draining[p] = true
	r.mu.Unlock()
	err := p.set.Close(context.Background())
	r.mu.Lock()
	delete(r.draining, p)
	r.mu.Unlock()
	return err
}

// drainInBackground drains p off the caller's path; Close waits for it,
// or a stop right after a reload would cut its destroys off half-way.
func (r *Registry) drainInBackground(p *Pool) {
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		r.drain(p)
	}()
}

// Pool returns pool name.
func (r *Registry) Pool(name string) (*Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pools[name]
	if !ok {
		return nil, fmt.Errorf("pool %q: %w", name, errdefs.ErrNotFound)
	}
	return p, nil
}

// Pools returns every pool, sorted by name.
func (r *Registry) Pools() []*Pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Collect(maps.Values(r.pools))
	slices.SortFunc(out, func(a, b *Pool) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Warm sets a pool's MinIdle and creates sandboxes until it holds that many,
// if ctx's caller may change the pool.
func (r *Registry) Warm(ctx context.Context, name string, n int) error {
	p, err := r.changeable(ctx, name)
	if err != nil {
		return err
	}
	if err := r.checkCount(name, "warm", n, int64(p.Config.Memory)); err != nil {
		return err
	}
	return p.set.Warm(ctx, n)
}

// Shrink destroys a pool's idle sandboxes down to n, if ctx's caller may
// change the pool.
func (r *Registry) Shrink(ctx context.Context, name string, n int) error {
	p, err := r.changeable(ctx, name)
	if err != nil {
		return err
	}
	return p.set.Shrink(n)
}

// evictOne destroys the least recently used idle sandbox across pools.
func (r *Registry) evictOne() bool {
	var victim *Pool
	var when time.Time
	for _, p := range r.Pools() {
		if t, ok := p.set.OldestIdle(); ok && (victim == nil || t.Before(when)) {
			victim, when = p, t
		}
	}
	return victim != nil && victim.set.EvictIdle()
}
