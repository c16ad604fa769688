// Package loopfs gives each volume a small ext4 file system of its own, on
// a loop device over a sparse image file: the kernel enforces its size and
// inode limits, and nothing of ol-shim is in the data path.
//
// # What a volume is
//
// An image file (Dir/NAME.img, mode 0600, sparse) holds an ext4 file system
// without a journal, made by mkfs.ext4, attached to a free loop device with
// LO_FLAGS_AUTOCLEAR (the device goes when the mount does) and mounted
// nosuid,nodev with online discard at a mountpoint the caller names. The
// volume's root, handed to dockerd, is the directory "data" in it; the file
// system's own root, out of a container's reach, holds what makes the
// limits exact.
//
// # Exact limits
//
// A file system has overhead (bitmaps, inode tables, group descriptors) and
// mkfs rounds the inode count up to fill its inode table blocks. Create
// therefore measures what it made: after mkfs and mount, statfs gives the
// blocks and inodes free to an unprivileged writer. The image is sized so
// that the free blocks are exactly the size limit (a first guess, then one
// correction, cached per size and inode count so later volumes of the same
// limits need one mkfs), and the extra inodes mkfs made are taken by empty
// placeholder files in the file system's root, beside "data". So a volume of
// size=64M and inodes=1000 takes exactly 64 MiB of blocks (data, directories,
// extent blocks and xattrs alike) and 1000 inodes, and a write past either
// fails with ENOSPC. Nothing is reserved for root (mkfs -m 0), so root in a
// container gets no more than anyone.
//
// # What it guards against, and what not
//
// A file cannot leave its file system: rename and link across it fail with
// EXDEV, so no attribute, project ID or hard link moves usage elsewhere. A
// container that has the volume (ol-shim's sandboxes or any `docker run -v`)
// is bound by the same limits. Device nodes can be made by a container with
// CAP_MKNOD but are inert (nodev), as setuid files are (nosuid). The image is
// sparse: blocks are taken from the host's file system as they are written
// and given back as files are deleted (discard punches holes in the image).
// Create refuses a volume whose limit the host's free space cannot cover,
// counting what every other image may still grow by, so a host that fills
// up by other means is the one way a write can fail with EIO; the kernel
// then reports it to the writer, and the file system is checked at the next
// attach.
//
// Loop devices are finite (the loop module's max_loop, or the device nodes a
// container was given): Create fails with ErrNoLoop when none is free, and
// the volume is not made.
package loopfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// BlockSize is the file systems' block size: limits are whole blocks.
const BlockSize = 4096

// DataDir is the directory in a volume's file system that is the volume.
const DataDir = "data"

// reserveDir holds the placeholder files that take the inodes mkfs made
// beyond the limit.
const reserveDir = "reserved"

// mountOptions: discard gives deleted blocks back to the host (holes in the
// image); noinit_itable leaves the inode tables of a sparse image as they
// read, zeroes, instead of writing them out in the background.
const mountOptions = "discard,noinit_itable"

// ErrNoLoop is returned when no loop device is free.
var ErrNoLoop = errors.New("no free loop device")

// Limits are a volume's limits and the owner and mode of its root.
type Limits struct {
	Bytes  int64 // rounded up to whole blocks
	Inodes int64 // files, directories, links' targets: every inode the volume's tree uses
	UID    int
	GID    int
	Mode   uint32
	// NoExec mounts the file system noexec: nothing on it can be run
	// (a sandbox's scratch, unless its pool asks for exec).
	NoExec bool
}

// mountFlags are the flags of a volume's mount with l.
func (l Limits) mountFlags() uintptr {
	f := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if l.NoExec {
		f |= unix.MS_NOEXEC
	}
	return f
}

// Manager makes and removes volume file systems. It is safe for concurrent
// use.
type Manager struct {
	mkfs string

	mu    sync.Mutex
	sizes map[[2]int64]int64 // guarded by mu: image bytes that gave exactly (bytes, inodes) free
	lomu  sync.Mutex         // serialises taking a free loop device
}

// New returns a Manager, or an error saying why this host cannot make
// loop-backed ext4 volumes (no mkfs.ext4, no ext4 in the kernel, no loop
// control device).
func New() (*Manager, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return nil, fmt.Errorf("mkfs.ext4 not found (Debian's e2fsprogs): %w", err)
	}
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fss), "\text4\n") {
		return nil, errors.New("the kernel has no ext4 file system (/proc/filesystems)")
	}
	fd, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("/dev/loop-control: %w (no loop devices here)", err)
	}
	unix.Close(fd)
	return &Manager{mkfs: mkfs, sizes: map[[2]int64]int64{}}, nil
}

