package scratch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// kernelManager opens a Manager whose default is the kernel backend; under
// CI a host that cannot have it fails the test.
func kernelManager(t *testing.T, root string) *Manager {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the kernel backend needs root")
		}
		t.Skip("the kernel backend needs root")
	}
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendKernel})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cleanupKernel removes what the kernel volumes under root left: their
// file systems stay mounted after Close, by design.
func cleanupKernel(t *testing.T, root string) {
	t.Cleanup(func() {
		mnts, _ := mountsUnder(filepath.Join(root, "mnt"))
		for _, p := range mnts {
			unix.Unmount(p, unix.MNT_DETACH)
		}
	})
}

func TestKernelPOSIXLikeUnderneath(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("needs setpriv (util-linux)")
	}
	parent, err := os.MkdirTemp("", "ol-shim-posix-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	must(t, os.Chmod(parent, 0o755))
	root := filepath.Join(parent, "root")
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer m.Close()
	// The state root is root's alone; the script's "nobody" steps need to
	// reach the volume, as they do inside a container.
	must(t, os.Chmod(root, 0o755))
	must(t, os.Chmod(filepath.Join(root, "mnt"), 0o755))
	must(t, m.Create("posix", map[string]string{OptSize: "256M", OptInodes: "100000", OptMode: "0775"}))
	vol, err := m.Mount("posix", "test")
	must(t, err)
	must(t, os.Chmod(filepath.Dir(vol), 0o755))
	must(t, os.Chmod(vol, 0o777))
	plain := filepath.Join(parent, "plain")
	must(t, os.Mkdir(plain, 0o777))
	must(t, os.Chmod(plain, 0o777))
	run := func(dir string) []string {
		out, err := exec.Command("sh", "-c", posixScript, "sh", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("script in %s: %v\n%s", dir, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	want, got := run(plain), run(vol)
	if len(want) != len(got) {
		t.Fatalf("transcripts differ in length: %d plain, %d volume", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("plain:  %s\nvolume: %s", want[i], got[i])
		}
	}
	// Device nodes: made (root has CAP_MKNOD here) but inert: nodev.
	must(t, unix.Mknod(filepath.Join(vol, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	if f, err := os.OpenFile(filepath.Join(vol, "null"), os.O_WRONLY, 0); err == nil || !errors.Is(err, syscall.EACCES) {
		f.Close()
		t.Errorf("open of a device node in a kernel volume: %v, want EACCES (nodev)", err)
	}
	must(t, m.Unmount("posix", "test"))
	must(t, m.Remove("posix"))
}

// TestKernelVolumeLifecycle: limits and usage, data through a restart and
// a simulated reboot (file system unmounted, loop device gone), and a
// removal that leaves nothing.
func TestKernelVolumeLifecycle(t *testing.T) {
	root := t.TempDir()
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	if b, why := m.Backend(); b != BackendKernel {
		t.Fatalf("default backend %s (%s), want kernel", b, why)
	}
	must(t, m.Create("v", map[string]string{OptSize: "8M", OptInodes: "500", OptUID: "1000", OptGID: "1000"}))
	if err := m.Create("v", map[string]string{OptSize: "8M", OptInodes: "500", OptUID: "1000", OptGID: "1000"}); err != nil {
		t.Errorf("create again with the same options: %v", err)
	}
	if err := m.Create("tiny", map[string]string{OptSize: "100K", OptBackend: BackendKernel}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a 100K kernel volume: %v, want ErrInvalid naming the least size", err)
	}
	path, err := m.Mount("v", "c1")
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	if st.Uid != 1000 || st.Mode&0o777 != DefaultMode {
		t.Errorf("volume root: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	// The 22 MB case: names through new directories until the volume is
	// full. Every directory block counts; the file system stops it.
	long := strings.Repeat("n", 240)
	var made int
	var full error
	for d := 0; d < 60 && full == nil; d++ {
		dir := filepath.Join(path, fmt.Sprintf("d%02d", d))
		if full = os.Mkdir(dir, 0o755); full != nil {
			break
		}
		for i := 0; i < 1000 && full == nil; i++ {
			var f *os.File
			if f, full = os.Create(filepath.Join(dir, fmt.Sprintf("%s%04d", long, i))); full == nil {
				f.Close()
				made++
			}
		}
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Errorf("names through new directories: stopped by %v after %d, want ENOSPC", full, made)
	}
	s, err := m.Get("v")
	must(t, err)
	if s.BytesUsed > 8<<20 || s.InodesUsed > 500 || s.InodesUsed < 1 {
		t.Errorf("usage %d bytes, %d inodes; limits 8M and 500", s.BytesUsed, s.InodesUsed)
	}
	must(t, os.RemoveAll(filepath.Join(path, "d00")))
	must(t, os.WriteFile(filepath.Join(path, "keep"), []byte("kept"), 0o644))

	// Restart: the file system stays mounted and is not detached.
	must(t, m.Close())
	m = kernelManager(t, root)
	if b, _ := os.ReadFile(filepath.Join(path, "keep")); string(b) != "kept" {
		t.Fatalf("after a restart: %q", b)
	}
	// Reboot: nothing mounted, no loop device; Open mounts it again.
	must(t, m.Close())
	must(t, unix.Unmount(m.mountDir("v"), 0))
	m = kernelManager(t, root)
	if b, _ := os.ReadFile(filepath.Join(path, "keep")); string(b) != "kept" {
		t.Fatalf("after a reboot: %q", b)
	}
	// (Mount counts come from Docker at Open; none here.)
	_, err = m.Mount("v", "c1")
	must(t, err)
	// Remove: refused while mounted; then nothing left.
	if err := m.Remove("v"); !errors.Is(err, ErrInUse) {
		t.Errorf("remove while mounted: %v", err)
	}
	must(t, m.Unmount("v", "c1"))
	image := m.imagePath("v")
	must(t, m.Remove("v"))
	for _, p := range []string{image, m.mountDir("v")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after remove: %v", p, err)
		}
	}
	if ok, _ := mountinfo.Mounted(m.mountDir("v")); ok {
		t.Error("still mounted after remove")
	}
	out, _ := exec.Command("losetup", "-j", image).Output()
	if len(out) > 0 {
		t.Errorf("loop device left: %s", out)
	}
	must(t, m.Close())
}

// A volume whose size the host's free space cannot cover is refused.
func TestKernelRefusesOvercommit(t *testing.T) {
	root := t.TempDir()
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer m.Close()
	var st unix.Statfs_t
	must(t, unix.Statfs(root, &st))
	free := int64(st.Bavail) * st.Bsize
	err := m.Create("huge", map[string]string{OptSize: fmt.Sprint(free + 1<<30)})
	if err == nil || !strings.Contains(err.Error(), "bytes free") {
		t.Errorf("a volume larger than the host's free space: %v", err)
	}
	if _, err := os.Stat(m.imagePath("huge")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused volume left an image: %v", err)
	}
}

// TestKernelCreateHoldsNoOne: a kernel volume's create (mkfs and mount,
// about 20 ms, far longer on a loaded host) does not hold other volumes'
// calls: while one create's mkfs is held (a mkfs.ext4 on PATH that waits
// for the test before running the real one), listing, getting, and
// creating and removing other volumes all finish.
func TestKernelCreateHoldsNoOne(t *testing.T) {
	real, err := exec.LookPath("mkfs.ext4")
	must(t, err)
	bin := t.TempDir()
	gate := filepath.Join(bin, "gate")
	must(t, unix.Mkfifo(gate, 0o600))
	waiting := filepath.Join(bin, "waiting")
	script := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *held*) touch %s; read x < %s ;; esac\nexec %s \"$@\"\n", waiting, gate, real)
	must(t, os.WriteFile(filepath.Join(bin, "mkfs.ext4"), []byte(script), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	root := t.TempDir()
	cleanupKernel(t, root)
	m := kernelManager(t, root)
	defer m.Close()
	must(t, m.Create("before", map[string]string{OptSize: "4M"}))

	held := make(chan error, 1)
	go func() { held <- m.Create("held", map[string]string{OptSize: "4M"}) }()
	// Wait until the held create is in its mkfs, at the gate.
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(waiting); err != nil; _, err = os.Stat(waiting) {
		if time.Now().After(deadline) {
			t.Fatal("the held create never reached mkfs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	others := make(chan error, 1)
	go func() {
		if _, err := m.Get("before"); err != nil {
			others <- fmt.Errorf("get: %w", err)
			return
		}
		m.List()
		if err := m.Create("other", map[string]string{OptSize: "4M"}); err != nil {
			others <- fmt.Errorf("create: %w", err)
			return
		}
		others <- m.Remove("other")
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Errorf("other volumes' calls during a create: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("other volumes' calls waited behind a create's mkfs")
	}
	select {
	case err := <-held:
		t.Fatalf("the held create ended before its mkfs ran: %v", err)
	default:
	}
	g, err := os.OpenFile(gate, os.O_WRONLY, 0)
	must(t, err)
	g.Write([]byte("go\n"))
	g.Close()
	if err := <-held; err != nil {
		t.Fatalf("the held create: %v", err)
	}
	if _, err := m.Get("held"); err != nil {
		t.Errorf("the held volume after its create: %v", err)
	}
}
