package scratch

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// blockSize is the unit Statfs reports and writes are estimated in.
const blockSize = 4096

// Quota accounts the disk bytes and inodes used under one backing
// directory and refuses what would pass its limits.
//
// Bytes are what the backing filesystem allocated (st_blocks × 512) for
// every inode, directories included (their blocks grow with the names in
// them, so every name costs something), as du counts them.
// A file with several hard links counts once; an unlinked file that is still
// open counts until its last close, as on any filesystem.
type Quota struct {
	maxBytes, maxInodes int64 // 0: no limit

	mu       sync.Mutex
	bytes    int64             // guarded by mu: charged bytes of live inodes
	inodes   int64             // guarded by mu: live inodes, root excluded
	reserved int64             // guarded by mu: bytes reserved by writes in flight
	files    map[uint64]*usage // guarded by mu: by backing inode number
	rootIno  uint64            // the backing directory's inode
	rootBase int64             // its blocks when the quota was made: not charged
}

type usage struct {
	charge int64
	open   int  // open file handles
	dead   bool // no links left; freed at the last close
}

// NewQuota returns a Quota with the given limits (0: none) and the usage of
// the backing directory dir, found by walking it once (walkTree: through
// handles, so neither a symlink swapped in nor a path past PATH_MAX changes
// what is counted).
func NewQuota(dir string, maxBytes, maxInodes int64) (*Quota, error) {
	q := &Quota{maxBytes: maxBytes, maxInodes: maxInodes, files: map[uint64]*usage{}}
	err := walkTree(dir, func(st *unix.Stat_t, root bool) {
		if root {
			// The volume's own directory is not charged: a volume of size
			// S holds S bytes of files and subdirectories. Its growth is.
			q.rootIno, q.rootBase = st.Ino, st.Blocks*512
			q.files[st.Ino] = &usage{}
			return
		}
		if _, seen := q.files[st.Ino]; seen {
			return // another link to a file already counted
		}
		q.files[st.Ino] = &usage{charge: st.Blocks * 512}
		q.bytes += st.Blocks * 512
		q.inodes++
	})
	if err != nil {
		return nil, fmt.Errorf("quota: walk %s: %w", dir, err)
	}
	return q, nil
}

// maxWalkDepth bounds the directories a walk descends through (each holds
// a descriptor while its subtree is walked).
const maxWalkDepth = 16384

// walkTree calls fn for dir (root true) and every inode beneath it. It
// works from directory handles only: each entry is stat'ed with fstatat
// on its parent's handle without following it, and a directory is entered
// by openat of its one name with O_NOFOLLOW, then checked to be the inode
// that was stat'ed. An entry that vanishes or is swapped for something else
// meanwhile is skipped, never followed; no path longer than one name is
// ever resolved.
func walkTree(dir string, fn func(st *unix.Stat_t, root bool)) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	fn(&st, true)
	return walkFd(fd, fn, 0)
}

// walkFd walks the directory open as fd (and closes it).
func walkFd(fd int, fn func(st *unix.Stat_t, root bool), depth int) error {
	if depth > maxWalkDepth {
		unix.Close(fd)
		return fmt.Errorf("a tree deeper than %d directories", maxWalkDepth)
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	for {
		names, err := f.Readdirnames(512)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone since it was listed
			}
			fn(&st, false)
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			child, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue // gone, or swapped for a symlink or a file
			}
			var cst unix.Stat_t
			if unix.Fstat(child, &cst) != nil || cst.Ino != st.Ino || cst.Dev != st.Dev {
				unix.Close(child) // another directory than the one counted
				continue
			}
			if err := walkFd(child, fn, depth+1); err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// full reports whether the byte limit is reached: a new name (a hard link,
// which makes no inode) is refused then.
func (q *Quota) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.maxBytes > 0 && q.bytes+q.reserved >= q.maxBytes
}

// Usage returns the bytes and inodes in use.
func (q *Quota) Usage() (bytes, inodes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes, q.inodes
}

// Limits returns the byte and inode limits (0: none).
func (q *Quota) Limits() (bytes, inodes int64) { return q.maxBytes, q.maxInodes }

// reserveInode counts a new inode about to be made; ENOSPC if none is
// left. The caller must call forgetReserved if the make fails.
func (q *Quota) reserveInode() syscall.Errno {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.maxInodes > 0 && q.inodes >= q.maxInodes {
		return syscall.ENOSPC
	}
	q.inodes++
	return 0
}

// unreserveInode undoes reserveInode.
func (q *Quota) unreserveInode() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inodes--
}

