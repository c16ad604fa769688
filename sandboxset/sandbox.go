package sandboxset

import (
	"context"

	"github.com/containerd/errdefs"
)

// Sandbox is one isolated environment (a container, or a mock) that can be
// paused and resumed. Implementations must be safe for use by one goroutine at
// a time; the Set never calls two methods of one Sandbox concurrently. Pause
// may be called with a context that has no deadline: every method must bound
// its own calls (the Docker backend puts a timeout on each).
type Sandbox interface {
	// ID is unique among all sandboxes of a backend.
	ID() string
	// Pause freezes every process in the sandbox.
	Pause(ctx context.Context) error
	// Unpause resumes a paused sandbox. It fails if the sandbox died while
	// paused.
	Unpause(ctx context.Context) error
	// Destroy removes the sandbox, paused or not. A sandbox that is already
	// gone counts as destroyed. reason is for logs and labels.
	Destroy(ctx context.Context, reason string) error
}

// Cleaner is implemented by sandboxes that can be handed out again as they
// were: Mark records what runs in the sandbox as it is handed out, Sweep
// (as it is returned) kills whatever else runs in it then, and fails if it
// cannot. A Set marks each sandbox it hands out and sweeps each one Put
// returns; one whose Mark or Sweep fails is destroyed, never handed out.
// A wrapper of a sandbox (with Unwrap() Sandbox) passes it on.
type Cleaner interface {
	Mark(ctx context.Context) error
	Sweep(ctx context.Context) (killed int, err error)
}

// cleanerOf returns the Cleaner of sb or of what it wraps, or nil.
func cleanerOf(sb Sandbox) Cleaner {
	for {
		if c, ok := sb.(Cleaner); ok {
			return c
		}
		w, ok := sb.(interface{ Unwrap() Sandbox })
		if !ok {
			return nil
		}
		sb = w.Unwrap()
	}
}

// Spec describes one sandbox a Backend is asked to create. The function the
// sandbox runs (image, command, limits) is bound to the Backend value a Set
// is given; Spec carries what differs between sandboxes of one pool.
type Spec struct {
	// ID is the new sandbox's ID: unique, and valid as a Docker volume or
	// container name ([A-Za-z0-9][A-Za-z0-9_.-]*).
	ID string
	// Pool is the name of the Set that asks.
	Pool string
	// ScratchDir is the host path of the sandbox's scratch directory.
	ScratchDir string
}

// Backend creates sandboxes.
type Backend interface {
	// Create makes and starts a new sandbox. The sandbox is returned
	// unpaused. On error nothing is left behind.
	Create(ctx context.Context, spec Spec) (Sandbox, error)
}

// Forker is implemented by backends that can create a sandbox as a copy of a
// running one (for Config.Parent).
type Forker interface {
	// Fork creates a new sandbox from parent, which is unpaused and held by
	// the caller for the duration of the call.
	Fork(ctx context.Context, parent Sandbox, spec Spec) (Sandbox, error)
}

// ScratchMaker makes and removes the scratch directory of each sandbox.
type ScratchMaker interface {
	// Make creates the scratch directory for sandbox id and returns its
	// host path.
	Make(ctx context.Context, id string) (string, error)
	// Remove deletes the scratch directory of sandbox id and all it holds.
	// Removing one that does not exist is not an error.
	Remove(ctx context.Context, id string) error
}

var (
	// ErrClosed is returned by a Set that has been closed.
	// It is of class errdefs.ErrUnavailable.
	ErrClosed = errdefs.ErrUnavailable.WithMessage("sandbox set is closed")
	// ErrForkUnsupported is returned when Config.Parent is set but the
	// backend cannot fork sandboxes.
	// It is of class errdefs.ErrNotImplemented.
	ErrForkUnsupported = errdefs.ErrNotImplemented.WithMessage("backend cannot fork sandboxes")
	// ErrInvalidConfig is returned by New for a configuration it cannot use.
	// It is of class errdefs.ErrInvalidArgument.
	ErrInvalidConfig = errdefs.ErrInvalidArgument.WithMessage("invalid sandbox set config")
)
