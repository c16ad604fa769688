package scratch

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// quotaNode is a loopback node that keeps a Quota: every operation that can
// make, grow, shrink or free an inode is checked against it beforehand and
// accounted afterwards from what the backing filesystem reports.
type quotaNode struct {
	*confinedNode
	q  *Quota
	io *ioModes
}

var (
	_ fs.NodeCreater        = (*quotaNode)(nil)
	_ fs.NodeOpener         = (*quotaNode)(nil)
	_ fs.NodeMkdirer        = (*quotaNode)(nil)
	_ fs.NodeMknoder        = (*quotaNode)(nil)
	_ fs.NodeSymlinker      = (*quotaNode)(nil)
	_ fs.NodeLinker         = (*quotaNode)(nil)
	_ fs.NodeUnlinker       = (*quotaNode)(nil)
	_ fs.NodeRmdirer        = (*quotaNode)(nil)
	_ fs.NodeRenamer        = (*quotaNode)(nil)
	_ fs.NodeSetattrer      = (*quotaNode)(nil)
	_ fs.NodeStatfser       = (*quotaNode)(nil)
	_ fs.NodeCopyFileRanger = (*quotaNode)(nil)
)

// newQuotaRoot returns the root node of a quota'd, confined loopback over
// dir, and its root (whose descriptor the mount holds).
func newQuotaRoot(dir string, q *Quota) (*quotaNode, *confinedRoot, error) {
	io := &ioModes{m: map[uint64]*ioCount{}, closed: make(chan struct{})}
	wrap := func(c *confinedNode) fs.InodeEmbedder { return &quotaNode{confinedNode: c, q: q, io: io} }
	root, n, err := newConfinedRoot(dir, wrap)
	if err != nil {
		return nil, nil, err
	}
	return &quotaNode{confinedNode: n, q: q, io: io}, root, nil
}

// lstat stats the entry name of n, not following it.
func (n *quotaNode) lstat(name string) (unix.Stat_t, bool) {
	var st unix.Stat_t
	dfd, errno := n.dir()
	if errno != 0 {
		return st, false
	}
	defer unix.Close(dfd)
	return st, unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

func chargeOfAttr(a *fuse.Attr) int64 { return int64(a.Blocks) * 512 }

// recharge charges directory n its blocks again, after a name was added
// to it or taken out.
func (n *quotaNode) recharge() {
	fd, errno := n.dir()
	if errno != 0 {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		n.q.update(st.Ino, st.Blocks*512)
	}
}

// newName refuses a new name (which may grow its directory by a block)
// once the byte limit is reached: without it, names moved through new
// directories grew an 8M volume to 22 MB of directory blocks.
func (n *quotaNode) newName() syscall.Errno {
	if n.q.full() {
		return syscall.ENOSPC
	}
	return 0
}

// Create makes a file if an inode is left.
func (n *quotaNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.newName(); errno != 0 {
		return nil, nil, 0, errno
	}
	if errno := n.q.reserveInode(); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, fh, fflags, errno := n.confinedNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		n.q.unreserveInode()
		return nil, nil, 0, errno
	}
	lf := fh.(*fs.LoopbackFile)
	n.q.made(out.Attr.Ino, chargeOfAttr(&out.Attr), true)
	n.recharge()
	// A new inode: no passthrough open of it exists, so this cannot fail.
	f := &quotaFile{lf: lf, q: n.q, ino: out.Attr.Ino, io: n.io, ioIno: ch.StableAttr().Ino, node: ch, write: isWrite(flags)}
	var ioFlags uint32
	f.kind, ioFlags, _ = n.io.open(f.ioIno, f.write, false)
	return ch, f, fflags | ioFlags, 0
}

// Open opens a file with a handle that accounts its writes, or, read-only,
// one whose reads the kernel does itself (see ioModes). With O_TRUNC the
// backing open truncates, which the charge reflects.
func (n *quotaNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// The I/O mode is decided first: a writer refused must not have
	// truncated the file.
	sa := n.StableAttr()
	write := isWrite(flags)
	kind, ioFlags, errno := n.io.open(sa.Ino, write, sa.Mode&syscall.S_IFMT == syscall.S_IFREG)
	if errno != 0 {
		return nil, 0, errno
	}
	fh, fflags, errno := n.confinedNode.Open(ctx, flags)
	if errno != 0 {
		n.io.close(sa.Ino, kind, write)
		return nil, 0, errno
	}
	lf := fh.(*fs.LoopbackFile)
	var a fuse.AttrOut
	if errno := lf.Getattr(ctx, &a); errno != 0 {
		n.io.close(sa.Ino, kind, write)
		lf.Release(ctx)
		return nil, 0, errno
	}
	f := &quotaFile{lf: lf, q: n.q, ino: a.Ino, io: n.io, ioIno: sa.Ino, node: n.EmbeddedInode(), kind: kind, write: write}
	n.q.opened(a.Ino, chargeOfAttr(&a.Attr))
	if f.kind == ioPassthrough {
		return &ptFile{f}, fflags | ioFlags, 0
	}
	return f, fflags | ioFlags, 0
}

