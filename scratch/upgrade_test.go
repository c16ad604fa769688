package scratch

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUpgradeFromEarlierLayout opens a state root made by the version
// before the volume work of this series (commit 88e39f1^: its own FUSE
// mounts in the daemon, directories 0711), made by that version's own
// scratch package (testdata/upgrade/88e39f1.tar.gz: a plain volume and a
// quota'd one, size=1M inodes=100 uid=1000 gid=1000 mode=0750, each with
// files; testdata/upgrade/mkfixture.go.txt is the program). Its records, options and data work as they were, its quota still
// holds, and the state root is tightened to 0700.
func TestUpgradeFromEarlierLayout(t *testing.T) {
	needFUSE(t) // root: the fixture's owners, and the quota's FUSE mount
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o711); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", root, "--numeric-owner", "--same-owner", "-xzf", "testdata/upgrade/88e39f1.tar.gz").CombinedOutput(); err != nil {
		t.Fatalf("unpack the fixture: %v\n%s", err, out)
	}
	m := openManager(t, root, nil)

	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "mnt")} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want 0700 after the upgrade", d, st.Mode(), err)
		}
	}
	q, err := m.Get("quota")
	if err != nil {
		t.Fatal(err)
	}
	if o := q.Options; o.Size != 1<<20 || o.Inodes != 100 || o.UID != 1000 || o.GID != 1000 || o.Mode != 0o750 || o.Passthrough {
		t.Errorf("quota's options after the upgrade: %+v", o)
	}
	if q.BytesUsed < 256<<10 || q.InodesUsed < 3 {
		t.Errorf("quota's usage after the upgrade: %d bytes, %d inodes; want its 256 KiB file and 3 entries counted", q.BytesUsed, q.InodesUsed)
	}

	for name, want := range map[string]string{"plain": "plain.txt", "quota": "dir/quota.txt"} {
		p, err := m.Mount(name, "c-"+name)
		if err != nil {
			t.Fatalf("mount %s: %v", name, err)
		}
		b, err := os.ReadFile(filepath.Join(p, want))
		if err != nil || !bytes.HasPrefix(b, []byte("kept in a")) {
			t.Errorf("volume %s: %s after the upgrade: %q, %v", name, want, b, err)
		}
		if name == "quota" {
			st, err := os.Stat(p)
			if err != nil || st.Mode().Perm() != 0o750 || st.Sys().(*syscall.Stat_t).Uid != 1000 {
				t.Errorf("quota's root after the upgrade: %v, %v", st.Mode(), err)
			}
			// The quota holds: 256 KiB are used of 1 MiB.
			err = os.WriteFile(filepath.Join(p, "more"), make([]byte, 1<<20), 0o600)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("1 MiB more into the upgraded 1 MiB volume: %v, want ENOSPC", err)
			}
		}
		if err := m.Unmount(name, "c-"+name); err != nil {
			t.Errorf("unmount %s: %v", name, err)
		}
	}
}
