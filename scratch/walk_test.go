package scratch

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUsageWalkDeeperThanPathMax: a tree whose paths are longer than
// PATH_MAX (made with *at calls, as a sandbox can) is counted whole.
func TestUsageWalkDeeperThanPathMax(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	must(t, err)
	name := strings.Repeat("d", 200)
	const depth = 40 // 40 x 201 bytes: 8 KiB of path, twice PATH_MAX
	for range depth {
		must(t, unix.Mkdirat(fd, name, 0o755))
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		must(t, err)
		unix.Close(fd)
		fd = next
	}
	f, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
	must(t, err)
	unix.Write(f, make([]byte, 10000))
	unix.Close(f)
	unix.Close(fd)
	q, err := NewQuota(dir, 0, 0)
	if err != nil {
		t.Fatalf("usage of a tree deeper than PATH_MAX: %v", err)
	}
	if _, inodes := q.Usage(); inodes != depth+1 {
		t.Errorf("counted %d inodes, want %d", inodes, depth+1)
	}
}

// TestUsageWalkStaysInside: while the walk runs, a directory of the volume
// is swapped for a symlink to a host directory, again and again. The walk
// never counts what is outside: the host directory's big file.
func TestUsageWalkStaysInside(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(host, "big"), make([]byte, 64<<20), 0o644))
	for i := range 50 {
		must(t, os.MkdirAll(filepath.Join(dir, "a", strings.Repeat("x", i%7+1)), 0o755))
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "a.real"))
			os.Symlink(host, filepath.Join(dir, "a"))
			os.Remove(filepath.Join(dir, "a"))
			os.Rename(filepath.Join(dir, "a.real"), filepath.Join(dir, "a"))
		}
	}()
	defer func() { stop.Store(true); <-done }()
	for i := 0; i < 2000; i++ {
		q, err := NewQuota(dir, 0, 0)
		if err != nil {
			continue // a name gone mid-walk: an error is fine, a wrong count is not
		}
		if b, _ := q.Usage(); b >= 64<<20 {
			t.Fatalf("walk %d counted %d bytes: it followed the symlink to the host directory", i, b)
		}
	}
}
