package scratch

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Reads of a quota'd volume go to the kernel's FUSE passthrough (Linux
// 6.9 and later, as root): the kernel reads the backing file itself, with
// no round trip to the server. Writes never do: they must reach
// quotaFile.Write to be accounted.
//
// The kernel keeps one I/O mode per inode: while a file is open with
// passthrough, every other open of it must be a passthrough open too, on
// the same backing file (else the open fails with EIO), and a passthrough
// open is refused while a cached one exists (ETXTBSY). A writer given
// passthrough would write straight to the backing file, past the quota:
// the attack of TestPassthroughWriterStaysAccounted. So:
//   - a read-only open of a regular file gets passthrough (ptFile) when
//     the inode has no writer and no cached open; further read-only opens
//     share it;
//   - a read-only open of an inode open for writing is cached, through
//     the server;
//   - a write open of an inode held by passthrough readers is refused with
//     ETXTBSY ("text file busy", what the kernel answers for a conflict of
//     I/O modes) until they close; otherwise it is cached, and every write
//     reaches quotaFile.Write, accounted. A volume made without
//     passthrough=true never refuses a writer, and tracks nothing.
// quotaFile has no PassthroughFd method, so go-fuse never gives it the
// inode's backing file.

// ioKind is how one open file of a quota'd volume does its I/O.
type ioKind uint8

const (
	ioCached      ioKind = iota // through the server and the page cache
	ioPassthrough               // by the kernel, on the backing file
)

// ioModes tracks, per inode, the opens of each kind.
type ioModes struct {
	on atomic.Bool // passthrough works on this mount (probed at mount)
	mu sync.Mutex
	m  map[uint64]*ioCount
	// closed is closed (and replaced) at every close, for opens waiting
	// for a RELEASE in flight.
	closed chan struct{}
	// serverReads counts READ requests the server answered (the tests'
	// evidence that passthrough reads never come to it).
	serverReads atomic.Int64
	// releasing counts RELEASEs go-fuse has not finished (see
	// releaseTracker), guarded by mu.
	releasing int
}

// releaseTracker is the mount's go-fuse file system with every RELEASE
// counted until go-fuse has finished it. go-fuse (v2.12.1) drops a
// reference to the inode's backing file at the end of the RELEASE of any
// file of the inode, cached ones included, which never took one: after
// quotaFile.Release has counted a cached file closed, and before go-fuse
// drops that reference, a passthrough open of the inode may register a
// backing file, which that drop then unregisters while the reader still
// uses it. The next reader then gets another backing file, which the
// kernel refuses beside the first: its open fails with EIO
// (TestPassthroughMixedOpens, with -race, about one run in a hundred). So
// a first passthrough open of an inode waits until no RELEASE is in flight.
type releaseTracker struct {
	fuse.RawFileSystem
	io *ioModes
}

func (t *releaseTracker) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if !t.io.on.Load() {
		// No passthrough on this mount (set once, at mount): no backing
		// files, nothing to wait for, and no lock or wake-up per close.
		t.RawFileSystem.Release(cancel, in)
		return
	}
	t.io.mu.Lock()
	t.io.releasing++
	t.io.mu.Unlock()
	t.RawFileSystem.Release(cancel, in)
	t.io.mu.Lock()
	t.io.releasing--
	t.io.wake()
	t.io.mu.Unlock()
}

// wake wakes the opens waiting for a close. io.mu is held.
func (io *ioModes) wake() {
	close(io.closed)
	io.closed = make(chan struct{})
}

type ioCount struct{ passthrough, cached, writers int }

