package scratch

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/open-lambda/ol-shim/scratch/loopfs"
)

// backend is how one kind of volume keeps its data: plain (a directory,
// no limits), fuse (a directory behind the quota file system, served by a
// process of its own) or kernel (an ext4 file system of its own on a loop
// device, package loopfs). The Manager picks a volume's backend once, from
// its record (backendOf), and calls it at each step of the volume's life;
// what is common to all (the record, the mount counts, the refusals while
// mounted) stays the Manager's. The lifecycle, as the Manager drives it:
//
//   - make: at Create, once the options are checked and before the record
//     is written; on error nothing of it is left. A backend whose make is
//     slow (slowMake) is called without the Manager's lock, its name held
//     meanwhile (Manager.creating); the others with it.
//   - path: where the volume is on the host: what dockerd is handed, the
//     directory a container's /host is bound to. Valid before a mount.
//   - mount: at every Mount (the volume's lock held), before the caller is
//     counted: the first one of a FUSE volume starts its server, a kernel
//     volume's file system is mounted again if it is not (after a reboot).
//   - unmount: when the last mount is released (the volume's lock held).
//   - serving: whether the volume's data is reachable at path now.
//   - usage: bytes and inodes used, for status and metrics.
//   - grow: the limits raised (never while mounted; the record is updated
//     by the Manager after).
//   - drop: at Remove, while nothing counts a mount, before the record
//     goes: a refusal leaves the volume whole.
//
// The conformance suite (conformance_test.go) runs every backend through
// the same checks.
type backend interface {
	make(ctx context.Context, m *Manager, v *vol) error
	slowMake() bool
	path(m *Manager, v *vol) string
	mount(ctx context.Context, m *Manager, v *vol) error
	unmount(m *Manager, v *vol) error
	serving(m *Manager, v *vol) bool
	usage(m *Manager, v *vol) (bytes, inodes int64, err error)
	grow(ctx context.Context, m *Manager, v *vol, old, new Options) error
	drop(m *Manager, v *vol) error
}

// backendOf is v's backend, from its record.
func backendOf(v *vol) backend {
	switch {
	case v.rec.Options.Backend == BackendKernel:
		return kernelBackend{}
	case v.rec.Options.Limited():
		return fuseBackend{}
	}
	return plainBackend{}
}

// plainBackend: a directory, Root/volumes/NAME; nothing is mounted.
type plainBackend struct{}

func (plainBackend) make(_ context.Context, m *Manager, v *vol) error { return m.ensureDir(v) }
func (plainBackend) slowMake() bool                                   { return false }
func (plainBackend) path(m *Manager, v *vol) string                   { return m.dataDir(v.rec.Name) }
func (plainBackend) mount(context.Context, *Manager, *vol) error      { return nil }
func (plainBackend) unmount(*Manager, *vol) error                     { return nil }
func (plainBackend) serving(*Manager, *vol) bool                      { return true }
func (plainBackend) usage(m *Manager, v *vol) (int64, int64, error) {
	return walkUsage(m, v)
}
func (plainBackend) grow(_ context.Context, _ *Manager, v *vol, _, _ Options) error {
	return fmt.Errorf("volume %q: %w: it has no size or inode limit to grow", v.rec.Name, ErrInvalid)
}
func (plainBackend) drop(*Manager, *vol) error { return nil }

// walkUsage counts what a volume's data directory holds by a walk.
func walkUsage(m *Manager, v *vol) (int64, int64, error) {
	q, err := NewQuota(m.dataDir(v.rec.Name), 0, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("volume %q: usage: %w", v.rec.Name, err)
	}
	b, i := q.Usage()
	return b, i, nil
}

// fuseBackend: the data directory, Root/volumes/NAME, behind the quota
// file system mounted at Root/mnt/NAME while a container has it.
type fuseBackend struct{}

func (fuseBackend) make(_ context.Context, m *Manager, v *vol) error { return m.ensureDir(v) }
func (fuseBackend) slowMake() bool                                   { return false }
func (fuseBackend) path(m *Manager, v *vol) string                   { return m.mountDir(v.rec.Name) }
func (fuseBackend) mount(_ context.Context, m *Manager, v *vol) error {
	if serving(v.server) {
		return nil
	}
	return m.mountFUSELocked(v)
}
func (fuseBackend) unmount(m *Manager, v *vol) error {
	if v.server == nil {
		return nil
	}
	return m.unmountFUSELocked(v)
}
func (fuseBackend) serving(_ *Manager, v *vol) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return serving(v.server)
}
func (fuseBackend) usage(m *Manager, v *vol) (int64, int64, error) {
	v.mu.Lock()
	srv := v.server
	v.mu.Unlock()
	if serving(srv) {
		b, i, err := srv.usage()
		if err == nil {
			return b, i, nil
		}
		m.log.Warn("volume server does not answer; counting its volume's usage by a walk", "volume", v.rec.Name, "error", err)
	}
	return walkUsage(m, v)
}

// grow: the quota is read from the record at the next mount.
func (fuseBackend) grow(context.Context, *Manager, *vol, Options, Options) error { return nil }
func (fuseBackend) drop(*Manager, *vol) error                                    { return nil }

// kernelBackend: an ext4 file system in Root/images/NAME.img on a loop
// device, mounted at Root/mnt/NAME (while the host is up, whether or not a
// container has it); the volume is its data directory.
type kernelBackend struct{}

func (kernelBackend) make(ctx context.Context, m *Manager, v *vol) error {
	return m.createKernel(ctx, v)
}
func (kernelBackend) slowMake() bool { return true }
func (kernelBackend) path(m *Manager, v *vol) string {
	return filepath.Join(m.mountDir(v.rec.Name), loopfs.DataDir)
}
func (kernelBackend) mount(ctx context.Context, m *Manager, v *vol) error {
	return m.attachKernel(ctx, v)
}

// unmount: the file system stays mounted on the host; only containers'
// binds of it come and go.
func (kernelBackend) unmount(*Manager, *vol) error { return nil }
func (kernelBackend) serving(m *Manager, v *vol) bool {
	return loopfs.Mounted(m.mountDir(v.rec.Name))
}
func (kernelBackend) usage(m *Manager, v *vol) (int64, int64, error) {
	b, i, err := loopfs.Usage(m.mountDir(v.rec.Name), kernelLimits(v.rec.Options))
	if err != nil {
		return 0, 0, fmt.Errorf("volume %q: usage: %w", v.rec.Name, err)
	}
	return b, i, nil
}
func (kernelBackend) grow(ctx context.Context, m *Manager, v *vol, old, o Options) error {
	name := v.rec.Name
	if m.loop == nil {
		return fmt.Errorf("volume %q: kernel backend volume, but this host cannot handle it: %v", name, m.kernelErr)
	}
	if err := m.attachKernel(ctx, v); err != nil {
		return err
	}
	if err := m.checkUnheld(v); err != nil {
		return err
	}
	if err := m.checkHostRoom(o.Size - old.Size); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if err := m.loop.Grow(ctx, m.imagePath(name), m.mountDir(name), kernelLimits(old), kernelLimits(o)); err != nil {
		return fmt.Errorf("volume %q: grow: %w", name, err)
	}
	return nil
}

// drop: the file system goes first; if something on the host still has it
// busy, the volume stays, whole.
func (kernelBackend) drop(m *Manager, v *vol) error {
	if err := m.removeKernel(v); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInUse)
	}
	return nil
}
