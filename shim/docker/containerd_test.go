package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestDockerdNotFromASandbox: a root process named dockerd in a sandbox
// (another pid namespace), whose command line names a containerd socket of
// its own, is never taken for dockerd, even where it comes first in /proc.
func TestDockerdNotFromASandbox(t *testing.T) {
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	proc := t.TempDir()
	mk := func(pid int, ns, flag string) {
		dir := filepath.Join(proc, fmt.Sprint(pid))
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "comm"), []byte("dockerd\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\tdockerd\nUid:\t0\t0\t0\t0\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte("dockerd\x00--containerd="+flag+"\x00"), 0o644)
		if err := os.Symlink(ns, filepath.Join(dir, "ns", "pid")); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(proc, "self", "ns"), 0o755)
	os.Symlink(self, filepath.Join(proc, "self", "ns", "pid"))
	mk(5, "pid:[1]", "/var/lib/ol-shim/volumes/x/evil.sock") // in a sandbox's pid namespace
	mk(700, self, "/run/containerd/real.sock")
	pid, uid := dockerdProcess(proc)
	if pid != 700 || uid != 0 {
		t.Errorf("dockerd found: pid %d, uid %d; want 700, the one in ol-shim's own pid namespace", pid, uid)
	}
	if got := containerdFlag(proc, pid); got != "/run/containerd/real.sock" {
		t.Errorf("containerd socket %q; want dockerd's", got)
	}
}