// open decides how an open of inode ino does its I/O, and counts it.
// It returns the kind and the FUSE open flags for it, or ETXTBSY for a
// writer of an inode open with passthrough.
func (io *ioModes) open(ino uint64, write, regular bool) (ioKind, uint32, syscall.Errno) {
	if !io.on.Load() {
		// Every open is cached: nothing to decide, nothing to count.
		return ioCached, fuse.FOPEN_KEEP_CACHE, 0
	}
	io.mu.Lock()
	defer io.mu.Unlock()
	c := io.m[ino]
	if c == nil {
		c = &ioCount{}
		io.m[ino] = c
	}
	// The kernel sends RELEASE after close returns, so a file written and
	// closed just before this open may still count as open: a reader
	// waits a moment for that, rather than read through the server. The
	// first passthrough open of an inode also waits for go-fuse to finish
	// every RELEASE in flight (see releaseTracker), and is cached if that
	// takes longer.
	for deadline := time.Now().Add(releaseWait); !write && regular && c.passthrough == 0 && (c.cached > 0 || io.releasing > 0); {
		left := time.Until(deadline)
		if left <= 0 {
			if c.cached == 0 {
				// Released but not finished: cached, this once.
				c.cached++
				return ioCached, fuse.FOPEN_KEEP_CACHE, 0
			}
			break
		}
		closed := io.closed
		io.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-closed:
		case <-t.C:
		}
		t.Stop()
		io.mu.Lock()
		if c = io.m[ino]; c == nil {
			c = &ioCount{}
			io.m[ino] = c
		}
	}
	switch {
	case write && c.passthrough > 0:
		return 0, 0, syscall.ETXTBSY
	case !write && regular && c.writers == 0 && c.cached == 0:
		c.passthrough++
		return ioPassthrough, 0, 0
	}
	if write {
		c.writers++
	}
	c.cached++
	// Every change to the file comes through this mount (passthrough
	// opens only read), so the page cache stays right across opens.
	return ioCached, fuse.FOPEN_KEEP_CACHE, 0
}

// close counts the end of an open of ino of kind k. It reports whether
// that was the last cached open of a regular file while passthrough is
// on: the kernel's cache of the file through the mount then serves no
// one (the next read-only open reads the backing file), and the kernel
// would drop it in that open, where the reader waits for it.
func (io *ioModes) close(ino uint64, k ioKind, write bool) (lastCached bool) {
	io.mu.Lock()
	defer io.mu.Unlock()
	c := io.m[ino]
	if c == nil {
		return false // not counted: passthrough is off
	}
	switch k {
	case ioPassthrough:
		c.passthrough--
	case ioCached:
		c.cached--
		lastCached = c.cached == 0
	}
	if write {
		c.writers--
	}
	if c.passthrough == 0 && c.cached == 0 && c.writers == 0 {
		delete(io.m, ino)
	}
	io.wake()
	return lastCached
}

// releaseWait bounds how long a read-only open waits for the RELEASE of
// a file closed just before it (see open).
const releaseWait = 2 * time.Millisecond

// isWrite reports whether open flags ask to change the file.
func isWrite(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
}

// ptFile is a read-only open file whose reads the kernel does itself.
// Only its PassthroughFd differs from a quotaFile's: go-fuse hands the
// descriptor to the kernel once per inode; a read that still comes (none
// should) is served as by any open file.
type ptFile struct{ *quotaFile }

var _ fs.FilePassthroughFder = (*ptFile)(nil)

// PassthroughFd is the backing file the kernel reads from: a descriptor
// the server opened inside the volume, read-only.
func (f *ptFile) PassthroughFd() (int, bool) { return f.lf.PassthroughFd() }

// noPassthrough turns passthrough off for mounts made after it is set (the
// tests of the fallback set it).
var noPassthrough bool

// Passthrough says whether a mount's reads go to the kernel's passthrough:
// "on", or "off: " and why.
type Passthrough string

// probePassthrough checks that the kernel takes a backing file of dir's
// filesystem for passthrough on srv's mount: it needs Linux 6.9 or later,
// CAP_SYS_ADMIN, and a backing filesystem shallow enough to stack on. The
// file is an unnamed one (O_TMPFILE), which no one sees and which goes
// when it is closed.
func probePassthrough(srv *fuse.Server, dirfd int) Passthrough {
	if srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		return "off: the kernel does not offer FUSE passthrough (Linux 6.9 or later has it)"
	}
	fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// dirfd is O_PATH: open the directory itself by its handle.
		var d int
		if d, err = unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			fd, err = unix.Openat(d, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
			unix.Close(d)
		}
	}
	if err != nil {
		return Passthrough(fmt.Sprintf("off: probe file: %v", err))
	}
	defer unix.Close(fd)
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno != 0 {
		return Passthrough(fmt.Sprintf("off: the kernel refused a backing file: %v", errno))
	}
	srv.UnregisterBackingFd(id)
	return "on"
}
