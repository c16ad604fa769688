package scratch

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fillTo writes into dir until ENOSPC (twice, with a sync between: a full
// file system without a journal refuses while blocks are held for writes
// not yet allocated) and returns the bytes written.
func fillTo(t *testing.T, dir string) int64 {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
	must(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	var n int64
	for range 2 {
		for {
			k, err := f.Write(buf)
			n += int64(k)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
					t.Fatalf("write: %v, want ENOSPC", err)
				}
				break
			}
		}
		f.Sync()
	}
	return n
}

func TestGrowVolume(t *testing.T) {
	root := t.TempDir()
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer func() { m.Close() }()
	ctx := context.Background()
	for _, backend := range []string{BackendKernel, BackendFUSE} {
		t.Run(backend, func(t *testing.T) {
			name := "grow-" + backend
			must(t, m.Create(name, map[string]string{OptSize: "4M", OptBackend: backend}))
			dir, err := m.Mount(name, "c1")
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "kept"), []byte("data"), 0o644))
			if n := fillTo(t, dir); n > 4<<20 {
				t.Fatalf("4M volume took %d bytes", n)
			}
			// Mounted: refused, and nothing changes.
			if _, err := m.Grow(ctx, name, 16<<20, 0); !errors.Is(err, ErrInUse) {
				t.Fatalf("grow while mounted: %v, want in use", err)
			}
			must(t, m.Unmount(name, "c1"))
			for _, bad := range [][2]int64{{2 << 20, 0}, {0, 10}, {0, 0}, {-1, 0}} {
				if _, err := m.Grow(ctx, name, bad[0], bad[1]); err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("grow to size %d, inodes %d: %v, want an error naming the volume", bad[0], bad[1], err)
				}
			}
			st, err := m.Grow(ctx, name, 16<<20, 0)
			must(t, err)
			if st.Options.Size != 16<<20 || st.Options.InodeLimit() != 4096 || st.Options.Backend != backend {
				t.Errorf("status after grow: %+v", st.Options)
			}
			// The record holds it: a Manager opened again has it too.
			must(t, m.Close())
			m = kernelManager(t, root)
			if st, err := m.Get(name); err != nil || st.Options.Size != 16<<20 {
				t.Fatalf("after reopening: %+v, %v", st.Options, err)
			}
			dir, err = m.Mount(name, "c2")
			must(t, err)
			if b, err := os.ReadFile(filepath.Join(dir, "kept")); err != nil || string(b) != "data" {
				t.Fatalf("data after grow: %q, %v", b, err)
			}
			must(t, os.Remove(filepath.Join(dir, "fill")))
			n := fillTo(t, dir)
			if n > 16<<20 || n < 15<<20 {
				t.Errorf("16M volume took %d bytes of data", n)
			}
			st, err = m.Get(name)
			must(t, err)
			if st.BytesUsed > 16<<20 || st.BytesUsed < 16<<20-64<<10 {
				t.Errorf("usage when full: %d, want about the limit %d", st.BytesUsed, 16<<20)
			}
			must(t, m.Unmount(name, "c2"))
			must(t, m.Remove(name))
		})
	}
	// A volume without limits has nothing to grow.
	must(t, m.Create("plain", nil))
	if _, err := m.Grow(ctx, "plain", 1<<30, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("grow a volume without limits: %v, want invalid", err)
	}
	if _, err := m.Grow(ctx, "nosuch", 1<<30, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("grow a volume that does not exist: %v, want not found", err)
	}
}

// holdInOtherNamespace binds dir in a mount namespace of its own, held by
// a process, as a container's bind of a volume is: the daemon's in-use
// count knows nothing of it.
func holdInOtherNamespace(t *testing.T, dir string) {
	t.Helper()
	target := t.TempDir()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind "$1" "$2" && echo ready && exec sleep 60`, "sh", dir, target)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("bind in another mount namespace: %q, %v", buf, err)
	}
}

// TestGrowRemoveAskTheKernel: a kernel volume whose file system another
// mount namespace still has mounted (a container's bind, while the
// daemon's count says none: a count reset at a restart) is neither grown
// (resize2fs of a live file system, then mounted twice) nor removed (its
// image deleted under a live mount, its loop device leaked).
func TestGrowRemoveAskTheKernel(t *testing.T) {
	root := t.TempDir()
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer func() { m.Close() }()
	ctx := context.Background()
	must(t, m.Create("held", map[string]string{OptSize: "4M", OptBackend: BackendKernel}))
	dir, err := m.Mount("held", "c1")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "kept"), []byte("data"), 0o644))
	holdInOtherNamespace(t, dir)
	must(t, m.Unmount("held", "c1")) // the count says no one has it
	if _, err := m.Grow(ctx, "held", 16<<20, 0); !errors.Is(err, ErrInUse) {
		t.Errorf("grow of a volume mounted in another namespace: %v; want in use", err)
	}
	if err := m.Remove("held"); !errors.Is(err, ErrInUse) {
		t.Errorf("remove of a volume mounted in another namespace: %v; want in use", err)
	}
	if _, err := os.Stat(m.imagePath("held")); err != nil {
		t.Errorf("the image of a volume still mounted: %v", err)
	}
}

// TestGrowIgnoresPropagatedCopies: where the state root is on a shared
// mount (/ under systemd), every mount namespace made as a slave of the
// host's (a systemd service's) holds a propagated copy of each volume's
// mount. Those go when the volume's own mount goes: they are not holders,
// and grow and remove go ahead.
func TestGrowIgnoresPropagatedCopies(t *testing.T) {
	root := t.TempDir()
	if err := syscall.Mount(root, root, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("", root, "", syscall.MS_SHARED, ""); err != nil {
		syscall.Unmount(root, syscall.MNT_DETACH)
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(root, syscall.MNT_DETACH) })
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer func() { m.Close() }()
	ctx := context.Background()
	must(t, m.Create("prop", map[string]string{OptSize: "4M", OptBackend: BackendKernel}))
	slave := exec.Command("unshare", "-m", "--propagation", "slave", "sh", "-c", "echo ready; exec sleep 60")
	out, err := slave.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	must(t, slave.Start())
	t.Cleanup(func() { slave.Process.Kill(); slave.Wait() })
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Grow(ctx, "prop", 8<<20, 0); err != nil {
		t.Errorf("grow with a propagated copy in a slave namespace: %v", err)
	}
	if err := m.Remove("prop"); err != nil {
		t.Errorf("remove with a propagated copy in a slave namespace: %v", err)
	}
}
