package scratch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// The backend conformance suite: one set of checks that every volume
// backend passes, through the Manager's own calls as the plugin makes
// them (create, mount, write, unmount, a restart of the Manager, grow,
// remove). A backend is a kind of volume: plain (no limits: a directory),
// fuse and kernel (quota'd). What a backend has not got (a plain volume's
// limits) is not checked on it; everything else is.
type conformanceBackend struct {
	name    string
	opts    map[string]string // of a volume of this backend: 8M and 64 inodes where limited
	limited bool
}

var conformanceBackends = []conformanceBackend{
	{"plain", map[string]string{}, false},
	{"fuse", map[string]string{OptSize: "8M", OptInodes: "64", OptBackend: BackendFUSE}, true},
	{"kernel", map[string]string{OptSize: "8M", OptInodes: "64", OptBackend: BackendKernel}, true},
}

func TestBackendConformance(t *testing.T) {
	needFUSE(t)
	for _, b := range conformanceBackends {
		t.Run(b.name, func(t *testing.T) {
			root := t.TempDir()
			if b.name == "kernel" {
				cleanupKernel(t, root)
			}
			open := func() *Manager {
				m, err := Open(context.Background(), Config{Root: root, Backend: BackendAuto})
				if err != nil {
					t.Fatal(err)
				}
				if b.name == "kernel" && m.loop == nil {
					m.Close()
					if os.Getenv("CI") != "" {
						t.Fatalf("the kernel backend cannot work here: %v", m.kernelErr)
					}
					t.Skipf("the kernel backend cannot work here: %v", m.kernelErr)
				}
				return m
			}
			m := open()
			const vol = "conf"
			must(t, m.Create(vol, b.opts))
			st, err := m.Get(vol)
			must(t, err)
			if b.limited && st.Options.Backend != b.name {
				t.Fatalf("volume made with backend %q", st.Options.Backend)
			}
			// Mounted, it takes data; the quotas are exact.
			p, err := m.Mount(vol, "c1")
			must(t, err)
			must(t, os.WriteFile(filepath.Join(p, "keep"), []byte("kept across remounts and restarts\n"), 0o644))
			if b.limited {
				checkExactQuota(t, p, 8<<20, 64)
			}
			must(t, m.Unmount(vol, "c1"))

			// Across a remount and a restart of the Manager, data stays.
			m.Close()
			m = open()
			defer m.Close()
			p, err = m.Mount(vol, "c2")
			must(t, err)
			if b, err := os.ReadFile(filepath.Join(p, "keep")); err != nil || string(b) != "kept across remounts and restarts\n" {
				t.Errorf("after a restart: %q, %v", b, err)
			}
			// Grow: refused while mounted, exact after.
			if b.limited {
				if _, err := m.Grow(context.Background(), vol, 16<<20, 128); !errors.Is(err, ErrInUse) {
					t.Errorf("grow while mounted: %v; want in use", err)
				}
			}
			must(t, m.Unmount(vol, "c2"))
			if b.limited {
				if _, err := m.Grow(context.Background(), vol, 16<<20, 128); err != nil {
					t.Fatalf("grow: %v", err)
				}
				p, err = m.Mount(vol, "c3")
				must(t, err)
				if b, err := os.ReadFile(filepath.Join(p, "keep")); err != nil || len(b) == 0 {
					t.Errorf("after grow: %q, %v", b, err)
				}
				checkExactQuota(t, p, 16<<20, 128)
				must(t, m.Unmount(vol, "c3"))
			}
			// Remove: refused while mounted, then nothing left.
			_, err = m.Mount(vol, "c4")
			must(t, err)
			if err := m.Remove(vol); !errors.Is(err, ErrInUse) {
				t.Errorf("remove while mounted: %v; want in use", err)
			}
			must(t, m.Unmount(vol, "c4"))
			must(t, m.Remove(vol))
			if _, err := m.Get(vol); err == nil {
				t.Errorf("the volume is still there after remove")
			}
			for _, d := range []string{m.dataDir(vol), m.mountDir(vol), filepath.Join(root, "images", vol+".img")} {
				if _, err := os.Lstat(d); err == nil {
					t.Errorf("%s left after remove", d)
				}
			}
		})
	}
}

// checkExactQuota fills dir: the files and bytes that fit are the limits'
// (less what is there already), the next one fails with ENOSPC (EDQUOT
// counts too); then it removes what it wrote.
func checkExactQuota(t *testing.T, dir string, bytes, inodes int64) {
	t.Helper()
	var made []string
	defer func() {
		for _, f := range made {
			os.Remove(f)
		}
	}()
	full := func(err error) bool { return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) }
	// Inodes: empty files until refused.
	n := int64(0)
	for ; n <= inodes+1; n++ {
		f := filepath.Join(dir, "i"+strconv.FormatInt(n, 10))
		fd, err := os.OpenFile(f, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			if !full(err) {
				t.Fatalf("create #%d: %v", n, err)
			}
			break
		}
		fd.Close()
		made = append(made, f)
	}
	// The volume holds "keep" (one inode) already: inodes-1 more fit.
	if n != inodes-1 {
		t.Errorf("%d empty files fit beside one file; want %d (an inode limit of %d)", n, inodes-1, inodes)
	}
	for _, f := range made {
		os.Remove(f)
	}
	made = nil
	// Bytes: one file until refused; within a few blocks of the limit
	// (directories and the kept file use some).
	f := filepath.Join(dir, "big")
	made = append(made, f)
	w, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	var wrote int64
	for wrote < 2*bytes {
		k, err := w.Write(buf)
		wrote += int64(k)
		if err != nil {
			if !full(err) {
				t.Fatalf("write: %v", err)
			}
			break
		}
	}
	w.Close()
	if wrote > bytes || wrote < bytes-256<<10 {
		t.Errorf("wrote %d bytes before the volume was full; want just under its limit, %d", wrote, bytes)
	}
}
