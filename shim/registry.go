package shim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
)

// Error classes of the registry; the API maps them to status codes.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrNoExec   = errors.New("the mock backend cannot run commands")
)

// Destroy reasons the registry gives.
const (
	ReasonLeaseExpired = "lease expired"
	ReasonRunDone      = "run done"
	ReasonPoolGone     = "pool removed"
)

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	// Docker makes the sandboxes; nil selects the mock backend.
	Docker *Docker
	// Volumes, with Docker, serves scratch directories as volumes of the
	// Docker volume driver (DockerConfig.VolumeDriver); nil bind-mounts
	// plain directories under Root/scratch.
	Volumes *scratch.Manager
	// Root is the state root.
	Root string
	// Budget is the host memory budget in bytes; 0: none.
	Budget int64
	// Lease is how long an acquired sandbox lives unless renewed.
	Lease time.Duration
	// AdHoc sizes pools made on demand.
	AdHoc AdHocConfig
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Metrics, if set, observes acquire latencies.
	Metrics *Metrics
}

// Registry is the daemon's pools (one sandboxset.Set each), the leases of
// acquired sandboxes, and the host memory budget. It is safe for concurrent
// use; its mutex is never held across a pool or backend call.
type Registry struct {
	cfg     RegistryConfig
	log     *slog.Logger
	budget  *Budget
	mock    *sandboxset.MockBackend // the mock backend, if selected
	scratch sandboxset.ScratchMaker // bind scratch, when not volumes

	mu       sync.Mutex
	pools    map[string]*Pool     // guarded by mu
	leases   map[string]*Lease    // guarded by mu
	released map[string]time.Time // guarded by mu: lease IDs released lately, for 409s
	adhoc    AdHocConfig          // guarded by mu
	closed   bool                 // guarded by mu

	bg       sync.WaitGroup // destroys after runs; Close waits for them
	stop     chan struct{}
	done     chan struct{}
	watched  chan struct{}   // closed when the Docker watch ends; nil without one
	adopted  map[string]bool // guarded by mu: sandbox IDs adopted at Start (made by an earlier process)
	draining map[*Pool]bool  // guarded by mu: pools taken out, still closing
}

// Pool is one pool of the registry.
type Pool struct {
	Name   string
	Config PoolConfig
	AdHoc  bool

	set      *sandboxset.Set
	docker   *Backend                                    // nil with the mock backend
	wrap     func(sandboxset.Sandbox) sandboxset.Sandbox // budget charge of adopted sandboxes
	scratch  sandboxset.ScratchMaker
	lastUsed atomic.Int64 // unix nanoseconds
}

// Stats returns the pool's counters.
func (p *Pool) Stats() sandboxset.Stats { return p.set.Stats() }

// Lease is an acquired sandbox and how long it may be held.
type Lease struct {
	ID          string    `json:"id"`
	Pool        string    `json:"pool"`
	SandboxID   string    `json:"sandbox"`
	ContainerID string    `json:"container,omitempty"`
	ScratchPath string    `json:"scratch,omitempty"`
	Outcome     string    `json:"outcome"`
	Expires     time.Time `json:"expires"`

	ref *sandboxset.Ref
}

// NewRegistry returns an empty registry and starts its janitor (leases,
// ad-hoc pools).
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	r := &Registry{
		cfg:      cfg,
		log:      cfg.Logger,
		budget:   NewBudget(cfg.Budget),
		pools:    map[string]*Pool{},
		leases:   map[string]*Lease{},
		released: map[string]time.Time{},
		adhoc:    cfg.AdHoc,
		draining: map[*Pool]bool{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r.budget.Evict = r.evictOne
	if cfg.Docker == nil {
		r.mock = sandboxset.NewMockBackend()
	}
	if cfg.Docker == nil || cfg.Volumes == nil {
		dir := filepath.Join(cfg.Root, "scratch")
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("scratch root: %w", err)
		}
		r.scratch = sandboxset.DirScratch{Root: dir}
	}
	go r.janitor()
	return r, nil
}

// Root returns the state root.
func (r *Registry) Root() string { return r.cfg.Root }

// Mock returns the mock backend, or nil with Docker.
func (r *Registry) Mock() *sandboxset.MockBackend { return r.mock }

// Budget returns the memory budget.
func (r *Registry) Budget() *Budget { return r.budget }

