package registry

import (
	"context"
	"io"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Provider makes what a pool needs from the world outside the registry:
// the backend that makes its sandboxes and what makes their scratch
// directories. The Docker backend is one (shim/docker); MockProvider is
// another.
type Provider interface {
	// Pool returns the backend and the scratch maker of pool name, whose
	// config has been validated.
	Pool(name string, pc spec.PoolConfig) (sandboxset.Backend, sandboxset.ScratchMaker, error)
	// Describe returns the container ID (empty if none) and the host path
	// of the scratch directory of sb, a sandbox of one of its backends
	// (possibly wrapped: see Innermost), for its lease.
	Describe(sb sandboxset.Sandbox) (container, scratch string)
}

// Recycler is a sandbox that can be made as it was made without a new one
// (a pool's recycle): every process killed, everything a run can write
// emptied, the pool's command started again. An error means it is not, and
// must be destroyed.
type Recycler interface {
	Recycle(ctx context.Context) error
}

// Runner is a Provider that can run commands in its sandboxes (runs need
// it).
type Runner interface {
	// Session returns a connection that speaks the run protocol (see
	// shim/agent) to what runs commands in sb, a running sandbox of one of
	// its backends; via names it ("agent", or a fallback's name).
	Session(ctx context.Context, sb sandboxset.Sandbox) (conn io.ReadWriteCloser, via string, err error)
}

// Janitor keeps the backend's world in line with the registry's pools: it
// reconciles at start, watches for sandboxes that die and for orphans, and
// at a stop that destroys all removes whatever is left. It is optional.
type Janitor interface {
	// Reconcile adopts into pools what an earlier process left that fits
	// them and removes everything else it made. It runs before the pools
	// create anything.
	Reconcile(ctx context.Context, pools map[string]AdoptPool) (ReconcileReport, error)
	// Watch runs until ctx ends: it drops idle sandboxes whose containers
	// die, removes orphans, and refills pools through h.
	Watch(ctx context.Context, h Host)
	// RemoveAll removes everything left once the pools are closed.
	RemoveAll(ctx context.Context) error
}

// AdoptPool is a configured pool a Janitor may adopt sandboxes into.
type AdoptPool struct {
	Set *sandboxset.Set
	// Backend is the backend the Provider made for the pool.
	Backend sandboxset.Backend
	Config  spec.PoolConfig
	// Wrap wraps each adopted sandbox as the pool's own creates are
	// wrapped (to charge it to the memory budget).
	Wrap func(sandboxset.Sandbox) sandboxset.Sandbox
}

// ReconcileReport says what a reconcile did.
type ReconcileReport struct {
	Adopted map[string]int `json:"adopted"` // by pool
	Removed map[string]int `json:"removed"` // by reason
	// AdoptedSandboxes are the IDs of the sandboxes adopted.
	AdoptedSandboxes []string `json:"-"`
}

// Host is what a Janitor sees of the registry. Its methods take the
// registry's lock themselves; call them with none held.
type Host interface {
	// Knows reports whether a pool (live or draining) or a lease holds
	// sandbox id.
	Knows(sandboxID string) bool
	// Leased reports whether a lease holds sandbox id.
	Leased(sandboxID string) bool
	// DropIdle destroys, in every pool, the idle sandboxes lost reports;
	// their pools refill.
	DropIdle(lost func(sb sandboxset.Sandbox, idleSince time.Time) bool)
	// Refill warms every pool to its min_idle (after the backend came
	// back).
	Refill()
	// TopUp warms the pools below min_idle with nothing being created.
	TopUp()
}

// Innermost returns the sandbox inside sb's wrappers (e.g. the memory
// budget's).
func Innermost(sb sandboxset.Sandbox) sandboxset.Sandbox {
	for {
		w, ok := sb.(interface{ Unwrap() sandboxset.Sandbox })
		if !ok {
			return sb
		}
		sb = w.Unwrap()
	}
}

// ErrNoExec is returned by Run when the provider cannot run commands.
var ErrNoExec = errdefs.ErrNotImplemented.WithMessage("the mock backend cannot run commands")