// made records the new inode ino, counted by reserveInode. If ino is
// already known (the make opened an existing file) the reservation is
// returned.
func (q *Quota) made(ino uint64, charge int64, open bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, ok := q.files[ino]
	if ok {
		q.inodes--
	} else {
		u = &usage{}
		q.files[ino] = u
	}
	q.setChargeLocked(u, charge)
	if open {
		u.open++
	}
}

func (q *Quota) setChargeLocked(u *usage, charge int64) {
	q.bytes += charge - u.charge
	u.charge = charge
}

// update sets the charge of ino after a change to it.
func (q *Quota) update(ino uint64, charge int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if ino == q.rootIno {
		charge = max(0, charge-q.rootBase)
	}
	if u, ok := q.files[ino]; ok {
		q.setChargeLocked(u, charge)
	}
}

// opened counts an open handle of ino and sets its charge.
func (q *Quota) opened(ino uint64, charge int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, ok := q.files[ino]
	if !ok {
		// Made behind our back (not through the mount): count it now.
		u = &usage{}
		q.files[ino] = u
		q.inodes++
	}
	q.setChargeLocked(u, charge)
	u.open++
}

// closed drops an open handle of ino; nlink is its link count just before
// the close. A file with no links left is freed at its last close.
func (q *Quota) closed(ino uint64, charge int64, nlink uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, ok := q.files[ino]
	if !ok {
		return
	}
	q.setChargeLocked(u, charge)
	u.open--
	if nlink == 0 {
		u.dead = true
	}
	if u.dead && u.open <= 0 {
		q.forgetLocked(ino, u)
	}
}

// unlinked records that a link to ino went away, leaving nlink links.
func (q *Quota) unlinked(ino uint64, nlink uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, ok := q.files[ino]
	if !ok || nlink > 0 {
		return
	}
	u.dead = true
	if u.open <= 0 {
		q.forgetLocked(ino, u)
	}
}

func (q *Quota) forgetLocked(ino uint64, u *usage) {
	q.bytes -= u.charge
	q.inodes--
	delete(q.files, ino)
}

// reserveWrite reserves the bytes a write of n bytes at off may allocate in
// a file of the given size and allocation, and returns how many of the n
// bytes may be written (fewer at the limit; 0 means ENOSPC) and the
// reservation to give back with endWrite.
func (q *Quota) reserveWrite(size, allocated, off, n int64) (int64, int64) {
	if q.maxBytes == 0 {
		return n, 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	avail := q.maxBytes - q.bytes - q.reserved
	est := writeEstimate(size, allocated, off, n)
	if est > avail {
		// Write what fits: the new blocks up to the limit.
		base := roundUp(size)
		if allocated < base || off > size {
			base = roundDown(off) // sparse or past the end: assume nothing is allocated
		}
		n = max(0, min(n, roundDown(base+max(avail, 0))-off))
		est = writeEstimate(size, allocated, off, n)
		if n == 0 || est > avail {
			return 0, 0
		}
	}
	q.reserved += est
	return n, est
}

// endWrite gives back a reservation and sets ino's charge.
func (q *Quota) endWrite(reserved int64, ino uint64, charge int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reserved -= reserved
	if u, ok := q.files[ino]; ok {
		q.setChargeLocked(u, charge)
	}
}

// reserveAlloc reserves the bytes an fallocate of n bytes at off may
// allocate; ENOSPC if they do not fit.
func (q *Quota) reserveAlloc(off, n int64) (int64, syscall.Errno) {
	if q.maxBytes == 0 {
		return 0, 0
	}
	est := roundUp(off+n) - roundDown(off)
	q.mu.Lock()
	defer q.mu.Unlock()
	if est > q.maxBytes-q.bytes-q.reserved {
		return 0, syscall.ENOSPC
	}
	q.reserved += est
	return est, 0
}

// writeEstimate bounds the bytes a write of n at off allocates in a file of
// the given size and allocation: nothing for blocks already allocated
// below the end of a dense file, every touched block otherwise.
func writeEstimate(size, allocated, off, n int64) int64 {
	if n <= 0 {
		return 0
	}
	start, end := roundDown(off), roundUp(off+n)
	if allocated >= roundUp(size) {
		// Dense: blocks below roundUp(size) exist already.
		start = max(start, roundUp(size))
	}
	return max(0, end-start)
}

func roundUp(n int64) int64   { return (n + blockSize - 1) / blockSize * blockSize }
func roundDown(n int64) int64 { return n / blockSize * blockSize }
