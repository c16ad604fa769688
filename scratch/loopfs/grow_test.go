package loopfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// fillCheck checks that the volume whose data directory is data has
// exactly l's limits left to fill: as many more files as its inode limit
// leaves, then, with those removed, blocks until its usage is the limit.
// What it wrote is removed.
func fillCheck(t *testing.T, data string, l Limits) {
	t.Helper()
	mnt := filepath.Dir(data)
	_, i0, err := Usage(mnt, l)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "fill")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var n int64
	for ; ; n++ {
		fd, err := unix.Open(filepath.Join(dir, strconv.FormatInt(n, 10)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("create #%d: %v, want ENOSPC", n, err)
			}
			break
		}
		unix.Close(fd)
	}
	if want := l.Inodes - i0 - 1; n != want { // the directory took one
		t.Errorf("%d more files fit, want %d (limit %d, used %d)", n, want, l.Inodes, i0+1)
	}
	for i := int64(0); i < n; i++ {
		os.Remove(filepath.Join(dir, strconv.FormatInt(i, 10)))
	}
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Until ENOSPC, twice: a full file system without a journal reports
	// it while blocks are still held for writes not yet allocated.
	buf := make([]byte, BlockSize)
	for range 2 {
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("write: %v, want ENOSPC", err)
				}
				break
			}
		}
		f.Sync()
	}
	if b, _, _ := Usage(mnt, l); b != l.blocks()*BlockSize {
		t.Errorf("usage when full: %d bytes, want the limit %d", b, l.blocks()*BlockSize)
	}
}

func TestGrow(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	l := Limits{Bytes: 8 << 20, Inodes: 100, Mode: 0o755}
	image, data := volume(t, m, l)
	mnt := filepath.Dir(data)
	content := bytes.Repeat([]byte("ol-shim "), 300000) // 2.4 MB
	if err := os.WriteFile(filepath.Join(data, "kept"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := os.Mkdir(filepath.Join(data, "d"+strconv.Itoa(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b0, i0, _ := Usage(mnt, l)
	check := func(l Limits) {
		t.Helper()
		if b, i, err := Usage(mnt, l); err != nil || b != b0 || i != i0 {
			t.Fatalf("usage after grow: %d bytes, %d inodes, %v; want %d, %d", b, i, err, b0, i0)
		}
		if got, err := os.ReadFile(filepath.Join(data, "kept")); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("data after grow: %d bytes, %v; want the %d written", len(got), err, len(content))
		}
		fillCheck(t, data, l)
	}

	// Bytes only, then past one block group (32768 blocks), then inodes
	// only, which takes new block groups for their inode tables.
	steps := []Limits{
		{Bytes: 20 << 20, Inodes: 100},
		{Bytes: 300 << 20, Inodes: 150},
		{Bytes: 300 << 20, Inodes: 5000},
	}
	for _, nl := range steps {
		nl.Mode = l.Mode
		if err := m.Grow(ctx, image, mnt, l, nl); err != nil {
			t.Fatalf("grow %+v to %+v: %v", l, nl, err)
		}
		l = nl
		check(l)
	}

	// A remount (as after a reboot) gives the same limits.
	if err := m.unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(ctx, image, mnt, Limits{}); err != nil {
		t.Fatal(err)
	}
	check(l)

	// Shrinking is refused, and so is a grow while the volume is open.
	if err := m.Grow(ctx, image, mnt, l, Limits{Bytes: 200 << 20, Inodes: 5000}); err == nil {
		t.Error("shrink: no error")
	}
	f, err := os.Open(filepath.Join(data, "kept"))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Grow(ctx, image, mnt, l, Limits{Bytes: 400 << 20, Inodes: 5000, Mode: l.Mode})
	f.Close()
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("grow while a file is open: %v, want EBUSY", err)
	}
	check(l)
}
