package scratch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSymlinkRaceStaysInVolume is the attack from inside a sandbox: one
// thread keeps swapping a directory of the volume for a symlink to a host
// directory and back, while three others create, chmod, truncate, mkdir,
// link, rename and unlink under it. Whatever the timing, nothing outside
// the volume may be created or changed: the server resolves every name
// inside the volume's directory.
//
// The racer runs in a mount namespace where the host directory is hidden
// (as a container's would be), so that what it reaches, it reaches only
// through the server. OL_SHIM_RACE_SECONDS sets how long (10 s by default;
// make integration runs 60).
func TestSymlinkRaceStaysInVolume(t *testing.T) {
	f := mountQuota(t, 64<<20, 100_000)
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("OL_SHIM_RACE_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	outside := t.TempDir()
	must(t, os.Mkdir(filepath.Join(outside, "etc"), 0o755))
	hostFiles := map[string]string{"secret": "host secret", "victim": "host victim", "ren": "host ren"}
	for name, data := range hostFiles {
		must(t, os.WriteFile(filepath.Join(outside, "etc", name), []byte(data), 0o600))
	}
	before := listTree(t, outside)
	// The volume: a/etc with files of the same names, and x to link from.
	must(t, os.MkdirAll(f.path("a/etc"), 0o755))
	for name := range hostFiles {
		must(t, os.WriteFile(f.path("a/etc/"+name), []byte("volume "+name), 0o600))
	}
	must(t, os.WriteFile(f.path("x"), []byte("x"), 0o644))

	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount -t tmpfs ol-shim-hide %s && exec %s -test.run='^TestSymlinkRacer$'", outside, os.Args[0]))
	cmd.Env = append(os.Environ(), "OL_SHIM_RACER="+f.mnt, "OL_SHIM_RACER_TARGET="+outside, "OL_SHIM_RACER_SECONDS="+strconv.Itoa(secs))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("racer: %v\n%s", err, out)
	}
	t.Logf("racer for %ds: %s", secs, out)

	after := listTree(t, outside)
	if !slices.Equal(before, after) {
		t.Errorf("the host directory changed under the race:\nbefore %v\nafter  %v", before, after)
	}
	for name, data := range hostFiles {
		p := filepath.Join(outside, "etc", name)
		b, err := os.ReadFile(p)
		fi, serr := os.Stat(p)
		if err != nil || string(b) != data || serr != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("host file %s: %q, mode %v (%v, %v); want %q, 0600", name, b, fi.Mode(), err, serr, data)
		}
	}
}

// TestSymlinkRacer is the racer's side of TestSymlinkRaceStaysInVolume,
// run in its own process.
func TestSymlinkRacer(t *testing.T) {
	mnt := os.Getenv("OL_SHIM_RACER")
	if mnt == "" {
		t.Skip("run by TestSymlinkRaceStaysInVolume")
	}
	target := os.Getenv("OL_SHIM_RACER_TARGET")
	secs, _ := strconv.Atoi(os.Getenv("OL_SHIM_RACER_SECONDS"))
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	stop := time.Now().Add(time.Duration(secs) * time.Second)
	var swaps, ops, hits atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for time.Now().Before(stop) {
			if os.Rename(p("a"), p("b")) != nil {
				continue
			}
			os.Symlink(target, p("a"))
			os.Remove(p("a"))
			os.Rename(p("b"), p("a"))
			swaps.Add(1)
		}
	})
	for w := range 6 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				name := fmt.Sprintf("%d-%d", w, i)
				var err error
				switch op := i % 12; {
				case op >= 8: // creates most: the narrowest window wants the most tries
					var fh *os.File
					if fh, err = os.OpenFile(p("a/etc/new-"+name), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
						fh.Close()
					}
				case op == 0:
					var fh *os.File
					if fh, err = os.OpenFile(p("a/etc/new-"+name), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
						fh.WriteString("from the sandbox")
						fh.Close()
					}
				case op == 1:
					err = os.Chmod(p("a/etc/secret"), 0o777)
				case op == 2:
					err = os.Truncate(p("a/etc/secret"), 0)
				case op == 3:
					err = os.Mkdir(p("a/etc/dir-"+name), 0o755)
				case op == 4:
					err = os.Link(p("x"), p("a/etc/link-"+name))
				case op == 5:
					if err = os.Rename(p("a/etc/ren"), p("a/etc/ren2")); err == nil {
						os.Rename(p("a/etc/ren2"), p("a/etc/ren"))
					}
				case op == 6:
					if err = os.Remove(p("a/etc/victim")); err == nil {
						os.WriteFile(p("a/etc/victim"), []byte("again"), 0o600)
					}
				case op == 7:
					err = os.Chtimes(p("a/etc/secret"), time.Unix(0, 0), time.Unix(0, 0))
				}
				ops.Add(1)
				if err == nil {
					hits.Add(1)
				} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, os.ErrExist) {
					_ = err // other errors are part of the race too
				}
			}
		})
	}
	wg.Wait()
	fmt.Printf("%d swaps, %d operations, %d succeeded", swaps.Load(), ops.Load(), hits.Load())
	os.Exit(0)
}

// listTree lists every path under dir with its mode and size.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out = append(out, fmt.Sprintf("%s %v %d", rel, fi.Mode(), fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStaleNodeNotActedOn: the server finds a node again by its path at
// every call. When another inode has taken that path (as a rename racing
// the call does, before the server's tree follows it; here done beneath
// the mount, which holds the window open), a chmod by the node's owner must
// not land on the other inode, which the kernel checked no permission on.
// The server answers ESTALE; the kernel looks the name up again and checks
// the caller against what is there now.
func TestStaleNodeNotActedOn(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("needs setpriv (util-linux)")
	}
	parent, err := os.MkdirTemp("", "ol-shim-stale-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	must(t, os.Chmod(parent, 0o755))
	f := &qfs{t: t, dir: filepath.Join(parent, "data"), mnt: filepath.Join(parent, "mnt")}
	for _, d := range []string{f.dir, f.mnt} {
		must(t, os.Mkdir(d, 0o755))
	}
	f.mount(64*mib, 1000)
	must(t, os.WriteFile(filepath.Join(f.dir, "victim"), []byte("secret"), 0o600))
	must(t, os.WriteFile(filepath.Join(f.dir, "mine"), nil, 0o600))
	must(t, os.Chown(filepath.Join(f.dir, "mine"), 65534, 65534))
	if _, err := os.Stat(f.path("mine")); err != nil { // the kernel knows "mine" now
		t.Fatal(err)
	}
	must(t, os.Rename(filepath.Join(f.dir, "mine"), filepath.Join(f.dir, "mine.moved")))
	must(t, os.Rename(filepath.Join(f.dir, "victim"), filepath.Join(f.dir, "mine")))
	out, err := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "chmod", "0666", f.path("mine")).CombinedOutput()
	var st syscall.Stat_t
	must(t, syscall.Stat(filepath.Join(f.dir, "mine"), &st))
	if st.Mode&0o777 != 0o600 {
		t.Errorf("a chmod by the owner of one node changed another inode at its path, owned by %d: mode %o", st.Uid, st.Mode&0o777)
	}
	if err == nil || !strings.Contains(string(out), "not permitted") {
		t.Errorf("chmod of a node whose path holds another user's inode: %v %s, want EPERM", err, out)
	}
}
