package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/imageref"
	"github.com/open-lambda/ol-shim/shim/spec"
)

var adhocRE = regexp.MustCompile(`[^a-z0-9_.-]+`)

// adhocName is the pool an image with no configured pool is served from,
// for owner (a caller's key; "" for the administrator): each caller has
// its own.
func adhocName(image, owner string) string {
	in := image
	if owner != "" {
		in = owner + "\x00" + image
	}
	sum := sha256.Sum256([]byte(in))
	base := strings.Trim(adhocRE.ReplaceAllString(strings.ToLower(image), "-"), "-._")
	if len(base) > 40 {
		base = base[:40]
	}
	return adhocPrefix + base + "-" + hex.EncodeToString(sum[:8])
}

// adhocPrefix starts the name of every ad-hoc pool, and of no other.
const adhocPrefix = "adhoc-"

// poolFor returns the named pool or, with no name, the one for image: a
// pool of that image with no command that ctx's caller may use by image
// (its own, or a shared one; any, for the administrator), else the
// caller's ad-hoc pool of it, made now with the [adhoc] defaults.
//
// as is the user the run asks to run as ("" for none). By image, a pool
// serves it if its processes run as that user or as root (whose init may
// run a command as any user). For the administrator alone, an ad hoc pool
// then runs as root (see runsAsRoot); another caller's ad hoc pool runs as
// the sandbox user, whose init can run a command as no one else.
func (r *Registry) poolFor(ctx context.Context, name, image, as string) (*Pool, error) {
	if name != "" {
		return r.PoolOf(ctx, name)
	}
	if image == "" {
		return nil, fmt.Errorf("%w: name a pool or an image", spec.ErrInvalidSpec)
	}
	key, limited := caller(ctx)
	r.mu.Lock()
	for _, n := range slices.Sorted(maps.Keys(r.pools)) { // the first by name, if several
		if p := r.pools[n]; !p.AdHoc && p.Config.Image == image && len(p.Config.Cmd) == 0 && mayUse(p, key, limited, true) && p.serves(as) {
			r.mu.Unlock()
			return p, nil
		}
	}
	asRoot := !limited && r.cfg.SandboxUser != "" && as != "" && as != r.cfg.SandboxUser
	owner := key
	if asRoot {
		owner = key + "\x00" + runsAsRoot
	}
	name = adhocName(image, owner)
	if p, ok := r.pools[name]; ok {
		r.mu.Unlock()
		if p.Config.Image != image || p.Config.Owner != key || (p.Config.User == runsAsRoot) != asRoot { // a hash collision: never serve another image or owner
			return nil, fmt.Errorf("image %q: %w: its ad-hoc pool name %q is taken by image %q", image, errdefs.ErrConflict, name, p.Config.Image)
		}
		return p, nil
	}
	a := r.adhoc
	r.mu.Unlock()
	if err := imageref.Validate(image); err != nil {
		return nil, err
	}
	if err := r.makeRoomForAdHoc(a); err != nil {
		return nil, err
	}
	pc := a.Pool(image)
	pc.Owner = key
	if asRoot {
		pc.User = runsAsRoot
	}
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

// runsAsRoot is the user of the administrator's ad hoc pools for runs
// that name a user other than the sandbox user.
const runsAsRoot = "0:0"

// serves reports whether p's processes can run a command as user as: they
// run as it, or as root (or as the image's USER, which ol-shim does not
// know before a run), or as does not say.
func (p *Pool) serves(as string) bool {
	return as == "" || p.RunsAs == as || spec.IsRoot(p.RunsAs)
}

// PoolForImage returns the pool a run by image of ctx's caller, as user
// as ("" for none named), lands in (see poolFor), making it if it is an
// ad hoc pool not made yet.
func (r *Registry) PoolForImage(ctx context.Context, image, as string) (*Pool, error) {
	return r.poolFor(ctx, "", image, as)
}

// makeRoomForAdHoc makes sure one more ad-hoc pool fits [adhoc]
// max_pools: if not, the least recently used ad-hoc pool that holds no
// lease and no sandbox in use is removed; if none can be, the request is
// refused.
func (r *Registry) makeRoomForAdHoc(a config.AdHocConfig) error {
	limit := a.MaxPools
	if limit <= 0 {
		limit = DefaultMaxAdHocPools
	}
	r.mu.Lock()
	var victim *Pool
	n := 0
	for _, p := range r.pools {
		if !p.AdHoc {
			continue
		}
		n++
		if p.set.Stats().InUse == 0 && !r.poolLeasedLocked(p.Name) && (victim == nil || p.lastUsed.Load() < victim.lastUsed.Load()) {
			victim = p
		}
	}
	if n < limit {
		r.mu.Unlock()
		return nil
	}
	if victim == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: %d ad-hoc pools, all in use (max_pools in [adhoc])", errdefs.ErrResourceExhausted, n)
	}
	delete(r.pools, victim.Name)
	r.mu.Unlock()
	r.log.Info("too many ad-hoc pools; removing the least recently used", "pool", victim.Name, "max_pools", limit)
	r.drainInBackground(victim)
	return nil
}

// poolLeasedLocked reports whether a lease holds a sandbox of pool. r.mu
// must be held.
func (r *Registry) poolLeasedLocked(pool string) bool {
	for _, l := range r.leases {
		if l.Pool == pool {
			return true
		}
	}
	return false
}