// newPool makes a pool with MinIdle 0; the caller warms it.
func (r *Registry) newPool(name string, pc PoolConfig, adhoc bool) (*Pool, error) {
	if err := sandboxset.ValidateName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if err := pc.Validate(); err != nil {
		return nil, fmt.Errorf("pool %q: %w", name, err)
	}
	p := &Pool{Name: name, Config: pc, AdHoc: adhoc}
	var inner sandboxset.Backend = r.mock
	if d := r.cfg.Docker; d != nil {
		b, err := d.Backend(name, pc.Spec())
		if err != nil {
			return nil, err
		}
		p.docker, inner = b, b
	}
	bb := r.budget.Wrap(inner, name, int64(pc.Memory)).(*budgetBackend)
	p.wrap = bb.adopt
	p.scratch = r.scratch
	if r.cfg.Docker != nil && r.cfg.Volumes != nil {
		vs, err := r.cfg.Docker.VolumeScratch(pc.ScratchOptions(), r.cfg.Volumes.Path)
		if err != nil {
			return nil, err
		}
		p.scratch = vs
	}
	set, err := sandboxset.New(sandboxset.Config{
		Name:       name,
		Backend:    bb,
		Scratch:    p.scratch,
		MaxSize:    pc.MaxSize,
		IdleTTL:    time.Duration(pc.IdleTTL),
		PauseGrace: time.Duration(pc.PauseGrace),
		Logger:     r.log,
	})
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", name, err)
	}
	p.set = set
	p.lastUsed.Store(time.Now().UnixNano())
	return p, nil
}

// warm fills p to its MinIdle in the background.
func (r *Registry) warm(p *Pool) {
	if p.Config.MinIdle == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := p.set.Warm(ctx, p.Config.MinIdle); err != nil && !errors.Is(err, sandboxset.ErrClosed) {
			r.log.Warn("warm pool", "pool", p.Name, "error", err)
		}
	}()
}

// Start makes the configured pools, reconciles Docker with them (adopting
// paused sandboxes of the same spec, removing the rest), then warms them.
func (r *Registry) Start(ctx context.Context, pools map[string]PoolConfig) (ReconcileReport, error) {
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
	var rep ReconcileReport
	if d := r.cfg.Docker; d != nil {
		rp := map[string]ReconcilePool{}
		for name, p := range made {
			fuse := r.cfg.Volumes != nil && (p.Config.ScratchSize > 0 || p.Config.ScratchInodes > 0)
			rp[name] = ReconcilePool{Set: p.set, Backend: p.docker, Wrap: p.wrap, NoAdopt: fuse}
		}
		var lister ScratchLister
		switch s := r.scratch.(type) {
		case sandboxset.DirScratch:
			lister = s
		default:
			vs, err := d.VolumeScratch(nil, r.cfg.Volumes.Path)
			if err != nil {
				return rep, err
			}
			lister = vs
		}
		var err error
		if rep, err = Reconcile(ctx, d, lister, rp); err != nil {
			r.log.Error("reconcile", "error", err)
		}
		r.log.Info("reconciled", "adopted", rep.Adopted, "removed", rep.Removed)
	}
	r.mu.Lock()
	r.adopted = map[string]bool{}
	for _, id := range rep.AdoptedSandboxes {
		r.adopted[id] = true
	}
	maps.Copy(r.pools, made)
	if d := r.cfg.Docker; d != nil && r.watched == nil && !r.closed {
		r.watched = make(chan struct{})
		go r.watch(d)
	}
	r.mu.Unlock()
	for _, p := range made {
		r.warm(p)
	}
	return rep, nil
}

