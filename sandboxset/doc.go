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
// Sandboxes come from a [Backend] (the Docker backend in package shim/docker, or the
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
// One mutex (Set.mu) guards the pool's state. No lock is ever held across a
// backend or scratch call: creating a Docker container makes dockerd call back
// into ol-shim's own volume plugin, and a lock held across that call would
// deadlock. Slow work is split into a helper that changes state under the lock
// and a caller that does the slow part unlocked. One naming rule says which
// helper is which:
//
//   - a name ending in "Locked" (releaseLocked, refillLocked, cutIdleLocked)
//     expects Set.mu held by its caller and never takes it;
//   - every other method takes Set.mu itself when it needs it, for its whole
//     body (tryAcquire, shrinkState, expireState, closeState), and must be
//     called with Set.mu not held.
//
// # Files
//
// set.go holds the Set and the acquire/release path; lifecycle.go a
// sandbox's creation, pause and destruction; manage.go what operators do to a
// pool (warm, shrink, adopt, evict, expire); ref.go the Ref; config.go the
// Config, names and outcomes.
//
// Counters are atomics and latency samples have their own small mutex, so
// reading Stats never waits on the pool.
package sandboxset
