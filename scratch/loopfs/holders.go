package loopfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Holders returns every mount of image's file system other than the one
// at mountpoint in this mount namespace: in any mount namespace of the host
// (a container's bind of the volume, which the caller's counts may not
// know of), each as "pid N: PATH". A propagated copy of the caller's own
// mount (in its peer group: "shared:N" or "master:N" of the same N, as a
// systemd service's namespace has) is not one: it goes when the caller's
// mount does. Grow and Remove must not go ahead while
// there is one: the kernel, not a count, says whether a file system is in
// use. The file system is known by its device: the one mounted at
// mountpoint, and any loop device whose backing file is image.
func Holders(image, mountpoint string) ([]string, error) {
	devs := map[string]bool{}
	if Mounted(mountpoint) {
		var st unix.Stat_t
		if err := unix.Stat(mountpoint, &st); err != nil {
			return nil, err
		}
		devs[fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))] = true
	}
	img, err := filepath.EvalSymlinks(image)
	if err != nil {
		img = image
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range loops {
		b, err := os.ReadFile(bf)
		if err != nil || strings.TrimSuffix(string(b), "\n") != img {
			continue
		}
		if d, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(bf)), "dev")); err == nil {
			devs[strings.TrimSpace(string(d))] = true
		}
	}
	if len(devs) == 0 {
		return nil, nil
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return nil, err
	}
	mnt := filepath.Clean(mountpoint)
	peers := map[string]bool{} // peer groups of the caller's own mount
	if info, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range bytes.Split(info, []byte("\n")) {
			f := strings.Fields(string(line))
			if len(f) > 6 && devs[f[2]] && f[4] == mnt {
				for _, opt := range f[6:] {
					if opt == "-" {
						break
					}
					if g, ok := strings.CutPrefix(opt, "shared:"); ok {
						peers[g] = true
					}
				}
			}
		}
	}
	propagated := func(f []string) bool {
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if g, ok := strings.CutPrefix(opt, "shared:"); ok && peers[g] {
				return true
			}
			if g, ok := strings.CutPrefix(opt, "master:"); ok && peers[g] {
				return true
			}
		}
		return false
	}
	seen := map[string]bool{}
	var out []string
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(info, []byte("\n")) {
			f := strings.Fields(string(line))
			if len(f) < 5 || !devs[f[2]] {
				continue
			}
			if ns == self && f[4] == mnt {
				continue // the caller's own mount
			}
			if len(f) > 6 && propagated(f) {
				continue
			}
			out = append(out, fmt.Sprintf("pid %d: %s", pid, f[4]))
		}
	}
	return out, nil
}
