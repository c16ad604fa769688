package scratch

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// confinedRoot is the backing directory of a FUSE-served volume, held open
// for the life of the mount. Every name the server touches is resolved from
// it with openat2 and RESOLVE_IN_ROOT: a symlink a sandbox put anywhere in
// its volume (or swaps in while a call is in flight) resolves inside the
// volume, never to the host. The last element of every name is then used
// with a *at call that does not follow it, on the handle of its parent.
type confinedRoot struct {
	fd  int    // O_PATH of the backing directory
	dev uint64 // its device, to make inode numbers as go-fuse's loopback does
	// wrap makes the InodeEmbedder of a new node (the quota's).
	wrap func(*confinedNode) fs.InodeEmbedder
}

// resolve is how every name is resolved: inside the root, no magic links
// (/proc/self/fd/...), no crossing into another mount.
const resolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

func newConfinedRoot(dir string, wrap func(*confinedNode) fs.InodeEmbedder) (*confinedRoot, *confinedNode, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	r := &confinedRoot{fd: fd, dev: st.Dev, wrap: wrap}
	return r, &confinedNode{root: r}, nil
}

// confinedNode is one file, directory or link of a confined volume. It
// holds no descriptor: it is found again from the root, by its path in the
// inode tree, at every call.
type confinedNode struct {
	fs.Inode
	root *confinedRoot
}

// rel returns n's path relative to the root ("." for the root).
func (n *confinedNode) rel() string {
	if p := n.Path(n.Root()); p != "" {
		return p
	}
	return "."
}

// open opens n's own name, resolved inside the root, without following it
// if it is a symlink, and checks that what it opened is n's inode: a rename
// racing the call (before go-fuse's tree follows it) can put another inode
// of the volume at n's path, one the kernel did not check the caller's
// permissions on. That is ESTALE, and nothing is done to it.
func (n *confinedNode) open(flags int) (int, error) {
	fd, err := unix.Openat2(n.root.fd, n.rel(), &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: resolve})
	if err != nil || n.IsRoot() {
		return fd, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if n.root.ino(&st) != n.StableAttr().Ino {
		unix.Close(fd)
		return -1, syscall.ESTALE
	}
	return fd, nil
}

// ino is the node inode number of a file of the volume, as go-fuse's
// loopback makes them.
func (r *confinedRoot) ino(st *unix.Stat_t) uint64 {
	swapped := st.Dev<<32 | st.Dev>>32
	swappedRoot := r.dev<<32 | r.dev>>32
	return (swapped ^ swappedRoot) ^ st.Ino
}

// dir opens n as a directory (O_PATH), for *at calls on its entries.
func (n *confinedNode) dir() (int, syscall.Errno) {
	fd, err := n.open(unix.O_PATH | unix.O_DIRECTORY)
	return fd, fs.ToErrno(err)
}

// parent opens the directory that holds n, and returns n's name in it.
func (n *confinedNode) parent() (int, string, syscall.Errno) {
	name, p := n.Parent()
	if p == nil {
		return -1, "", syscall.EINVAL
	}
	fd, errno := p.Operations().(interface{ confined() *confinedNode }).confined().dir()
	return fd, name, errno
}

func (n *confinedNode) confined() *confinedNode { return n }

// child makes the inode of a new or looked-up entry of n.
func (n *confinedNode) child(ctx context.Context, st *unix.Stat_t) *fs.Inode {
	id := fs.StableAttr{Mode: st.Mode, Ino: n.root.ino(st), Gen: 1}
	return n.NewInode(ctx, n.root.wrap(&confinedNode{root: n.root}), id)
}

// fromStat fills a FUSE attribute from a stat.
func fromStat(a *fuse.Attr, st *unix.Stat_t) {
	var s syscall.Stat_t
	s.Dev, s.Ino, s.Nlink, s.Mode, s.Uid, s.Gid, s.Rdev = st.Dev, st.Ino, st.Nlink, st.Mode, st.Uid, st.Gid, st.Rdev
	s.Size, s.Blksize, s.Blocks = st.Size, st.Blksize, st.Blocks
	s.Atim = syscall.Timespec(st.Atim)
	s.Mtim = syscall.Timespec(st.Mtim)
	s.Ctim = syscall.Timespec(st.Ctim)
	a.FromStat(&s)
}

