// Package registry is the daemon's pools: one sandboxset.Set per pool
// (configured, or made on demand for an image), the leases of acquired
// sandboxes, runs, and the host memory budget shared by every pool.
//
// It knows no concrete backend: a Provider makes each pool's backend and
// scratch (the Docker backend in shim/docker, or shim/mock), and an
// optional Janitor reconciles at start and keeps the backend's world in
// line with the pools (sandboxes that die, orphans).
//
// # Locking
//
// Registry.mu guards the maps of pools and leases and nothing else; it is
// never held across a call into a pool, the provider or the janitor
// (creating a container makes dockerd call ol-shim's own volume plugin).
// Helpers named …Locked expect mu held; every other method takes it
// itself.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Destroy reasons the registry gives.
const (
	ReasonLeaseExpired = "lease expired"
	ReasonRunDone      = "run done"
	// ReasonNoRunner: nothing trustworthy would run commands in the
	// sandbox (its agent's socket answered by another process, say).
	ReasonNoRunner = "no trusted runner"
	ReasonPoolGone = "pool removed"
	// ReasonRecycleFailed: a recycle pool's sandbox could not be made as
	// it was made (see Recycler); it is destroyed instead.
	ReasonRecycleFailed = "recycle failed"
	// ReasonOtherOwner: a sandbox another caller held last was to go to
	// a new one.
	ReasonOtherOwner = "another owner's"
)

// DefaultLease is how long an acquired sandbox lives unless renewed, if
// Config.Lease is 0.
const DefaultLease = 10 * time.Minute

// Config configures a Registry.
type Config struct {
	// Provider makes the pools' backends and scratch. Required.
	Provider Provider
	// Janitor, if set, reconciles at Start and watches the backend.
	Janitor Janitor
	// Store, if set, keeps the pools made through the API across
	// restarts (see PoolStore).
	Store PoolStore
	// Root is the state root.
	Root string
	// Budget is the host memory budget in bytes; 0: none.
	Budget int64
	// Lease is how long an acquired sandbox lives unless renewed.
	Lease time.Duration
	// AdHoc sizes pools made on demand.
	AdHoc config.AdHocConfig
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Observe, if set, is told the latency of every acquisition.
	Observe func(pool, outcome string, d time.Duration)
	// MaxPoolSize bounds every count a pool can be asked for (min_idle,
	// max_size, warm) and is the max_size of pools that set none;
	// DefaultMaxPoolSize if 0.
	MaxPoolSize int
	// MaxCreates bounds the sandbox creates in flight at once, over all
	// pools (see sandboxset.Limiter); DefaultMaxCreates if 0.
	MaxCreates int
	// AllowPull lets pools pull missing images (pull = "missing").
	AllowPull bool
	// AllowNetworks lets pools join a network other than none.
	AllowNetworks bool
	// MaxScratchSize bounds every pool's scratch_size, and MaxPids its
	// pids; DefaultMaxScratchSize and DefaultMaxPids if 0.
	MaxScratchSize int64
	MaxPids        int64
	// SandboxUser ("UID:GID") is who the processes of a pool that names no
	// user run as; "" leaves them to the image's USER.
	SandboxUser string
}

// DefaultMaxPoolSize is Config.MaxPoolSize if unset.
const DefaultMaxPoolSize = 256

// Bounds of every pool where Config sets none.
const (
	DefaultMaxScratchSize = 16 << 30
	DefaultMaxPids        = 32768
)

// DefaultMaxCreates is Config.MaxCreates if unset.
const DefaultMaxCreates = 4

// DefaultMaxAdHocPools bounds the ad-hoc pools if [adhoc] max_pools is
// unset.
const DefaultMaxAdHocPools = 32

