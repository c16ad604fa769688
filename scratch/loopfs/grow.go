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
	"time"

	"golang.org/x/sys/unix"
)

// # Growing a volume
//
// Grow gives a volume larger limits while no container has it: the file
// system is unmounted, its image extended, checked (e2fsck -f, which
// resize2fs asks for) and grown by resize2fs, and mounted again. A grown
// file system has more than the new limits free (resize2fs adds whole
// block groups, each with its inode table): the excess is taken as at
// Create, inodes by placeholder files and blocks by one file of
// preallocated blocks, both in the file system's root out of the volume's
// reach. The volume's usage is the same before and after, and the new
// limits are exact.
//
// Growing online (ext4's EXT4_IOC_RESIZE_FS) is not done: it needs
// CAP_SYS_RESOURCE, which Docker-in-Docker hosts drop, and a file system
// grown online counts its overhead and the blocks it keeps back for itself
// (2 % of its size, at most 4096) from its size at mount, so the free
// space measured after an online grow is not what the next mount gives:
// the limits could not be made exact until a remount.

// holderFile is the placeholder file whose preallocated blocks take the
// excess blocks of a grown file system.
const holderFile = "blocks"

// free returns the blocks and inodes free to a writer in the file system
// mounted at mountpoint, and its inodes in all.
func free(mountpoint string) (blocks, inodes, files int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return 0, 0, 0, err
	}
	if st.Type != unix.EXT4_SUPER_MAGIC || st.Bsize != BlockSize {
		return 0, 0, 0, fmt.Errorf("%s: not a volume's file system (not mounted?)", mountpoint)
	}
	return int64(st.Bavail), int64(st.Ffree), int64(st.Files), nil
}

// Grow gives the volume of image, mounted at mountpoint with limits old,
// the limits l, each at least old's. No process may have the file system
// open: it is unmounted while it grows (Grow fails, changing nothing, if
// it is busy). On success the volume is mounted at mountpoint again with
// exactly l's limits, its data and usage as they were. If growing fails
// after the file system grew, its limits are made old's again, exactly.
func (m *Manager) Grow(ctx context.Context, image, mountpoint string, old, l Limits) error {
	if err := l.Check(); err != nil {
		return err
	}
	if l.blocks() < old.blocks() || l.Inodes < old.Inodes {
		return fmt.Errorf("limits %d bytes, %d inodes: below the volume's %d bytes, %d inodes (a volume can grow, not shrink)", l.blocks()*BlockSize, l.Inodes, old.blocks()*BlockSize, old.Inodes)
	}
	usedB, usedI, err := Usage(mountpoint, old)
	if err != nil {
		return err
	}
	if usedB < 0 || usedI < 0 {
		return fmt.Errorf("%s: its file system has more free than its limits %d bytes, %d inodes", mountpoint, old.blocks()*BlockSize, old.Inodes)
	}
	if l.blocks() == old.blocks() && l.Inodes == old.Inodes {
		return nil
	}
	_, _, files, err := free(mountpoint)
	if err != nil {
		return err
	}
	fi, err := os.Stat(image)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	size := fi.Size() / BlockSize
	groups := (size + blocksPerGroup - 1) / blocksPerGroup
	perGroup := files / groups // inodes in each block group
	wantB, wantI := l.blocks()-usedB/BlockSize, l.Inodes-usedI
	target := size + (l.blocks() - old.blocks()) + growSlack(size, perGroup)
	for attempt := 0; ; attempt++ {
		if err := m.resize(ctx, image, mountpoint, target, l.mountFlags()); err != nil {
			if attempt > 0 {
				err = errors.Join(err, settle(image, mountpoint, old, usedB, usedI))
			}
			return err
		}
		fb, fi, _, err := free(mountpoint)
		if err != nil {
			return err
		}
		// Room for the placeholders' directory entries and the holder.
		shortB := wantB + fi/64 + 4 - fb
		shortI := wantI + 1 - fi
		if shortB <= 0 && shortI <= 0 {
			break
		}
		if attempt == 3 {
			err := fmt.Errorf("image %s: grown to %d blocks, still %d blocks and %d inodes short of the limits", image, target, max(shortB, 0), max(shortI, 0))
			return errors.Join(err, settle(image, mountpoint, old, usedB, usedI))
		}
		if shortI > 0 {
			target += (shortI + perGroup - 1) / perGroup * blocksPerGroup
		}
		target += max(shortB, 0) + growSlack(target, perGroup)
	}
	if err := settle(image, mountpoint, l, usedB, usedI); err != nil {
		return errors.Join(err, settle(image, mountpoint, old, usedB, usedI))
	}
	return nil
}