// MinBytes is the least size limit of a loop volume: below it ext4's own
// overhead cannot be sized to leave exactly the limit free.
const MinBytes = 1 << 20

// Check reports whether l can be a loop volume's limits.
func (l Limits) Check() error {
	switch {
	case l.Bytes < MinBytes:
		return fmt.Errorf("size %d is below the kernel backend's least, %d (1M)", l.Bytes, MinBytes)
	case l.Inodes <= 0:
		return fmt.Errorf("inode limit %d: must be positive", l.Inodes)
	case l.Inodes > 1<<31:
		return fmt.Errorf("inode limit %d: more than ext4 can hold", l.Inodes)
	}
	return nil
}

// blocks is l.Bytes in whole blocks.
func (l Limits) blocks() int64 { return (l.Bytes + BlockSize - 1) / BlockSize }

// guess is a first image size for l: the data plus ext4's overhead (inode
// tables, bitmaps and group descriptors, a little more than needed).
func (l Limits) guess() int64 {
	groups := l.blocks()/32768 + 1
	inodeTable := (l.Inodes + 64) * 256
	return (l.blocks()+groups*4+16)*BlockSize + inodeTable + 64*BlockSize
}

// Create makes a volume's image at image and mounts its file system at
// mountpoint (an existing empty directory), with exactly l's limits free.
// On error nothing is left: no image, mount or loop device.
func (m *Manager) Create(ctx context.Context, image, mountpoint string, l Limits) error {
	if err := l.Check(); err != nil {
		return err
	}
	key := [2]int64{l.blocks(), l.Inodes}
	m.mu.Lock()
	size, known := m.sizes[key]
	m.mu.Unlock()
	if !known {
		size = l.guess()
	}
	for attempt := 0; ; attempt++ {
		freeBlocks, err := m.make(ctx, image, mountpoint, size, l)
		if err != nil {
			return err
		}
		if freeBlocks == l.blocks() {
			m.mu.Lock()
			m.sizes[key] = size
			m.mu.Unlock()
			return nil
		}
		_ = m.unmount(mountpoint)
		os.Remove(image)
		if attempt == 3 {
			return fmt.Errorf("image %s: could not size a file system with exactly %d blocks free (last try: %d)", image, l.blocks(), freeBlocks)
		}
		size += (l.blocks() - freeBlocks) * BlockSize
	}
}

// make makes one image of size bytes, mounts it and lays it out; it returns
// the blocks free in it. On error nothing is left.
func (m *Manager) make(ctx context.Context, image, mountpoint string, size int64, l Limits) (free int64, err error) {
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	mounted := false
	defer func() {
		f.Close()
		if err != nil {
			if mounted {
				_ = m.unmount(mountpoint)
			}
			os.Remove(image)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return 0, fmt.Errorf("image %s: %w", image, err)
	}
	// Inodes: the limit, the root, data and the reserve directory, and
	// ext4's 10 reserved ones (lost+found is removed below).
	mctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(mctx, m.mkfs, "-q", "-F", "-T", "default", "-b", strconv.Itoa(BlockSize), "-I", "256", "-m", "0",
		"-N", strconv.FormatInt(l.Inodes+13, 10), "-O", "^has_journal,^resize_inode",
		"-E", "lazy_itable_init=1,nodiscard", "-L", "ol-shim", image)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mkfs.ext4 %s: %v: %s", image, err, strings.TrimSpace(string(out)))
	}
	if err := m.attachAndMount(f, image, mountpoint, l.mountFlags()); err != nil {
		return 0, err
	}
	mounted = true
	if err := layout(mountpoint, l); err != nil {
		return 0, fmt.Errorf("image %s: %w", image, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", mountpoint, err)
	}
	return int64(st.Bavail) * st.Bsize / BlockSize, nil
}

// layout removes lost+found, makes data with its owner and mode, and takes
// the inodes beyond the limit with placeholders.
func layout(mnt string, l Limits) error {
	if err := os.Remove(filepath.Join(mnt, "lost+found")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Chmod(mnt, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(mnt, reserveDir), 0o700); err != nil {
		return err
	}
	data := filepath.Join(mnt, DataDir)
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	if err := os.Lchown(data, l.UID, l.GID); err != nil {
		return err
	}
	if err := os.Chmod(data, os.FileMode(l.Mode&0o7777)); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return err
	}
	extra := int64(st.Ffree) - l.Inodes
	if extra < 0 {
		return fmt.Errorf("file system has %d inodes free, fewer than the limit %d", st.Ffree, l.Inodes)
	}
	for i := int64(0); i < extra; i++ {
		fd, err := unix.Open(filepath.Join(mnt, reserveDir, strconv.FormatInt(i, 10)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("reserve inodes: %w", err)
		}
		unix.Close(fd)
	}
	return nil
}

// attachAndMount attaches f to a free loop device and mounts it.
func (m *Manager) attachAndMount(f *os.File, image, mountpoint string, flags uintptr) error {
	loop, err := m.attach(f)
	if err != nil {
		return fmt.Errorf("image %s: %w", image, err)
	}
	defer loop.Close() // the mount holds the device; autoclear frees it with the mount
	if err := unix.Mount(loop.Name(), mountpoint, "ext4", flags, mountOptions); err != nil {
		// Autoclear only acts on a device that was opened: clear it here.
		_ = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("mount %s (image %s) at %s: %w", loop.Name(), image, mountpoint, err)
	}
	return nil
}

// attach binds f to a free loop device, with autoclear and direct I/O
// (so its data is cached once, by the volume's file system, not again by
// the host's), and returns the open device.
func (m *Manager) attach(f *os.File) (*os.File, error) {
	m.lomu.Lock()
	defer m.lomu.Unlock()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for tries := 0; tries < 10; tries++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoLoop, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		loop, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			// In a container /dev is not devtmpfs: make the node, where
			// the device cgroup allows it.
			if merr := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); merr != nil && !errors.Is(merr, unix.EEXIST) {
				return nil, fmt.Errorf("%w: %s has no device node and none can be made: %v", ErrNoLoop, dev, merr)
			}
			loop, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNoLoop, dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd()), Size: BlockSize}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			loop.Close() // taken by someone else meanwhile
			continue
		}
		if err != nil {
			loop.Close()
			return nil, fmt.Errorf("configure %s: %w", dev, err)
		}
		return loop, nil
	}
	return nil, fmt.Errorf("%w: every free loop device was taken before it could be configured", ErrNoLoop)
}