// Apply makes the registry's configured pools those given (SIGHUP):
// new pools are made, changed ones replaced (the old one drains: idle
// sandboxes go at once, leased ones when released), removed ones drained.
// Ad-hoc pools are left alone.
func (r *Registry) Apply(pools map[string]PoolConfig, adhoc AdHocConfig) error {
	var errs []error
	r.mu.Lock()
	r.adhoc = adhoc
	var gone []*Pool
	for name, p := range r.pools {
		if _, ok := pools[name]; !ok && !p.AdHoc {
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
		if _, err := r.PutPool(name, pools[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PutPool creates pool name or, if its config changed, replaces it. It
// reports whether anything changed.
func (r *Registry) PutPool(name string, pc PoolConfig) (bool, error) {
	r.mu.Lock()
	old, ok := r.pools[name]
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return false, fmt.Errorf("pool %q: %w", name, sandboxset.ErrClosed)
	}
	if ok && !old.AdHoc && reflect.DeepEqual(old.Config, pc) {
		return false, nil
	}
	p, err := r.newPool(name, pc, false)
	if err != nil {
		return false, err
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

// DeletePool removes a pool; its idle sandboxes go at once, leased ones
// when released.
func (r *Registry) DeletePool(name string) error {
	r.mu.Lock()
	p, ok := r.pools[name]
	delete(r.pools, name)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	return r.drain(p)
}

// drain closes a pool taken out of the registry: its idle sandboxes go now,
// leased ones when released. Until then the orphan sweep still counts its
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

// knows reports whether a pool, live or draining, or a lease holds sandbox
// id.
func (r *Registry) knows(id string) bool {
	r.mu.Lock()
	sets := make([]*sandboxset.Set, 0, len(r.pools)+len(r.draining))
	for _, p := range r.pools {
		sets = append(sets, p.set)
	}
	for p := range r.draining {
		sets = append(sets, p.set)
	}
	leased := false
	for _, l := range r.leases {
		leased = leased || l.SandboxID == id
	}
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

// Pool returns pool name.
func (r *Registry) Pool(name string) (*Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pools[name]
	if !ok {
		return nil, fmt.Errorf("pool %q: %w", name, ErrNotFound)
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

// Warm sets a pool's MinIdle and creates sandboxes until it holds that many.
func (r *Registry) Warm(ctx context.Context, name string, n int) error {
	p, err := r.Pool(name)
	if err != nil {
		return err
	}
	return p.set.Warm(ctx, n)
}

// Shrink destroys a pool's idle sandboxes down to n.
func (r *Registry) Shrink(name string, n int) error {
	p, err := r.Pool(name)
	if err != nil {
		return err
	}
	return p.set.Shrink(n)
}

var adhocRE = regexp.MustCompile(`[^a-z0-9_.-]+`)

// adhocName is the pool an image with no configured pool is served from.
func adhocName(image string) string {
	sum := sha256.Sum256([]byte(image))
	base := strings.Trim(adhocRE.ReplaceAllString(strings.ToLower(image), "-"), "-._")
	if len(base) > 40 {
		base = base[:40]
	}
	return "adhoc-" + base + "-" + hex.EncodeToString(sum[:4])
}

// poolFor returns the named pool or, with no name, the one for image: a
// configured pool of that image with no command, else an ad-hoc pool made
// now with the [adhoc] defaults.
func (r *Registry) poolFor(name, image string) (*Pool, error) {
	if name != "" {
		return r.Pool(name)
	}
	if image == "" {
		return nil, fmt.Errorf("%w: name a pool or an image", ErrInvalidSpec)
	}
	r.mu.Lock()
	for _, n := range slices.Sorted(maps.Keys(r.pools)) { // the first by name, if several
		if p := r.pools[n]; !p.AdHoc && p.Config.Image == image && len(p.Config.Cmd) == 0 {
			r.mu.Unlock()
			return p, nil
		}
	}
	name = adhocName(image)
	if p, ok := r.pools[name]; ok {
		r.mu.Unlock()
		return p, nil
	}
	a := r.adhoc
	r.mu.Unlock()
	pc := PoolConfig{Image: image, Memory: a.Memory, CPUs: a.CPUs, Pids: a.Pids, MinIdle: a.MinIdle, MaxSize: a.MaxSize, PauseGrace: a.PauseGrace}
	p, err := r.newPool(name, pc, true)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if cur, ok := r.pools[name]; ok { // made meanwhile by another request
		r.mu.Unlock()
		p.set.Close(context.Background())
		return cur, nil
	}
	r.pools[name] = p
	r.mu.Unlock()
	r.log.Info("made ad-hoc pool", "pool", name, "image", image)
	r.warm(p)
	return p, nil
}

// take gets a sandbox from the named pool (or the pool of image), timing it
// for the metrics and marking the pool used.
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
	r.cfg.Metrics.observe(p.Name, ref.Outcome().String(), time.Since(start))
	p.lastUsed.Store(time.Now().UnixNano())
	return p, ref, nil
}

// Acquire takes a sandbox from a pool (or the pool of an image) under a
// lease that expires unless renewed.
func (r *Registry) Acquire(ctx context.Context, pool, image string) (*Lease, error) {
	p, ref, err := r.take(ctx, pool, image)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	l := &Lease{
		ID:        hex.EncodeToString(b),
		Pool:      p.Name,
		SandboxID: ref.Sandbox().ID(),
		Outcome:   ref.Outcome().String(),
		Expires:   time.Now().Add(r.cfg.Lease),
		ref:       ref,
	}
	if ds, ok := AsDocker(ref.Sandbox()); ok {
		l.ContainerID, l.ScratchPath = ds.ContainerID(), ds.ScratchDir()
	} else if ms, ok := Innermost(ref.Sandbox()).(*sandboxset.MockSandbox); ok {
		l.ScratchPath = ms.Spec().ScratchDir
	}
	r.mu.Lock()
	r.leases[l.ID] = l
	r.mu.Unlock()
	return l, nil
}

// takeLease removes lease id from the table; a lease released before is a
// conflict, an unknown one not found.
func (r *Registry) takeLease(id string) (*Lease, error) {
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
func (r *Registry) leaseLocked(id string) (*Lease, error) {
	if l, ok := r.leases[id]; ok {
		return l, nil
	}
	if _, was := r.released[id]; was {
		return nil, fmt.Errorf("lease %q: %w: already released", id, ErrConflict)
	}
	return nil, fmt.Errorf("lease %q: %w", id, ErrNotFound)
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
func (r *Registry) Renew(id string, d time.Duration) (*Lease, error) {
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
	c := *l
	return &c, nil
}

// Leases returns the current leases.
func (r *Registry) Leases() []Lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Lease, 0, len(r.leases))
	for _, l := range r.leases {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.Expires.Compare(b.Expires) })
	return out
}

// RunRequest is a docker-run-like call served from a pool.
type RunRequest struct {
	Pool       string   `json:"pool,omitempty"`
	Image      string   `json:"image,omitempty"`
	Cmd        []string `json:"cmd"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	Stdin      []byte   `json:"stdin,omitempty"`
	Reuse      bool     `json:"reuse,omitempty"`
}

// RunResult is what a run printed and how it ended.
type RunResult struct {
	Pool      string `json:"pool"`
	Sandbox   string `json:"sandbox"`
	Outcome   string `json:"outcome"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	ExitCode  int    `json:"exit_code"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Run runs a command in a sandbox of a pool (or of an image's pool): by
// default the sandbox is destroyed afterwards and the pool refills in the
// background; with Reuse it goes back to the pool.
func (r *Registry) Run(ctx context.Context, req RunRequest) (*RunResult, error) {
	if r.cfg.Docker == nil {
		return nil, ErrNoExec
	}
	if len(req.Cmd) == 0 {
		return nil, fmt.Errorf("%w: run: no command", ErrInvalidSpec)
	}
	for i, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || !envKeyRE.MatchString(k) {
			return nil, fmt.Errorf("%w: env[%d] %q: want KEY=VALUE", ErrInvalidSpec, i, kv)
		}
	}
	p, ref, err := r.take(ctx, req.Pool, req.Image)
	if err != nil {
		return nil, err
	}
	ds, _ := AsDocker(ref.Sandbox())
	res, err := ds.Exec(ctx, ExecRequest{Cmd: req.Cmd, Env: req.Env, WorkingDir: req.WorkingDir, Stdin: req.Stdin})
	if err != nil || !req.Reuse {
		// Off the caller's path: the destroy, then the refill it allows.
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			if derr := ref.Destroy(ReasonRunDone); derr != nil {
				r.log.Warn("destroy after run", "pool", p.Name, "sandbox", ds.ID(), "error", derr)
			}
			if p.Config.MinIdle > 0 {
				r.warm(p)
			}
		}()
	} else if perr := ref.Put(); perr != nil {
		r.log.Warn("return sandbox after run", "pool", p.Name, "sandbox", ds.ID(), "error", perr)
	}
	if err != nil {
		return nil, err
	}
	return &RunResult{
		Pool: p.Name, Sandbox: ds.ID(), Outcome: ref.Outcome().String(),
		Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode, Truncated: res.Truncated,
	}, nil
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

// watch drops idle sandboxes whose containers die (dockerd's events) and,
// each time dockerd's events come back after a loss (a dockerd restart kills
// every container), those lost meanwhile; their pools refill to min_idle.
// Soon after the start and then every orphanSweepEvery, it removes orphans
// of an earlier process (see sweepOrphans). It runs until Close.
func (r *Registry) watch(d *Docker) {
	defer close(r.watched)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.stop
		cancel()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTimer(orphanSweepFirst)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.sweepOrphans(ctx, d)
				r.topUp()
				t.Reset(orphanSweepEvery)
			}
		}
	})
	alive := func(state string) bool { return state == "running" || state == "paused" }
	d.WatchDeaths(ctx, func(ctx context.Context) error {
		listed := time.Now()
		states, err := d.ContainerStates(ctx)
		if err != nil {
			return err
		}
		// A container missing from the list is lost only if its sandbox was
		// idle before the list was taken: one made since is not in it.
		r.dropLost(func(id string, idleSince time.Time) bool {
			c, ok := states[id]
			return (ok && !alive(c.State)) || (!ok && idleSince.Before(listed))
		})
		r.removeDead(ctx, d, states)
		for _, p := range r.Pools() {
			r.warm(p) // a refill that failed while dockerd was away
		}
		return nil
	}, func(id string) {
		r.dropLost(func(c string, _ time.Time) bool { return c == id })
	})
}

// topUp warms the pools below their min_idle with nothing being created:
// a refill whose creates failed (dockerd swamped or away) is not retried by
// the pool itself.
func (r *Registry) topUp() {
	for _, p := range r.Pools() {
		if st := p.set.Stats(); !st.Closed && st.Idle+st.Creating < st.MinIdle {
			r.log.Info("pool below min_idle with nothing being created; warming it again", "pool", p.Name, "idle", st.Idle, "min_idle", st.MinIdle)
			r.warm(p)
		}
	}
}

// When watch sweeps orphans and tops the pools up.
const (
	orphanSweepFirst = 5 * time.Second
	orphanSweepEvery = 30 * time.Second
)

// sweepOrphans removes the containers and scratch volumes of this root that
// an earlier ol-shim process made and no pool adopted (reconcile at start
// removes those it sees, but a process killed with creates in flight leaves
// them to dockerd, which may finish them after the reconcile), and those
// this process made for sandboxes no pool knows any more.
func (r *Registry) sweepOrphans(ctx context.Context, d *Docker) {
	r.mu.Lock()
	adopted := maps.Clone(r.adopted)
	r.mu.Unlock()
	// What an earlier process made is an orphan unless adopted; what this
	// one made, once no pool knows its sandbox (a create that failed after
	// dockerd made the container, as dockerd went away).
	orphan := func(sandbox, instance string) bool {
		if instance != d.Instance() {
			return !adopted[sandbox]
		}
		return !r.knows(sandbox)
	}
	states, err := d.ContainerStates(ctx)
	if err != nil {
		r.log.Debug("orphan sweep: list containers", "error", err)
		return
	}
	for id, c := range states {
		if !orphan(c.Sandbox, c.Instance) {
			continue
		}
		r.removeContainer(ctx, d, id, c.Sandbox, "an orphan an earlier process made")
	}
	if m := r.cfg.Volumes; m != nil && d.cfg.VolumeDriver != "" {
		if refs, err := d.VolumesReferenced(ctx, d.cfg.VolumeDriver); err == nil {
			if released := m.DropAnonymous(func(name string) bool { return refs[name] }); len(released) > 0 {
				r.log.Info("orphan sweep: released mounts of containers removed as the previous process died", "volumes", released)
			}
		}
	}
	vs, ok := r.scratchOf().(*VolumeScratch)
	if !ok {
		return
	}
	vols, err := vs.ListMade(ctx)
	if err != nil {
		r.log.Debug("orphan sweep: list volumes", "error", err)
		return
	}
	for name, instance := range vols {
		if !orphan(name, instance) {
			continue
		}
		if err := vs.Remove(ctx, name); err != nil {
			r.log.Warn("orphan sweep: remove a volume an earlier process made", "volume", name, "error", err)
			continue
		}
		r.log.Info("orphan sweep: removed a volume an earlier process made", "volume", name)
	}
}

// removeDead removes the stopped containers of this root that no lease
// holds, with their scratch: sandboxes whose destroy failed because dockerd
// was going away as they died. A leased one is left to its holder, whose
// release reports it.
func (r *Registry) removeDead(ctx context.Context, d *Docker, states map[string]ContainerState) {
	r.mu.Lock()
	leased := map[string]bool{}
	for _, l := range r.leases {
		leased[l.ContainerID] = true
	}
	r.mu.Unlock()
	for id, c := range states {
		if c.State != "exited" && c.State != "dead" || leased[id] {
			continue
		}
		r.removeContainer(ctx, d, id, c.Sandbox, "dead, and no pool held it")
	}
}

// removeAll removes every container and scratch volume labelled with this
// root that is left once the pools are closed (a destroy that failed): a
// stop that destroys all leaves nothing.
func (r *Registry) removeAll(ctx context.Context, d *Docker) error {
	states, err := d.ContainerStates(ctx)
	if err != nil {
		return fmt.Errorf("destroy all: list containers: %w", err)
	}
	for id, c := range states {
		r.removeContainer(ctx, d, id, c.Sandbox, "left after the pools closed")
	}
	vs, ok := r.scratchOf().(*VolumeScratch)
	if !ok {
		return nil
	}
	vols, err := vs.ListMade(ctx)
	if err != nil {
		return fmt.Errorf("destroy all: list volumes: %w", err)
	}
	var errs []error
	for name := range vols {
		errs = append(errs, vs.Remove(ctx, name))
	}
	return errors.Join(errs...)
}

// removeContainer removes a container that no pool holds, and its
// sandbox's scratch, and logs why.
func (r *Registry) removeContainer(ctx context.Context, d *Docker, id, sandbox, why string) {
	err := d.Attach(sandbox, id, "").Destroy(ctx, why)
	if _, ok := scratchOfLabels(map[string]string{LabelSandbox: sandbox}); err == nil && ok {
		err = r.scratchOf().Remove(ctx, sandbox)
	}
	if err != nil {
		r.log.Warn("remove a container no pool holds", "container", id, "sandbox", sandbox, "why", why, "error", err)
		return
	}
	r.log.Info("removed a container no pool holds", "container", id, "sandbox", sandbox, "why", why)
}

// scratchOf returns what removes a sandbox's scratch: its volume, or its
// directory.
func (r *Registry) scratchOf() sandboxset.ScratchMaker {
	if r.cfg.Docker != nil && r.cfg.Volumes != nil {
		if vs, err := r.cfg.Docker.VolumeScratch(nil, r.cfg.Volumes.Path); err == nil {
			return vs
		}
	}
	return r.scratch
}

// dropLost destroys the idle sandboxes whose containers lost reports, in
// every pool.
func (r *Registry) dropLost(lost func(containerID string, idleSince time.Time) bool) {
	for _, p := range r.Pools() {
		n := p.set.DropIdle(func(sb sandboxset.Sandbox, since time.Time) bool {
			ds, ok := AsDocker(sb)
			return ok && lost(ds.ContainerID(), since)
		})
		if n > 0 {
			r.log.Warn("idle sandboxes lost (their containers died); replacing them", "pool", p.Name, "lost", n)
		}
	}
}

// janitor expires leases and removes ad-hoc pools idle past their TTL.
func (r *Registry) janitor() {
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
	var expired []*Lease
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

// Close stops the registry. Leased sandboxes are destroyed. With destroy,
// every pool is closed and its sandboxes destroyed; without, idle sandboxes
// are left paused for the next start to adopt.
func (r *Registry) Close(ctx context.Context, destroy bool) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	leases := slices.Collect(maps.Values(r.leases))
	clear(r.leases)
	pools := slices.Collect(maps.Values(r.pools))
	watched := r.watched
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	if watched != nil {
		<-watched
	}
	r.bg.Wait()
	var errs []error
	for _, l := range leases {
		errs = append(errs, l.ref.Destroy("daemon stopped"))
	}
	if destroy {
		for _, p := range pools {
			errs = append(errs, p.set.Close(ctx))
		}
		if d := r.cfg.Docker; d != nil {
			errs = append(errs, r.removeAll(ctx, d))
		}
	}
	return errors.Join(errs...)
}

// Status is the registry's state for `ol-shim status`.
type Status struct {
	Pools       []PoolStatus `json:"pools"`
	Leases      []Lease      `json:"leases"`
	MemoryUsed  int64        `json:"memory_used"`
	MemoryTotal int64        `json:"memory_budget"`
}

// PoolStatus is one pool's state.
type PoolStatus struct {
	Name   string           `json:"name"`
	Image  string           `json:"image"`
	AdHoc  bool             `json:"adhoc,omitempty"`
	Config PoolConfig       `json:"config"`
	Stats  sandboxset.Stats `json:"stats"`
}

// Status returns the pools, leases and memory budget.
func (r *Registry) Status() Status {
	var st Status
	for _, p := range r.Pools() {
		st.Pools = append(st.Pools, PoolStatus{Name: p.Name, Image: p.Config.Image, AdHoc: p.AdHoc, Config: p.Config, Stats: p.set.Stats()})
	}
	st.Leases = r.Leases()
	st.MemoryUsed, st.MemoryTotal = r.budget.Usage()
	return st
}