// blocksPerGroup is ext4's block group size at BlockSize.
const blocksPerGroup = 8 * BlockSize

// growSlack is what a file system of size blocks with perGroup inodes in
// each group may spend of a grow on its own: the new groups' bitmaps,
// inode tables and descriptor blocks, and the 2 % (at most 4096 blocks)
// ext4 keeps back.
func growSlack(size, perGroup int64) int64 {
	table := (perGroup*256 + BlockSize - 1) / BlockSize
	return 2*(table+8) + min(size/50+1, 4096)
}

// resize unmounts the file system, grows it to size blocks and mounts it
// again.
func (m *Manager) resize(ctx context.Context, image, mountpoint string, size int64, flags uintptr) error {
	if err := unix.Unmount(mountpoint, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w (a process has the volume open)", mountpoint, err)
		}
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	f, err := os.OpenFile(image, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var rerr error
	if fi, err := f.Stat(); err != nil {
		rerr = err
	} else if fi.Size() < size*BlockSize {
		rerr = f.Truncate(size * BlockSize)
	}
	if rerr == nil {
		rerr = fsck(cctx, image, true)
	}
	if rerr == nil {
		out, err := exec.CommandContext(cctx, "resize2fs", image, strconv.FormatInt(size, 10)).CombinedOutput()
		if err != nil {
			rerr = fmt.Errorf("resize2fs %s to %d blocks: %v: %s", image, size, err, strings.TrimSpace(string(out)))
		}
	}
	// Mounted again whatever happened: a volume is never left unmounted.
	if err := m.attachAndMount(f, image, mountpoint, flags); err != nil {
		return errors.Join(rerr, err)
	}
	return rerr
}

// settle takes what the mounted file system has free beyond l's limits,
// for a volume whose data uses usedB bytes and usedI inodes: inodes with
// placeholder files, blocks with the holder's preallocated blocks. Nothing
// may write to the volume meanwhile.
func settle(image, mountpoint string, l Limits, usedB, usedI int64) error {
	rdir := filepath.Join(mountpoint, reserveDir)
	hf, err := os.OpenFile(filepath.Join(rdir, holderFile), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("image %s: reserve blocks: %w", image, err)
	}
	defer hf.Close()
	_, fi, files, err := free(mountpoint)
	if err != nil {
		return err
	}
	extra := fi - (l.Inodes - usedI)
	if extra < 0 {
		return fmt.Errorf("image %s: %d inodes free, %d short of the limit", image, fi, -extra)
	}
	for i := int64(0); i < extra; i++ {
		name := filepath.Join(rdir, "g"+strconv.FormatInt(files, 10)+"-"+strconv.FormatInt(i, 10))
		fd, err := unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("image %s: reserve inodes: %w", image, err)
		}
		unix.Close(fd)
	}
	// Blocks: the holder preallocates the excess (no data is written: the
	// image stays sparse). Its extent tree may take a block of its own,
	// which the next round gives back from its tail.
	for attempt := 0; ; attempt++ {
		fb, _, _, err := free(mountpoint)
		if err != nil {
			return err
		}
		excess := fb - (l.blocks() - usedB/BlockSize)
		if excess == 0 {
			break
		}
		if attempt == 4 {
			return fmt.Errorf("image %s: could not take the %d blocks beyond the limit", image, excess)
		}
		st, err := hf.Stat()
		if err != nil {
			return err
		}
		if excess > 0 {
			err = unix.Fallocate(int(hf.Fd()), 0, st.Size(), excess*BlockSize)
		} else {
			off := max(st.Size()+excess*BlockSize, 0)
			if err = hf.Truncate(off); err == nil && off == 0 {
				err = fmt.Errorf("the holder is empty, and %d blocks are still missing", -excess)
			}
		}
		if err != nil {
			return fmt.Errorf("image %s: reserve %d blocks: %w", image, excess, err)
		}
	}
	b, i, err := Usage(mountpoint, l)
	if err != nil {
		return err
	}
	if b != usedB || i != usedI {
		return fmt.Errorf("image %s: usage after the grow is %d bytes, %d inodes, was %d bytes, %d inodes", image, b, i, usedB, usedI)
	}
	return nil
}