// made is the common tail of Mkdir, Mknod and Symlink.
func (n *quotaNode) made(ch *fs.Inode, out *fuse.EntryOut, errno syscall.Errno) (*fs.Inode, syscall.Errno) {
	if errno != 0 {
		n.q.unreserveInode()
		return nil, errno
	}
	n.q.made(out.Attr.Ino, chargeOfAttr(&out.Attr), false)
	n.recharge()
	return ch, 0
}

// Mkdir makes a directory if an inode is left.
func (n *quotaNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.newName(); errno != 0 {
		return nil, errno
	}
	if errno := n.q.reserveInode(); errno != 0 {
		return nil, errno
	}
	ch, errno := n.confinedNode.Mkdir(ctx, name, mode, out)
	return n.made(ch, out, errno)
}

// Mknod makes a FIFO, socket or empty file if an inode is left. Device
// nodes are refused (the mount is nodev anyway).
func (n *quotaNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFCHR, syscall.S_IFBLK:
		return nil, syscall.EPERM
	}
	if errno := n.newName(); errno != 0 {
		return nil, errno
	}
	if errno := n.q.reserveInode(); errno != 0 {
		return nil, errno
	}
	ch, errno := n.confinedNode.Mknod(ctx, name, mode, rdev, out)
	return n.made(ch, out, errno)
}

// Symlink makes a symlink if an inode is left.
func (n *quotaNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.newName(); errno != 0 {
		return nil, errno
	}
	if errno := n.q.reserveInode(); errno != 0 {
		return nil, errno
	}
	ch, errno := n.confinedNode.Symlink(ctx, target, name, out)
	return n.made(ch, out, errno)
}

// Link adds a hard link: no new inode, but a name, which grows the
// directory; refused once the byte limit is reached.
func (n *quotaNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.newName(); errno != 0 {
		return nil, errno
	}
	ch, errno := n.confinedNode.Link(ctx, target, name, out)
	if errno == 0 {
		n.recharge()
	}
	return ch, errno
}

// Unlink removes a link; a file left with none is freed now, or at its
// last close if it is open.
func (n *quotaNode) Unlink(ctx context.Context, name string) syscall.Errno {
	st, ok := n.lstat(name)
	if errno := n.confinedNode.Unlink(ctx, name); errno != 0 {
		return errno
	}
	if ok {
		n.q.unlinked(st.Ino, uint32(st.Nlink)-1)
	}
	n.recharge()
	return 0
}

// Rmdir removes a directory and frees its inode.
func (n *quotaNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	st, ok := n.lstat(name)
	if errno := n.confinedNode.Rmdir(ctx, name); errno != 0 {
		return errno
	}
	if ok {
		n.q.unlinked(st.Ino, 0)
	}
	n.recharge()
	return 0
}

// Rename moves a name; a file or empty directory it replaces loses a link,
// as with Unlink.
func (n *quotaNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*quotaNode)
	if !ok {
		return syscall.EXDEV
	}
	// The new name may grow its directory, as any new name.
	if errno := n.newName(); errno != 0 {
		return errno
	}
	src, _ := n.lstat(name)
	dst, replaced := np.lstat(newName)
	if errno := n.confinedNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	if replaced && flags&unix.RENAME_EXCHANGE == 0 && dst.Ino != src.Ino {
		links := uint32(dst.Nlink) - 1
		if dst.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			links = 0
		}
		n.q.unlinked(dst.Ino, links)
	}
	n.recharge()
	if np != n {
		np.recharge()
	}
	return 0
}

// Setattr changes attributes; a truncate changes the charge.
func (n *quotaNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if qf, ok := f.(*quotaFile); ok {
		return qf.Setattr(ctx, in, out)
	}
	if errno := n.confinedNode.Setattr(ctx, f, in, out); errno != 0 {
		return errno
	}
	if _, ok := in.GetSize(); ok {
		n.q.update(out.Ino, chargeOfAttr(&out.Attr))
	}
	return 0
}

