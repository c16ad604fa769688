package scratch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/scratch/loopfs"
)

// The kernel backend's part of the Manager: a limited volume whose record
// says BackendKernel is an ext4 file system of its own (package loopfs),
// its image at Root/images/NAME.img, mounted at Root/mnt/NAME from Create to
// Remove (the mount outlives the daemon: nothing of ol-shim serves it), and
// the volume is the directory data in it.

func (m *Manager) imagePath(name string) string { return filepath.Join(m.root, "images", name+".img") }

func kernelLimits(o Options) loopfs.Limits {
	return loopfs.Limits{Bytes: o.Size, Inodes: o.InodeLimit(), UID: o.UID, GID: o.GID, Mode: o.Mode, NoExec: o.NoExec()}
}

// pickBackend fills in o.Backend for a new limited volume, or says why
// the one asked for cannot be had.
func (m *Manager) pickBackend(o *Options) error {
	if !o.Limited() {
		if o.Backend != "" {
			return fmt.Errorf("option backend=%s: %w: only a volume with a size or inode limit has a backend", o.Backend, ErrInvalid)
		}
		return nil
	}
	kerr := m.kernelErr
	if kerr == nil {
		kerr = kernelLimits(*o).Check()
	}
	switch o.Backend {
	case BackendKernel:
		if kerr != nil {
			return fmt.Errorf("option backend=kernel: %w: %v", ErrInvalid, kerr)
		}
	case BackendFUSE:
	default:
		o.Backend = BackendFUSE
		if m.backend == BackendKernel && kerr == nil {
			o.Backend = BackendKernel
		}
	}
	return nil
}

// createKernel makes v's file system and mounts it, if the host has room
// for it (checkHostRoom). Nothing is left on error. The caller holds v's
// name (see Manager.creating), not m.mu.
func (m *Manager) createKernel(ctx context.Context, v *vol) error {
	name := v.rec.Name
	size := v.rec.Options.Size
	m.roomMu.Lock()
	if err := m.checkHostRoom(size); err != nil {
		m.roomMu.Unlock()
		return fmt.Errorf("volume %q: %w", name, err)
	}
	m.pending.Add(size) // until its image exists, and a while after
	m.roomMu.Unlock()
	defer m.pending.Add(-size)
	mnt := m.mountDir(name)
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if err := m.loop.Create(ctx, m.imagePath(name), mnt, kernelLimits(v.rec.Options)); err != nil {
		os.Remove(mnt)
		return fmt.Errorf("volume %q: %w", name, err)
	}
	return nil
}

// checkHostRoom refuses a volume of size bytes when the file system under
// the images could not hold it on top of what every other image may still
// grow by: a sparse image that cannot grow loses writes. The creates in
// flight (Manager.pending) count too, their images not there yet (counted
// twice once they are: the check errs on the safe side).
func (m *Manager) checkHostRoom(size int64) error {
	dir := filepath.Join(m.root, "images")
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	free := int64(st.Bavail) * st.Bsize
	owed := size + m.pending.Load()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n, err := loopfs.Outstanding(filepath.Join(dir, e.Name())); err == nil {
			owed += n
		}
	}
	if owed > free {
		return fmt.Errorf("%w: the file system under %s has %d bytes free, and the kernel backend's volumes, this one included, may take %d more as they fill", errdefs.ErrResourceExhausted, dir, free, owed)
	}
	return nil
}

// attachKernel mounts v's file system again if it is not (after a reboot).
func (m *Manager) attachKernel(ctx context.Context, v *vol) error {
	if m.loop == nil {
		return fmt.Errorf("volume %q: kernel backend volume, but this host cannot mount it: %v", v.rec.Name, m.kernelErr)
	}
	if loopfs.Mounted(m.mountDir(v.rec.Name)) {
		return nil
	}
	if err := os.Mkdir(m.mountDir(v.rec.Name), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("volume %q: %w", v.rec.Name, err)
	}
	if err := m.loop.Attach(ctx, m.imagePath(v.rec.Name), m.mountDir(v.rec.Name), kernelLimits(v.rec.Options)); err != nil {
		return fmt.Errorf("volume %q: %w", v.rec.Name, err)
	}
	m.log.Info("volume's file system mounted again", "volume", v.rec.Name)
	return nil
}

// unheldWait bounds how long checkUnheld waits for a holder to go.
const unheldWait = 2 * time.Second

// checkUnheld refuses (ErrInUse) while v's file system is mounted
// anywhere but at its own mountpoint, in any mount namespace: a
// container's bind, whatever the in-use count says.
//
// Some holders last a moment only: a process starting in a new mount
// namespace (a container's runc, another volume's server) holds a copy of
// every host mount until it pivots and detaches the old root, and a
// container just removed holds its bind until its last process is gone.
// TestFaultKill9UnderLoad met a volume server's copy. So a holder is looked
// for again until unheldWait has passed before the call is refused.
func (m *Manager) checkUnheld(v *vol) error {
	var held []string
	for deadline := time.Now().Add(unheldWait); ; time.Sleep(20 * time.Millisecond) {
		var err error
		held, err = loopfs.Holders(m.imagePath(v.rec.Name), m.mountDir(v.rec.Name))
		if err != nil {
			return fmt.Errorf("volume %q: where its file system is mounted: %w", v.rec.Name, err)
		}
		if len(held) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("volume %q: %w: its file system is still mounted elsewhere (%s)", v.rec.Name, ErrInUse, strings.Join(held[:min(len(held), 3)], "; "))
	}
	return nil
}

// removeKernel unmounts v's file system and deletes its image.
func (m *Manager) removeKernel(v *vol) error {
	if m.loop == nil {
		return fmt.Errorf("volume %q: kernel backend volume, but this host cannot handle it: %v", v.rec.Name, m.kernelErr)
	}
	if err := m.checkUnheld(v); err != nil {
		return err
	}
	if err := m.loop.Remove(m.imagePath(v.rec.Name), m.mountDir(v.rec.Name)); err != nil {
		return fmt.Errorf("volume %q: %w", v.rec.Name, err)
	}
	if err := os.Remove(m.mountDir(v.rec.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %q: remove mountpoint: %w", v.rec.Name, err)
	}
	return nil
}

// probeKernel tries the kernel backend once, for real: a 1M volume made,
// mounted and removed under the state root.
func (m *Manager) probeKernel(ctx context.Context) error {
	lm, err := loopfs.New()
	if err != nil {
		return err
	}
	img, mnt := filepath.Join(m.root, "images", ".probe.img"), filepath.Join(m.root, "mnt", ".probe")
	_ = lm.Remove(img, mnt) // a probe a crash cut short
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	defer os.Remove(mnt)
	if err := lm.Create(ctx, img, mnt, loopfs.Limits{Bytes: loopfs.MinBytes, Inodes: 16, Mode: 0o700}); err != nil {
		return err
	}
	if err := lm.Remove(img, mnt); err != nil {
		return err
	}
	m.loop = lm
	return nil
}
