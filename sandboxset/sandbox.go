// Package sandboxset keeps a warm pool of paused sandboxes for one function.
//
// # Structure
//
// A [Set] is the pool for one function (one image and configuration). A caller
// asks it for a sandbox with [Set.GetOrCreateUnpaused] and receives a [Ref]: an
// unpaused sandbox that belongs to that caller alone until it calls [Ref.Put]
// (pause it and return it to the pool) or [Ref.Destroy] (free it for good).
// Which of three ways the sandbox came is reported by [Ref.Outcome]:
//
//   - hot: a sandbox returned less than Config.PauseGrace ago and still
//     unpaused; no backend call at all;
//   - warm: a paused sandbox, unpaused;
//   - cold: a new sandbox, created through the [Backend] (or forked from a
//     sandbox of Config.Parent) with a fresh scratch directory.
//
// Sandboxes come from a [Backend] (the Docker backend in package shim, or the
// in-memory [MockBackend]); scratch directories come from a [ScratchMaker].
// The Set keeps Config.MinIdle idle sandboxes ready (refilled in the
// background), never holds more than Config.MaxSize (callers wait in arrival
// order when the pool is full), and destroys idle sandboxes unused for longer
// than Config.IdleTTL.
//
// # Error handling
//
// Using a Ref after Put or Destroy is a bug in the caller and panics. Everything
// that can happen in normal operation — a backend error, a sandbox that died
// while paused, a full disk, a closed Set — is a returned error. A sandbox that
// fails to unpause is destroyed and the next idle one is tried; a sandbox that
// fails to pause is destroyed and never re-enters the pool.
//
// # Locking
//
// One mutex (Set.mu) guards the pool's state. Internal functions that touch the
// state hold it for their whole body; their names end in "Locked". No lock is
// ever held across a backend or scratch call: creating a Docker container makes
// dockerd call back into ol-shim's own volume plugin, and a lock held across
// that call would deadlock. Slow work is split into a locked helper that
// changes state and a caller that does the slow part unlocked.
//
// Counters are atomics and latency samples have their own small mutex, so
// reading Stats never waits on the pool.
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