// Statfs reports the quota as the filesystem's size, so df inside a
// sandbox shows the limit and what is left of it.
func (n *quotaNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if errno := n.confinedNode.Statfs(ctx, out); errno != 0 {
		return errno
	}
	bytes, inodes := n.q.Usage()
	maxBytes, maxInodes := n.q.Limits()
	out.Bsize, out.Frsize = blockSize, blockSize
	if maxBytes > 0 {
		out.Blocks = uint64(maxBytes / blockSize)
		free := uint64(max(0, maxBytes-bytes) / blockSize)
		out.Bfree, out.Bavail = free, free
	}
	if maxInodes > 0 {
		out.Files = uint64(maxInodes)
		out.Ffree = uint64(max(0, maxInodes-inodes))
	}
	return 0
}

// CopyFileRange is refused so that copies go through Write, where they
// are accounted.
func (n *quotaNode) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}

// quotaFile is an open file of a quota'd volume. It has no passthrough
// descriptor (ptFile adds one to read-only opens), no Writev, no Ioctl and no CopyFileRange: every write reaches
// Write, where it is accounted. Its Flush answers ENOSYS: writes reach the
// backing file at once, so there is nothing to flush at close, and the
// kernel stops sending FLUSH after the first ENOSYS (one round trip less
// per close; without a Flush method go-fuse would answer OK, and the kernel
// would keep asking).
type quotaFile struct {
	lf    *fs.LoopbackFile
	q     *Quota
	ino   uint64
	io    *ioModes
	ioIno uint64    // its inode in io (the FUSE inode number)
	node  *fs.Inode // the file's inode in the mount
	kind  ioKind
	write bool
}

var (
	_ fs.FileReader    = (*quotaFile)(nil)
	_ fs.FileWriter    = (*quotaFile)(nil)
	_ fs.FileReleaser  = (*quotaFile)(nil)
	_ fs.FileFsyncer   = (*quotaFile)(nil)
	_ fs.FileGetattrer = (*quotaFile)(nil)
	_ fs.FileSetattrer = (*quotaFile)(nil)
	_ fs.FileLseeker   = (*quotaFile)(nil)
	_ fs.FileAllocater = (*quotaFile)(nil)
	_ fs.FileGetlker   = (*quotaFile)(nil)
	_ fs.FileSetlker   = (*quotaFile)(nil)
	_ fs.FileSetlkwer  = (*quotaFile)(nil)
	_ fs.FileFlusher   = (*quotaFile)(nil)
)

// Flush answers ENOSYS: see quotaFile.
func (f *quotaFile) Flush(context.Context) syscall.Errno { return syscall.ENOSYS }

func (f *quotaFile) stat(ctx context.Context) (fuse.AttrOut, syscall.Errno) {
	var a fuse.AttrOut
	errno := f.lf.Getattr(ctx, &a)
	return a, errno
}

// Write writes what fits in the quota: all of data, a prefix of it at the
// limit, or ENOSPC when nothing fits.
func (f *quotaFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	a, errno := f.stat(ctx)
	if errno != 0 {
		return 0, errno
	}
	n, reserved := f.q.reserveWrite(int64(a.Size), int64(a.Blocks)*512, off, int64(len(data)))
	if n == 0 && len(data) > 0 {
		return 0, syscall.ENOSPC
	}
	written, errno := f.lf.Write(ctx, data[:n], off)
	after, serr := f.stat(ctx)
	charge := chargeOfAttr(&after.Attr)
	if serr != 0 {
		charge = chargeOfAttr(&a.Attr)
	}
	f.q.endWrite(reserved, f.ino, charge)
	return written, errno
}

// Allocate preallocates if the whole range fits in the quota.
func (f *quotaFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	var reserved int64
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_COLLAPSE_RANGE) == 0 {
		var errno syscall.Errno
		if reserved, errno = f.q.reserveAlloc(int64(off), int64(size)); errno != 0 {
			return errno
		}
	}
	errno := f.lf.Allocate(ctx, off, size, mode)
	a, serr := f.stat(ctx)
	if serr != 0 {
		f.q.endWrite(reserved, 0, 0)
		return errno
	}
	f.q.endWrite(reserved, f.ino, chargeOfAttr(&a.Attr))
	return errno
}

// Setattr changes attributes; a truncate changes the charge.
func (f *quotaFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.lf.Setattr(ctx, in, out); errno != 0 {
		return errno
	}
	f.q.update(f.ino, chargeOfAttr(&out.Attr))
	return 0
}

