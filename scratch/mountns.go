package scratch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A volume server sees only its own volume. The daemon mounts the volume's
// FUSE file system itself, in the host's mount namespace, and hands the
// server the /dev/fuse descriptor of that mount; the server starts in a
// mount namespace of its own (a private copy of the host's) and, once it
// holds what it needs (the /dev/fuse descriptor, a handle on the volume's
// data directory, its control socket), replaces its root with an empty,
// read-only tmpfs: no host path names anything in it. Every name it
// resolves starts at its handle on the data directory (confinedRoot); this
// is the second wall, for a bug in that first one. It cannot unmount its
// volume from there, nor does it need to: the daemon unmounts it, and the
// server ends when its mount goes.

// mountFUSE mounts an empty FUSE file system of volume name at mnt, with
// the options of every quota'd volume, as go-fuse's direct mount does, and
// returns the /dev/fuse file whose reader will serve it. Until one answers
// the kernel's INIT, calls on the mount wait.
func mountFUSE(mnt, name string, noexec bool) (*os.File, error) {
	o := quotaMountOptions(name, noexec)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	data := []string{fmt.Sprintf("fd=%d", fd), fmt.Sprintf("rootmode=%o", unix.S_IFDIR), "user_id=0", "group_id=0",
		fmt.Sprintf("max_read=%d", o.MaxWrite)}
	for _, opt := range o.Options {
		switch opt {
		case "nosuid", "nodev": // flags, above
		case "noexec":
			flags |= unix.MS_NOEXEC
		default:
			data = append(data, opt)
		}
	}
	if o.AllowOther {
		data = append(data, "allow_other")
	}
	if err := unix.Mount(o.FsName, mnt, "fuse."+o.Name, flags, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount FUSE at %s: %w", mnt, err)
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

// confine replaces this process's root with an empty, read-only tmpfs that
// holds only /proc/self/fd (this process's descriptors, which Setattr
// reaches files through) and /dev/null, mounted on dir, an existing directory; the
// mounts made stay in this process's mount namespace. It refuses to run in
// its parent's mount namespace: the daemon starts servers in their own.
func confine(dir string) error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	// The parent is the daemon that started this server a moment ago.
	if parent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid())); err != nil || parent == self {
		return errors.New("confine: this process may share its parent's mount namespace (the daemon starts volume servers in their own)")
	}
	// Nothing mounted here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("confine: make mounts private: %w", err)
	}
	// Load the local time zone (of the log's times) while /etc/localtime
	// is there: Go reads it on first use.
	_ = time.Local.String()
	fds := fmt.Sprintf("/proc/%d/fd", os.Getpid())
	if err := unix.Mount("ol-shim-volume-server", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=16k,nr_inodes=8,mode=0555"); err != nil {
		return fmt.Errorf("confine: mount an empty root on %s: %w", dir, err)
	}
	inRoot := filepath.Join(dir, "proc", "self", "fd")
	if err := os.MkdirAll(inRoot, 0o555); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	if err := unix.Mount(fds, inRoot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("confine: bind %s: %w", fds, err)
	}
	// go-fuse empties its splice pipes into /dev/null, opened when first
	// needed.
	if err := os.Mkdir(filepath.Join(dir, "dev"), 0o555); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	null := filepath.Join(dir, "dev", "null")
	if err := os.WriteFile(null, nil, 0o444); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	if err := unix.Mount("/dev/null", null, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("confine: bind /dev/null: %w", err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("confine: make the new root read-only: %w", err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	// pivot_root(".", "."): the old root ends up stacked on the new one,
	// and goes with the unmount below.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("confine: pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("confine: unmount the old root: %w", err)
	}
	return unix.Chdir("/")
}