// made finishes a Mkdir, Mknod or Symlink: the new entry belongs to the
// caller (the server runs as root), and gets its inode.
func (n *confinedNode) made(ctx context.Context, dfd int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if uid, gid, ok := owner(ctx, dfd); ok {
		if err := unix.Fchownat(dfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fs.ToErrno(err)
		}
	}
	return n.entry(ctx, dfd, name, out)
}

// owner returns who a new entry of directory dfd belongs to: the caller,
// and the caller's group unless the directory is set-group-ID (then the
// entry keeps the directory's group, which the kernel gave it, as on any
// filesystem; gid -1 leaves it). ok is false when this process cannot
// give files away (not root) or the caller is unknown.
func owner(ctx context.Context, dfd int) (uid, gid int, ok bool) {
	caller, known := fuse.FromContext(ctx)
	if !known || os.Getuid() != 0 {
		return 0, 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(dfd, &st) == nil && st.Mode&unix.S_ISGID != 0 {
		return int(caller.Uid), -1, true
	}
	return int(caller.Uid), int(caller.Gid), true
}

// setgidDir reports whether directory dfd is set-group-ID.
func setgidDir(dfd int) bool {
	var st unix.Stat_t
	return unix.Fstat(dfd, &st) == nil && st.Mode&unix.S_ISGID != 0
}

// entry makes the inode of the entry name of directory dfd, not following
// it.
func (n *confinedNode) entry(ctx context.Context, dfd int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	fromStat(&out.Attr, &st)
	return n.child(ctx, &st), 0
}

// Statfs reports the backing filesystem.
func (n *confinedNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.root.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize, out.NameLen = uint32(st.Bsize), uint32(st.Frsize), uint32(st.Namelen)
	return 0
}

// Lookup finds an entry of n without following it.
func (n *confinedNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	return n.entry(ctx, dfd, name, out)
}

// self opens a handle (O_PATH) on n itself and stats it; the caller
// closes the handle.
func (n *confinedNode) self() (int, unix.Stat_t, syscall.Errno) {
	var st unix.Stat_t
	fd, err := n.open(unix.O_PATH)
	if err != nil {
		return -1, st, fs.ToErrno(err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, fs.ToErrno(err)
	}
	return fd, st, 0
}

// stat returns n's attributes, from a handle on n itself.
func (n *confinedNode) stat(out *fuse.AttrOut) syscall.Errno {
	fd, st, errno := n.self()
	if errno != 0 {
		return errno
	}
	unix.Close(fd)
	fromStat(&out.Attr, &st)
	return 0
}

// Getattr reports n's attributes (through its open file, if given).
func (n *confinedNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(fs.FileGetattrer); ok && fga != nil {
		return fga.Getattr(ctx, out)
	}
	return n.stat(out)
}

// Setattr changes n's mode, owner, size or times: through its open file if
// given, else through a handle on n itself (reached through
// /proc/self/fd, which names that very inode), never through its path.
func (n *confinedNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if fsa, ok := f.(fs.FileSetattrer); ok && fsa != nil {
		return fsa.Setattr(ctx, in, out)
	}
	fd, st, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	link := st.Mode&unix.S_IFMT == unix.S_IFLNK
	self := fmt.Sprintf("/proc/self/fd/%d", fd)
	if m, ok := in.GetMode(); ok {
		if link {
			return syscall.EOPNOTSUPP // Linux has no modes on symlinks
		}
		if err := unix.Chmod(self, m); err != nil {
			return fs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := unix.Fchownat(fd, "", suid, sgid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if link {
			return syscall.EINVAL
		}
		if err := unix.Truncate(self, int64(sz)); err != nil {
			return fs.ToErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if link {
			// A symlink's times: on its name in its parent, not followed.
			pfd, name, errno := n.parent()
			if errno != 0 {
				return errno
			}
			err := unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
			unix.Close(pfd)
			if err != nil {
				return fs.ToErrno(err)
			}
		} else if err := unix.UtimesNanoAt(unix.AT_FDCWD, self, ts, 0); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	fromStat(&out.Attr, &st)
	return 0
}

// Mknod makes a FIFO, socket or file in n.
func (n *confinedNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	if err := unix.Mknodat(dfd, name, mode, int(rdev)); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, dfd, name, out)
}

// Mkdir makes a directory in n, of exactly mode (the kernel applied the
// caller's umask already; this process's is not applied again).
func (n *confinedNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	if err := unix.Mkdirat(dfd, name, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	if fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		m := mode & 0o1777
		if setgidDir(dfd) { // a directory made in one is set-group-ID too
			m |= unix.S_ISGID
		}
		unix.Fchmod(fd, m)
		unix.Close(fd)
	}
	return n.made(ctx, dfd, name, out)
}

// Rmdir removes an empty directory of n.
func (n *confinedNode) Rmdir(_ context.Context, name string) syscall.Errno {
	dfd, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	return fs.ToErrno(unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR))
}

// Unlink removes a name of n.
func (n *confinedNode) Unlink(_ context.Context, name string) syscall.Errno {
	dfd, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	return fs.ToErrno(unix.Unlinkat(dfd, name, 0))
}

// Rename moves a name of n to newParent, with renameat2's flags.
func (n *confinedNode) Rename(_ context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(interface{ confined() *confinedNode })
	if !ok {
		return syscall.EXDEV
	}
	dfd, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	nfd, errno := np.confined().dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(nfd)
	return fs.ToErrno(unix.Renameat2(dfd, name, nfd, newName, uint(flags)))
}

// Create makes and opens a file in n, of exactly mode, owned by the caller.
// A symlink in its place is not followed.
func (n *confinedNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer unix.Close(dfd)
	flags = flags &^ (syscall.O_APPEND | fuse.FMODE_EXEC)
	// O_EXCL always: the kernel sends CREATE for a name it found absent,
	// and a file that appeared there since (planted by a racing call) must
	// not be opened, chmodded and given to the caller as if made now.
	fd, err := unix.Openat(dfd, name, int(flags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	unix.Fchmod(fd, mode&0o1777)
	if uid, gid, ok := owner(ctx, dfd); ok {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			unix.Close(fd)
			return nil, nil, 0, fs.ToErrno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	fromStat(&out.Attr, &st)
	return n.child(ctx, &st), fs.NewLoopbackFile(fd), 0, 0
}

// Symlink makes a symlink in n. Its target is a string for the sandbox to
// resolve; the server never follows it.
func (n *confinedNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	if err := unix.Symlinkat(target, dfd, name); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, dfd, name, out)
}

// Link adds name in n as a hard link to target, not following target if
// it is a symlink.
func (n *confinedNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(interface{ confined() *confinedNode })
	if !ok {
		return nil, syscall.EXDEV
	}
	tfd, tname, errno := t.confined().parent()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(tfd)
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	if err := unix.Linkat(tfd, tname, dfd, name, 0); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.entry(ctx, dfd, name, out)
}

// Readlink reads n, a symlink.
func (n *confinedNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	pfd, name, errno := n.parent()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(pfd)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(pfd, name, buf)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		if k < size {
			return buf[:k], 0
		}
	}
}

// Open opens n, resolved inside the root and not followed.
func (n *confinedNode) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	flags = flags &^ (syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT)
	fd, err := n.open(int(flags))
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	return fs.NewLoopbackFile(fd), 0, 0
}

// Readdir lists n.
func (n *confinedNode) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	fd, err := n.open(unix.O_RDONLY | unix.O_DIRECTORY)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

// OnForget is called when the kernel forgets n: it holds nothing to free.
func (n *confinedNode) OnForget() {}