// Registry is the daemon's pools, leases and memory budget. It is safe for
// concurrent use.
type Registry struct {
	spill atomic.Int64 // bytes of held run output on disk (see RunOutput)

	cfg    Config
	log    *slog.Logger
	budget *Budget

	mu       sync.Mutex
	pools    map[string]*Pool       // guarded by mu
	leases   map[string]*lease      // guarded by mu
	released *recent                // guarded by mu: lease IDs released lately, for 409s
	adhoc    config.AdHocConfig     // guarded by mu
	closed   bool                   // guarded by mu
	draining map[*Pool]bool         // guarded by mu: pools taken out, still closing
	running  map[string]*RunSession // guarded by mu: sandbox ID -> the run that holds it (for exec)
	watching bool                   // guarded by mu: the janitor's Watch runs

	reaper  *sandboxset.Reaper  // holds destroys after runs back while creates are waited for
	creates *sandboxset.Limiter // the creates in flight, over all pools
	bg      sync.WaitGroup      // destroys after runs, drains, the janitor's Watch; Close waits for them
	stop    chan struct{}
	stopCtx context.Context // ends at Close
	cancel  context.CancelFunc
	done    chan struct{}
}

// New returns an empty registry and starts its lease and ad-hoc pool
// expiry.
func New(cfg Config) (*Registry, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.MaxPoolSize <= 0 {
		cfg.MaxPoolSize = DefaultMaxPoolSize
	}
	if cfg.MaxCreates <= 0 {
		cfg.MaxCreates = DefaultMaxCreates
	}
	if cfg.MaxScratchSize <= 0 {
		cfg.MaxScratchSize = DefaultMaxScratchSize
	}
	if cfg.MaxPids <= 0 {
		cfg.MaxPids = DefaultMaxPids
	}
	if cfg.Provider == nil {
		return nil, errors.New("registry: no provider")
	}
	creates, err := sandboxset.NewLimiter(cfg.MaxCreates)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{
		cfg:      cfg,
		log:      cfg.Logger,
		budget:   NewBudget(cfg.Budget),
		pools:    map[string]*Pool{},
		leases:   map[string]*lease{},
		released: newRecent(maxReleased, releasedFor),
		adhoc:    cfg.AdHoc,
		draining: map[*Pool]bool{},
		creates:  creates,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.stopCtx, r.cancel = context.WithCancel(context.Background())
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r.budget.Evict = r.evictOne
	r.reaper = sandboxset.NewReaper(r.creating, 0, 0)
	go r.expire()
	return r, nil
}

// Limits returns the bounds the registry holds pools to.
func (r *Registry) Limits() (maxPoolSize, maxAdHocPools int, allowPull, allowNetworks bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	maxAdHocPools = r.adhoc.MaxPools
	if maxAdHocPools <= 0 {
		maxAdHocPools = DefaultMaxAdHocPools
	}
	return r.cfg.MaxPoolSize, maxAdHocPools, r.cfg.AllowPull, r.cfg.AllowNetworks
}

// Root returns the state root.
func (r *Registry) Root() string { return r.cfg.Root }

// Budget returns the memory budget.
func (r *Registry) Budget() *Budget { return r.budget }

// Start makes the configured pools, lets the janitor reconcile the backend
// with them (adopting what fits, removing the rest), then warms them and
// starts the janitor's watch.
func (r *Registry) Start(ctx context.Context, pools map[string]spec.PoolConfig) (ReconcileReport, error) {
	made := map[string]*Pool{}
	for _, name := range slices.Sorted(maps.Keys(pools)) {
		p, err := r.newPool(name, pools[name], false)
		if err != nil {
			for _, q := range made {
				q.set.Close(ctx)
			}
			return ReconcileReport{}, err
		}
		made[name] = p
	}
	// The pools made through the API before the restart, made again
	// before the reconcile, so that their paused sandboxes are adopted.
	stored := r.storedPools(pools)
	for _, name := range slices.Sorted(maps.Keys(stored)) {
		p, err := r.newPool(name, stored[name], false)
		if err != nil {
			// Not fatal: the rest of the host still starts. The record
			// stays, for a policy or image that comes back.
			r.log.Error("a pool made through the API cannot be made again", "pool", name, "error", err)
			continue
		}
		p.API = true
		made[name] = p
	}
	var rep ReconcileReport
	if j := r.cfg.Janitor; j != nil {
		var adopted adoptedIDs
		ap := map[string]AdoptPool{}
		for name, p := range made {
			ap[name] = AdoptPool{Set: p.set, Backend: p.backend, Config: p.Config, Wrap: adopted.wrap(p)}
		}
		var err error
		if rep, err = j.Reconcile(ctx, ap); err != nil {
			r.log.Error("reconcile", "error", err)
		}
		r.log.Info("reconciled", "adopted", rep.Adopted, "removed", rep.Removed)
		r.restoreHeld(&adopted)
	}
	r.mu.Lock()
	maps.Copy(r.pools, made)
	watch := r.cfg.Janitor != nil && !r.watching && !r.closed
	r.watching = r.watching || watch
	if watch {
		r.bg.Add(1)
	}
	r.mu.Unlock()
	if watch {
		go func() {
			defer r.bg.Done()
			r.cfg.Janitor.Watch(r.stopCtx, host{r})
		}()
	}
	for _, p := range made {
		r.warm(p)
	}
	return rep, nil
}

// Apply makes the registry's configured pools those given (SIGHUP):
// new pools are made, changed ones replaced (the old one drains: idle
// sandboxes go at once, leased ones when released), removed ones drained.
// Ad-hoc pools are left alone.
func (r *Registry) Apply(pools map[string]spec.PoolConfig, adhoc config.AdHocConfig) error {
	var errs []error
	r.mu.Lock()
	r.adhoc = adhoc
	var gone []*Pool
	for name, p := range r.pools {
		if _, ok := pools[name]; !ok && !p.AdHoc && !p.API {
			gone = append(gone, p)
			delete(r.pools, name)
		}
	}
	r.mu.Unlock()
	for _, p := range gone {
		r.log.Info("pool removed from config; draining", "pool", p.Name)
		r.drainInBackground(p)
	}
	for _, name := range slices.Sorted(maps.Keys(pools)) {
		if _, err := r.putPool(name, pools[name], false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops the registry. Leased sandboxes are destroyed. With destroy,
// every pool is closed and its sandboxes destroyed, and the janitor removes
// whatever is left; without, idle sandboxes are left paused for the next
// start to adopt.
func (r *Registry) Close(ctx context.Context, destroy bool) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	leases := slices.Collect(maps.Values(r.leases))
	clear(r.leases)
	for _, l := range leases {
		l.timer.Stop()
	}
	pools := slices.Collect(maps.Values(r.pools))
	r.mu.Unlock()
	close(r.stop)
	r.cancel()
	<-r.done
	r.bg.Wait()
	r.reaper.Stop()
	var errs []error
	for _, l := range leases {
		errs = append(errs, l.ref.Destroy("daemon stopped"))
	}
	if !destroy {
		// A sandbox being made now (a refill) would be finished by dockerd
		// after this process is gone, and be nobody's: wait for it, so
		// that it is paused with the others and adopted at the next start.
		r.waitCreates(ctx, pools)
		if err := r.saveHeld(pools); err != nil {
			r.log.Warn("record who held each sandbox; the next start recycles or destroys each at its first take", "error", err)
		}
	}
	if destroy {
		for _, p := range pools {
			errs = append(errs, p.set.Close(ctx))
		}
		if j := r.cfg.Janitor; j != nil {
			errs = append(errs, j.RemoveAll(ctx))
		}
	}
	return errors.Join(errs...)
}

// creating reports whether a pool has creates in flight or Gets waiting:
// destroys after runs are held back meanwhile (sandboxset.Reaper).
func (r *Registry) creating() bool {
	r.mu.Lock()
	pools := slices.Collect(maps.Values(r.pools))
	r.mu.Unlock()
	for _, p := range pools {
		if p.set.Pressure() > 0 {
			return true
		}
	}
	return false
}

// waitCreates waits until no pool has a sandbox being created or paused
// (a refill pauses what it made), or ctx ends.
func (r *Registry) waitCreates(ctx context.Context, pools []*Pool) {
	for {
		creating := 0
		for _, p := range pools {
			st := p.set.Stats()
			creating += st.Creating + st.Pausing
		}
		if creating == 0 {
			return
		}
		select {
		case <-ctx.Done():
			r.log.Warn("stopping with sandboxes still being created; the next start removes them", "creating", creating)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Status returns the pools, leases and memory budget.
func (r *Registry) Status() api.Status {
	st := api.Status{Pools: []api.PoolStatus{}}
	for _, p := range r.Pools() {
		st.Pools = append(st.Pools, p.Status())
	}
	st.Leases = r.Leases()
	st.MemoryUsed, st.MemoryTotal = r.budget.Usage()
	return st
}
