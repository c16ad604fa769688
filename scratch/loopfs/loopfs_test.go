package loopfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newManager returns a Manager, failing (never skipping) under CI when this
// host cannot make loop volumes.
func newManager(t testing.TB) *Manager {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("loop volumes need root")
		}
		t.Skip("loop volumes need root")
	}
	m, err := New()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("loop volumes: %v", err)
		}
		t.Skipf("loop volumes: %v", err)
	}
	return m
}

// volume makes a volume for the test and removes it at the end.
func volume(t testing.TB, m *Manager, l Limits) (image, data string) {
	t.Helper()
	dir := t.TempDir()
	image, mnt := filepath.Join(dir, "v.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(context.Background(), image, mnt, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Remove(image, mnt); err != nil {
			t.Error(err)
		}
	})
	return image, filepath.Join(mnt, DataDir)
}

func TestExactLimits(t *testing.T) {
	m := newManager(t)
	for _, l := range []Limits{
		{Bytes: 8 << 20, Inodes: 100, Mode: 0o750},
		{Bytes: 64 << 20, Inodes: 10000, Mode: 0o755, UID: 1000, GID: 1000},
		{Bytes: 300 << 20, Inodes: 77777, Mode: 0o700}, // more than one block group
		{Bytes: 1<<20 + 5000, Inodes: 1, Mode: 0o700},  // rounded up to whole blocks
	} {
		t.Run(strconv.FormatInt(l.Bytes, 10), func(t *testing.T) {
			start := time.Now()
			_, data := volume(t, m, l)
			t.Logf("made in %v", time.Since(start))
			b, i, err := Usage(filepath.Dir(data), l)
			if err != nil || b != 0 || i != 0 {
				t.Fatalf("usage of a new volume: %d bytes, %d inodes, %v; want 0, 0", b, i, err)
			}
			var st unix.Stat_t
			if err := unix.Stat(data, &st); err != nil || int(st.Uid) != l.UID || int(st.Gid) != l.GID || st.Mode&0o7777 != l.Mode {
				t.Errorf("root: uid %d gid %d mode %o, %v; want %d %d %o", st.Uid, st.Gid, st.Mode&0o7777, err, l.UID, l.GID, l.Mode)
			}
			// Exactly Inodes files fit, the next fails with ENOSPC.
			var n int64
			for ; ; n++ {
				fd, err := unix.Open(filepath.Join(data, "f"+strconv.FormatInt(n, 10)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
				if err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("create #%d: %v, want ENOSPC", n, err)
					}
					break
				}
				unix.Close(fd)
			}
			if n != l.Inodes {
				t.Errorf("%d empty files fit, want exactly the limit %d", n, l.Inodes)
			}
			// Remove them; now exactly Bytes of data fit in a file.
			for i := int64(0); i < n; i++ {
				os.Remove(filepath.Join(data, "f"+strconv.FormatInt(i, 10)))
			}
			// The directory keeps the blocks its names took (ext4 does not
			// shrink directories): that is usage too.
			b0, _, _ := Usage(filepath.Dir(data), l)
			f, err := os.Create(filepath.Join(data, "big"))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, BlockSize)
			var wrote int64
			for {
				k, err := f.Write(buf)
				wrote += int64(k)
				if err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("write: %v, want ENOSPC", err)
					}
					break
				}
			}
			f.Close()
			// Extent blocks of the file and the directory's own growth
			// count: the data written is the limit less those few blocks.
			b, _, _ = Usage(filepath.Dir(data), l)
			if want := l.blocks() * BlockSize; b != want {
				t.Errorf("usage when full: %d bytes, want the limit %d (file data %d)", b, want, wrote)
			}
			if room := l.blocks()*BlockSize - b0; wrote > room || wrote < room-64*BlockSize {
				t.Errorf("a volume with %d bytes free took %d bytes of data", room, wrote)
			}
		})
	}
}