// Attach mounts image at mountpoint again, after a reboot or after the
// mount was lost, checking the file system first (e2fsck -p: it has no
// journal), with l's mount flags. A mountpoint that is already mounted is
// left alone.
func (m *Manager) Attach(ctx context.Context, image, mountpoint string, l Limits) error {
	if ok, _ := mountinfo.Mounted(mountpoint); ok {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := fsck(cctx, image, false); err != nil {
		return err
	}
	f, err := os.OpenFile(image, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	return m.attachAndMount(f, image, mountpoint, l.mountFlags())
}

// fsck checks and repairs the unmounted file system of image (e2fsck -p:
// it has no journal); full, even if it is clean, where resize2fs asks.
func fsck(ctx context.Context, image string, full bool) error {
	args := []string{"-p", image}
	if full {
		args = append([]string{"-f"}, args...)
	}
	out, err := exec.CommandContext(ctx, "e2fsck", args...).CombinedOutput()
	var ee *exec.ExitError
	// 1: errors corrected; 2: corrected, reboot advised (not for a loop).
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() <= 2) {
		return fmt.Errorf("e2fsck %s: %v: %s", image, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Remove unmounts the volume's file system (which frees its loop device)
// and deletes its image. It fails while a process still has the file
// system busy; then nothing is deleted.
func (m *Manager) Remove(image, mountpoint string) error {
	if err := m.unmount(mountpoint); err != nil {
		return err
	}
	if err := os.Remove(image); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove image: %w", err)
	}
	return nil
}

func (m *Manager) unmount(mountpoint string) error {
	for {
		err := unix.Unmount(mountpoint, 0)
		switch {
		case err == nil:
			continue // a mount stacked on another: take them all
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not mounted
		default:
			return fmt.Errorf("unmount %s: %w", mountpoint, err)
		}
	}
}

// Usage returns the bytes and inodes used in the volume mounted at
// mountpoint, whose limits are l: what its file system no longer has free.
func Usage(mountpoint string, l Limits) (bytes, inodes int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return 0, 0, err
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		return 0, 0, fmt.Errorf("%s: not the volume's file system (not mounted?)", mountpoint)
	}
	return l.blocks()*BlockSize - int64(st.Bavail)*st.Bsize, l.Inodes - int64(st.Ffree), nil
}

// Mounted reports whether mountpoint has the volume's file system on it.
func Mounted(mountpoint string) bool {
	var st unix.Statfs_t
	if unix.Statfs(mountpoint, &st) != nil {
		return false
	}
	ok, _ := mountinfo.Mounted(mountpoint)
	return ok && st.Type == unix.EXT4_SUPER_MAGIC
}

// Outstanding returns how many more bytes of the host's file system the
// image may take as it fills: its size less what it has allocated.
func Outstanding(image string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		return 0, err
	}
	return max(st.Size-st.Blocks*512, 0), nil
}
