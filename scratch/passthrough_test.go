package scratch

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needPassthrough fails (in CI) or skips when the kernel gives no FUSE
// passthrough: this machine runs Linux 6.18, where it must be on.
func needPassthrough(t *testing.T, f *qfs) {
	t.Helper()
	if f.srv.Passthrough == "on" {
		return
	}
	var u unix.Utsname
	unix.Uname(&u)
	if os.Getenv("CI") != "" {
		t.Fatalf("FUSE passthrough %s (kernel %s)", f.srv.Passthrough, unix.ByteSliceToString(u.Release[:]))
	}
	t.Skipf("FUSE passthrough %s", f.srv.Passthrough)
}

// waitClosed waits until the server has seen every file of f closed: the
// kernel sends RELEASE after close returns, and until then a reader of a
// file just written is not given passthrough (it shares the inode with a
// cached open).
func waitClosed(t *testing.T, f *qfs) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		f.srv.io.mu.Lock()
		n := len(f.srv.io.m)
		f.srv.io.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d inodes still open in the server 5 s after their last close", n)
		}
	}
}

// TestPassthroughReadsSkipServer: a read-only open's reads are done by the
// kernel (no READ reaches the server) and return the file's data, mmap
// included.
func TestPassthroughReadsSkipServer(t *testing.T) {
	f := mountPassthrough(t, 64*mib, 0)
	needPassthrough(t, f)
	data := bytes.Repeat([]byte("passthrough!"), 100000)
	if err := os.WriteFile(f.path("r"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, f)
	before := f.srv.io.serverReads.Load()
	got, err := os.ReadFile(f.path("r"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, %v; want %d", len(got), err, len(data))
	}
	file, err := os.Open(f.path("r"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	m, err := unix.Mmap(int(file.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of a passthrough file: %v", err)
	}
	if !bytes.Equal(m, data) {
		t.Error("mmap of a passthrough file: other data")
	}
	unix.Munmap(m)
	if n := f.srv.io.serverReads.Load() - before; n != 0 {
		t.Errorf("%d READ requests reached the server for read-only opens; want 0 (passthrough)", n)
	}
}

// TestPassthroughDropsWritersCache: with passthrough on, the kernel's
// cache of a file written through the mount is dropped once its last
// writer closes, not in the next reader's open (the kernel refuses to keep
// it for a passthrough open, and dropping 1 GiB of it there cost that
// open 60-120 ms). The cache is looked at through an open that keeps it
// (a write-only one), with cachestat.
func TestPassthroughDropsWritersCache(t *testing.T) {
	f := mountPassthrough(t, 64*mib, 0)
	needPassthrough(t, f)
	data := bytes.Repeat([]byte("cached write"), 2<<20/12)
	if err := os.WriteFile(f.path("w"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cached := func() uint64 {
		w, err := os.OpenFile(f.path("w"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		var st unix.Cachestat_t
		if err := unix.Cachestat(uint(w.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
			t.Fatalf("cachestat: %v", err)
		}
		return st.Cache
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := cached()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pages of a closed file still cached through the mount 5 s after its writer closed; want 0", n)
		}
	}
	waitClosed(t, f)
	got, err := os.ReadFile(f.path("w"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through passthrough: %d bytes, %v; want %d", len(got), err, len(data))
	}
}

// TestPassthroughWriterStaysAccounted is the attack of a writer opened
// while a read-only passthrough open of the same file is live: the kernel
// wants every open of an inode in passthrough mode to be a passthrough
// open on the same backing file, and a writer given one writes straight to
// the backing file, past the quota. The writer is refused (ETXTBSY) until
// the reader closes, an O_TRUNC writer truncates nothing, and then the
// writer is held to the quota.
func TestPassthroughWriterStaysAccounted(t *testing.T) {
	f := mountPassthrough(t, 8*mib, 0)
	needPassthrough(t, f)
	if err := f.write("f", 4096); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, f)
	reader, err := os.Open(f.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{'w'}, mib)
	fill := func(w *os.File) (int64, error) {
		var written int64
		for i := 0; i < 16; i++ {
			n, err := w.WriteAt(chunk, int64(i)*mib)
			written += int64(n)
			if err != nil {
				return written, err
			}
		}
		return written, nil
	}
	for _, flags := range []int{os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC} {
		w, err := os.OpenFile(f.path("f"), flags, 0)
		if err == nil {
			n, werr := fill(w)
			w.Close()
			t.Errorf("open(flags %#x) beside a passthrough reader: opened; wrote %d bytes into an 8 MiB volume (%v)", flags, n, werr)
		} else if !errors.Is(err, syscall.ETXTBSY) {
			t.Errorf("open(flags %#x) beside a passthrough reader: %v, want ETXTBSY", flags, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(f.dir+"/f", &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 4096 {
		t.Errorf("the file is %d bytes after refused writers, want 4096 (an O_TRUNC open truncated it?)", st.Size)
	}
	if b, _ := f.usage(); b > 8*mib {
		t.Errorf("usage %d, over the 8 MiB quota", b)
	}
	buf := make([]byte, 4096)
	if n, err := reader.ReadAt(buf, 0); n != 4096 || buf[0] != 'x' {
		t.Errorf("passthrough reader: %d bytes %q..., %v", n, buf[:1], err)
	}
	reader.Close()

	// With the reader gone, a writer opens and is held to the quota.
	var w *os.File
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// The kernel sends RELEASE after close returns.
		if w, err = os.OpenFile(f.path("f"), os.O_WRONLY, 0); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("a writer after the reader closed: %v", err)
	}
	n, werr := fill(w)
	w.Close()
	if !errors.Is(werr, syscall.ENOSPC) || n > 8*mib {
		t.Errorf("16 MiB into an 8 MiB volume: %d bytes written, %v; want ENOSPC at the limit", n, werr)
	}
	if b, _ := f.usage(); b > 8*mib {
		t.Errorf("usage %d, over the 8 MiB quota", b)
	}
}

// TestPassthroughMixedOpens: readers share passthrough; a reader of a file
// open for writing reads through the server; each reads current data.
func TestPassthroughMixedOpens(t *testing.T) {
	f := mountPassthrough(t, 64*mib, 0)
	needPassthrough(t, f)
	if err := os.WriteFile(f.path("m"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func(what string, file *os.File) string {
		t.Helper()
		buf := make([]byte, 16)
		n, err := file.ReadAt(buf, 0)
		if err != nil && n == 0 {
			t.Fatalf("%s: read: %v", what, err)
		}
		return string(buf[:n])
	}
	open := func(what string, flags int) *os.File {
		t.Helper()
		file, err := os.OpenFile(f.path("m"), flags, 0)
		if err != nil {
			t.Fatalf("%s: open: %v", what, err)
		}
		return file
	}
	// A writer first, then readers: they read through the server and see
	// each write (tail -f of a log being written).
	w := open("writer", os.O_RDWR)
	r1 := open("reader beside a writer", os.O_RDONLY)
	r2 := open("second reader beside a writer", os.O_RDONLY)
	before := f.srv.io.serverReads.Load()
	w.WriteAt([]byte("two"), 0)
	for _, r := range []*os.File{r1, r2} {
		if got := read("reader beside a writer", r); got != "two" {
			t.Errorf("reader beside a writer reads %q, want two", got)
		}
	}
	if f.srv.io.serverReads.Load() == before {
		t.Error("readers beside a writer: no READ reached the server (passthrough beside a writer?)")
	}
	w.Close()
	r1.Close()
	r2.Close()

	// Then readers alone share passthrough, and read the last write.
	waitClosed(t, f)
	before = f.srv.io.serverReads.Load()
	r3 := open("passthrough reader", os.O_RDONLY)
	r4 := open("second passthrough reader", os.O_RDONLY)
	for _, r := range []*os.File{r3, r4} {
		if got := read("passthrough reader", r); got != "two" {
			t.Errorf("passthrough reader reads %q, want two", got)
		}
	}
	if n := f.srv.io.serverReads.Load() - before; n != 0 {
		t.Errorf("%d READs reached the server for readers alone", n)
	}
	r3.Close()
	r4.Close()
}

// dropCache drops what the kernel cached of the data of the file at path
// (the write left it there), so that the next read is the file system's.
func dropCache(t *testing.T, path string) {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := unix.Fadvise(int(file.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestPassthroughOffFallsBack: with passthrough asked for but unavailable
// (as on a kernel before 6.9), the mount says why, and reads go through
// the server and return the data.
func TestPassthroughOffFallsBack(t *testing.T) {
	noPassthrough = true
	f := mountPassthrough(t, 64*mib, 0)
	noPassthrough = false
	if f.srv.Passthrough == "on" {
		t.Fatal("passthrough on after it was turned off")
	}
	data := bytes.Repeat([]byte("x"), 3*mib)
	if err := os.WriteFile(f.path("r"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	dropCache(t, f.path("r"))
	before := f.srv.io.serverReads.Load()
	if got, err := os.ReadFile(f.path("r")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back without passthrough: %d bytes, %v", len(got), err)
	}
	if f.srv.io.serverReads.Load() == before {
		t.Error("no READ reached the server with passthrough off")
	}
}

// TestPassthroughOffByDefault: a volume made without the option reads
// through its server, and a writer beside a reader is never refused.
func TestPassthroughOffByDefault(t *testing.T) {
	f := mountQuota(t, 64*mib, 0)
	if !strings.HasPrefix(string(f.srv.Passthrough), "off: not asked for") {
		t.Errorf("passthrough without the option: %q", f.srv.Passthrough)
	}
	if err := f.write("log", 10); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, f)
	r, err := os.Open(f.path("log"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := os.OpenFile(f.path("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("a writer beside a reader on a volume without passthrough: %v", err)
	}
	w.Close()
}

// TestRereadFromCache: without passthrough, a file read back after it was
// written, or read again, costs no READ round trip: every change comes
// through the mount, so the kernel keeps its cache of the data (explicit
// data cache control: it does not drop it each time a write moves the
// file's mtime, which cost the read after a write a READ per 128 KiB). What
// it keeps stays right: a write, a hole punched and a truncate through the
// mount are read back as they are, by a handle opened before and one
// opened after.
func TestRereadFromCache(t *testing.T) {
	f := mountQuota(t, 64*mib, 0)
	data := bytes.Repeat([]byte("cached.."), 2*mib/8)
	if err := os.WriteFile(f.path("r"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(f.path("r"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	readBack := func(what string, want []byte) {
		t.Helper()
		if got, err := os.ReadFile(f.path("r")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes (%v), want %d as written", what, len(got), err, len(want))
		}
		got := make([]byte, len(data)+1)
		n, _ := held.ReadAt(got, 0)
		if !bytes.Equal(got[:n], want) {
			t.Fatalf("%s: a handle opened before reads %d bytes, other than the %d written", what, n, len(want))
		}
	}
	before := f.srv.io.serverReads.Load()
	readBack("read after the write", data)
	readBack("second read", data)
	if n := f.srv.io.serverReads.Load() - before; n != 0 {
		t.Errorf("%d READ requests reached the server for a file read back after it was written, then again; want 0", n)
	}
	w, err := os.OpenFile(f.path("r"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[5000:], "changed")
	if _, err := w.WriteAt([]byte("changed"), 5000); err != nil {
		t.Fatal(err)
	}
	readBack("after a write", data)
	if err := unix.Fallocate(int(w.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8192, 8192); err != nil {
		t.Fatal(err)
	}
	clear(data[8192:16384])
	readBack("after a hole punched", data)
	w.Close()
	if err := os.Truncate(f.path("r"), 100); err != nil {
		t.Fatal(err)
	}
	readBack("after a truncate", data[:100])
}