// Release closes the file; an unlinked file is freed at its last close.
func (f *quotaFile) Release(ctx context.Context) syscall.Errno {
	if f.io.close(f.ioIno, f.kind, f.write) {
		// Dropped here, after the close returned, rather than in the
		// next reader's open (TestPassthroughDropsWritersCache). Apart,
		// because the kernel may wait on this server for a page.
		go f.node.NotifyContent(0, 0)
	}
	a, errno := f.stat(ctx)
	if errno == 0 {
		f.q.closed(f.ino, chargeOfAttr(&a.Attr), a.Nlink)
	} else {
		f.q.closed(f.ino, 0, 0)
	}
	return f.lf.Release(ctx)
}

func (f *quotaFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.io.serverReads.Add(1)
	return f.lf.Read(ctx, buf, off)
}
func (f *quotaFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.lf.Fsync(ctx, flags)
}
func (f *quotaFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}
func (f *quotaFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}
func (f *quotaFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.lf.Getlk(ctx, owner, lk, flags, out)
}
func (f *quotaFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlk(ctx, owner, lk, flags)
}
func (f *quotaFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlkw(ctx, owner, lk, flags)
}

// quotaMountOptions are the mount options of every quota'd volume, whether
// its server mounts it (MountQuota) or the daemon does for it (mountFUSE);
// noexec for a sandbox's volume that may not run programs.
func quotaMountOptions(name string, noexec bool) fuse.MountOptions {
	opts := []string{"nosuid", "nodev", "default_permissions"}
	if noexec {
		opts = append(opts, "noexec")
	}
	return fuse.MountOptions{
		AllowOther: true,
		// No xattrs: the kernel then stops asking for
		// security.capability before every write.
		DisableXAttrs: true,
		Options:       opts,
		FsName:        "ol-shim:" + name,
		Name:          "ol-shim",
		DirectMount:   true,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		// Every change to a volume's files comes through its mount, so the
		// kernel's cache of their data is right until the mount says
		// otherwise: it need not drop it each time a file's mtime moves
		// (after each write), and a file read back after it was written
		// costs no READ.
		ExplicitDataCacheControl: true,
	}
}

// QuotaMount is a mounted quota'd volume: its FUSE server (Unmount, Wait)
// and whether its reads go to the kernel's passthrough.
type QuotaMount struct {
	*fuse.Server
	Passthrough Passthrough
	io          *ioModes
}

// MountQuota mounts a quota'd loopback of dir at mnt (nosuid, nodev,
// allow_other with the kernel checking permissions, no extended attributes)
// and returns the mount; Unmount it with its Unmount. With passthrough,
// read-only opens are read by the kernel where it can (see ioModes).
func MountQuota(dir, mnt string, q *Quota, name string, passthrough, noexec bool) (*QuotaMount, error) {
	root, cr, err := newQuotaRoot(dir, q)
	if err != nil {
		return nil, fmt.Errorf("quota mount %s: %w", mnt, err)
	}
	// Every change comes through this mount, so the kernel may keep names
	// and attributes long: fewer LOOKUP and GETATTR round trips.
	cache := 30 * time.Second
	opts := quotaMountOptions(name, noexec)
	// A mount made already, whose /dev/fuse this process was handed
	// (/dev/fd/N): go-fuse serves that descriptor and mounts nothing.
	if strings.HasPrefix(mnt, "/dev/fd/") {
		opts.DirectMount = false
	}
	srv, err := mountTracked(mnt, root, &fs.Options{
		EntryTimeout: &cache,
		AttrTimeout:  &cache,
		// Report modes as they are: without it go-fuse shows a mode of
		// 0000 as 0644 (0755 for directories), and default_permissions
		// then lets every user read a file no one may.
		NullPermissions: true,
		MountOptions:    opts,
	})
	if err != nil {
		unix.Close(cr.fd)
		return nil, fmt.Errorf("quota mount %s: %w", mnt, err)
	}
	pt := Passthrough("off: not asked for (volume option passthrough=true)")
	switch {
	case passthrough && noPassthrough:
		pt = "off: turned off for a test"
	case passthrough:
		pt = probePassthrough(srv, cr.fd)
	}
	root.io.on.Store(pt == "on")
	go func() {
		srv.Wait()
		unix.Close(cr.fd)
	}()
	return &QuotaMount{Server: srv, Passthrough: pt, io: root.io}, nil
}

// mountTracked is fs.Mount with the file system's RELEASEs tracked (see
// releaseTracker).
func mountTracked(mnt string, root *quotaNode, opts *fs.Options) (*fuse.Server, error) {
	raw := &releaseTracker{RawFileSystem: fs.NewNodeFS(root, opts), io: root.io}
	srv, err := fuse.NewServer(raw, mnt, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, err
	}
	return srv, nil
}
