package scratch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func openManager(t *testing.T, root string, inUse func(context.Context) (map[string]int, error)) *Manager {
	t.Helper()
	m, err := Open(context.Background(), Config{Root: root, InUse: inUse, Backend: BackendFUSE})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestManagerPlainVolume(t *testing.T) {
	needFUSE(t) // root, for ownership
	root := t.TempDir()
	m := openManager(t, root, nil)
	must(t, m.Create("plain", map[string]string{"uid": "1000", "gid": "1000", "mode": "0700"}))
	p, err := m.Path("plain")
	must(t, err)
	if p != filepath.Join(root, "volumes", "plain") {
		t.Errorf("path %s", p)
	}
	fi, err := os.Stat(p)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o700 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("volume root %v owned %d:%d, want 0700 1000:1000", fi.Mode(), st.Uid, st.Gid)
	}
	// Creating again: same or no options succeed, others do not.
	must(t, m.Create("plain", nil))
	must(t, m.Create("plain", map[string]string{"uid": "1000", "gid": "1000", "mode": "0700"}))
	if err := m.Create("plain", map[string]string{"size": "1M"}); !errors.Is(err, ErrExists) {
		t.Errorf("re-create with other options: %v, want ErrExists", err)
	}
	// A plain volume is a directory: mounting starts nothing.
	mp, err := m.Mount("plain", "c1")
	must(t, err)
	if mp != p {
		t.Errorf("mountpoint %s, want %s", mp, p)
	}
	if mnts, _ := mountsUnder(root); len(mnts) != 0 {
		t.Errorf("plain volume mounted something: %v", mnts)
	}
	must(t, m.Unmount("plain", "c1"))
	must(t, m.Remove("plain"))
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("data left after Remove: %v", err)
	}
	if _, err := m.Get("plain"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
}

func TestManagerMountCounting(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m := openManager(t, root, nil)
	must(t, m.Create("q", map[string]string{"size": "8M"}))
	mp, err := m.Mount("q", "a")
	must(t, err)
	if mnts, _ := mountsUnder(root); len(mnts) != 1 || mnts[0] != mp {
		t.Fatalf("mounts %v, want FUSE at %s", mnts, mp)
	}
	// Docker mounts the same ID twice for docker cp; and a second container.
	_, err = m.Mount("q", "a")
	must(t, err)
	_, err = m.Mount("q", "b")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(mp, "f"), []byte("data"), 0o644))
	if err := m.Remove("q"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "mounted 3 times") {
		t.Errorf("Remove while mounted: %v", err)
	}
	for _, id := range []string{"a", "b"} {
		must(t, m.Unmount("q", id))
		if mnts, _ := mountsUnder(root); len(mnts) != 1 {
			t.Fatalf("unmounted while still in use (after %s)", id)
		}
	}
	st, err := m.Get("q")
	must(t, err)
	if st.Mounts != 1 || st.BytesUsed != 4096 || st.InodesUsed != 1 {
		t.Errorf("status %+v", st)
	}
	must(t, m.Unmount("q", "a"))
	if mnts, _ := mountsUnder(root); len(mnts) != 0 {
		t.Errorf("still mounted after the last Unmount: %v", mnts)
	}
	if err := m.Unmount("q", "a"); err == nil {
		t.Error("Unmount of a volume not mounted succeeded")
	}
	// The data stays in the volume's directory.
	if b, err := os.ReadFile(filepath.Join(root, "volumes", "q", "f")); err != nil || string(b) != "data" {
		t.Errorf("data: %q, %v", b, err)
	}
	must(t, m.Remove("q"))
}

func TestManagerFailedMountCountsNothing(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m := openManager(t, root, nil)
	must(t, m.Create("q", map[string]string{"size": "8M"}))
	// Break the mountpoint: a file where the directory should be.
	mnt := filepath.Join(root, "mnt", "q")
	must(t, os.Remove(mnt))
	must(t, os.WriteFile(mnt, nil, 0o600))
	if _, err := m.Mount("q", "a"); err == nil || !strings.Contains(err.Error(), `volume "q"`) {
		t.Fatalf("Mount on a broken mountpoint: %v", err)
	}
	must(t, m.Remove("q")) // nothing counted: removable
}

func TestManagerSurvivesRestart(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	must(t, err)
	must(t, m.Create("keep", map[string]string{"size": "8M", "inodes": "100"}))
	mp, err := m.Mount("keep", "x")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(mp, "f"), []byte("survives"), 0o644))
	must(t, m.Unmount("keep", "x"))
	must(t, m.Close())

	m = openManager(t, root, nil)
	l := m.List()
	if len(l) != 1 || l[0].Name != "keep" || l[0].Options.Size != 8<<20 || l[0].Options.Inodes != 100 {
		t.Fatalf("after restart: %+v", l)
	}
	mp, err = m.Mount("keep", "y")
	must(t, err)
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "survives" {
		t.Errorf("data after restart: %q, %v", b, err)
	}
	must(t, m.Unmount("keep", "y"))
}

// Mounts counted at start for containers Docker listed (callers unknown)
// are forgotten once no container refers to the volume: the container was
// being removed as the previous process died, and its Unmount went there.
// A volume a container still refers to, or that a known caller mounted,
// stays mounted.
func TestManagerDropAnonymous(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	must(t, err)
	for _, n := range []string{"gone", "used", "known"} {
		must(t, m.Create(n, map[string]string{"size": "8M"}))
	}
	must(t, m.Close())
	m = openManager(t, root, func(context.Context) (map[string]int, error) {
		return map[string]int{"gone": 1, "used": 1}, nil
	})
	_, err = m.Mount("known", "c1")
	must(t, err)
	mounted := func() []string {
		mnts, err := mountsUnder(filepath.Join(root, "mnt"))
		must(t, err)
		var names []string
		for _, p := range mnts {
			names = append(names, filepath.Base(p))
		}
		slices.Sort(names)
		return names
	}
	if got := mounted(); !slices.Equal(got, []string{"gone", "known", "used"}) {
		t.Fatalf("mounted at start: %v", got)
	}
	released := m.DropAnonymous(func(name string) bool { return name == "used" })
	if !slices.Equal(released, []string{"gone"}) {
		t.Errorf("released %v, want [gone]", released)
	}
	if got := mounted(); !slices.Equal(got, []string{"known", "used"}) {
		t.Errorf("mounted after the drop: %v", got)
	}
	must(t, m.Remove("gone")) // no longer in use
	must(t, m.Unmount("used", "its-container-after-restart"))
	must(t, m.Unmount("known", "c1"))
	if got := mounted(); len(got) != 0 {
		t.Errorf("still mounted: %v", got)
	}
}

func TestManagerSecondInstanceRefused(t *testing.T) {
	root := t.TempDir()
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	must(t, err)
	defer m.Close()
	_, err = Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second Open on one root: %v", err)
	}
}

// TestHelperCrashedServer is not a test: run as a child process, it mounts
// a volume and then sleeps until killed, leaving a stale FUSE mount.
func TestHelperCrashedServer(t *testing.T) {
	root := os.Getenv("OL_SHIM_TEST_CRASH_ROOT")
	if root == "" {
		t.Skip("helper process for TestManagerStaleMount")
	}
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	mp, err := m.Mount("v", "c1")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("before the crash"), 0o644); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	time.Sleep(time.Hour)
}

func TestManagerStaleMount(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	must(t, err)
	must(t, m.Create("v", map[string]string{"size": "8M"}))
	must(t, m.Close())

	// A child process serves the volume and is killed: its mount is stale.
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperCrashedServer$")
	cmd.Env = append(os.Environ(), "OL_SHIM_TEST_CRASH_ROOT="+root)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "mounted") {
		cmd.Process.Kill()
		t.Fatalf("helper: %q", buf[:n])
	}
	must(t, cmd.Process.Kill())
	_ = cmd.Wait()
	mnt := filepath.Join(root, "mnt", "v")
	if _, err := os.Stat(filepath.Join(mnt, "f")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after the crash: %v, want ENOTCONN from the stale mount", err)
	}

	// Docker says one container still uses it: detached and served again.
	m = openManager(t, root, func(context.Context) (map[string]int, error) { return map[string]int{"v": 1}, nil })
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "before the crash" {
		t.Fatalf("after restart: %q, %v", b, err)
	}
	if mnts, _ := mountsUnder(root); len(mnts) != 1 {
		t.Errorf("mounts after recovery: %v, want exactly the new one", mnts)
	}
	// That container's Unmount (with an ID we never saw) releases it.
	must(t, m.Unmount("v", "unknown-after-restart"))
	if mnts, _ := mountsUnder(root); len(mnts) != 0 {
		t.Errorf("still mounted: %v", mnts)
	}
}

// TestDriverProtocol drives the plugin protocol over a unix socket, as
// dockerd does.
func TestDriverProtocol(t *testing.T) {
	needFUSE(t)
	m := openManager(t, t.TempDir(), nil)
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	l, err := Listen(sock, "")
	must(t, err)
	go NewDriver(m, nil).Serve(l)
	t.Cleanup(func() { l.Close() })
	fi, err := os.Stat(sock)
	must(t, err)
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	call := func(method string, req any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(req)
		resp, err := hc.Post("http://plugin/VolumeDriver."+method, "application/vnd.docker.plugins.v1+json", bytes.NewReader(b))
		must(t, err)
		defer resp.Body.Close()
		var out map[string]any
		must(t, json.NewDecoder(resp.Body).Decode(&out))
		return out
	}
	if out := call("Capabilities", nil); fmt.Sprint(out["Capabilities"]) != "map[Scope:local]" {
		t.Errorf("capabilities %v", out)
	}
	if out := call("Create", map[string]any{"Name": "v", "Opts": map[string]string{"size": "8M"}}); out["Err"] != nil && out["Err"] != "" {
		t.Fatalf("create: %v", out)
	}
	for _, bad := range []struct {
		req  map[string]any
		want string
	}{
		{map[string]any{"Name": "../x"}, `volume name "../x"`},
		{map[string]any{"Name": "w", "Opts": map[string]string{"colour": "red"}}, `volume "w": option "colour"`},
		{map[string]any{"Name": "w", "Opts": map[string]string{"size": "lots"}}, `option size="lots"`},
	} {
		if out := call("Create", bad.req); !strings.Contains(fmt.Sprint(out["Err"]), bad.want) {
			t.Errorf("create %v: %v, want an error with %q", bad.req, out, bad.want)
		}
	}
	out := call("Mount", map[string]any{"Name": "v", "ID": "c1"})
	mp, _ := out["Mountpoint"].(string)
	if mp == "" {
		t.Fatalf("mount: %v", out)
	}
	must(t, os.WriteFile(filepath.Join(mp, "f"), make([]byte, 10000), 0o644))
	out = call("Get", map[string]any{"Name": "v"})
	status := out["Volume"].(map[string]any)["Status"].(map[string]any)
	if status["bytes_used"] != float64(12288) || status["size"] != float64(8<<20) || status["mounts"] != float64(1) {
		t.Errorf("status %v", status)
	}
	if out := call("Remove", map[string]any{"Name": "v"}); !strings.Contains(fmt.Sprint(out["Err"]), `volume "v": volume in use`) {
		t.Errorf("remove while mounted: %v", out)
	}
	call("Unmount", map[string]any{"Name": "v", "ID": "c1"})
	if out := call("List", nil); len(out["Volumes"].([]any)) != 1 {
		t.Errorf("list: %v", out)
	}
	if out := call("Remove", map[string]any{"Name": "v"}); out["Err"] != nil && out["Err"] != "" {
		t.Errorf("remove: %v", out)
	}
	if out := call("Get", map[string]any{"Name": "v"}); !strings.Contains(fmt.Sprint(out["Err"]), "no such volume") {
		t.Errorf("get after remove: %v", out)
	}
}

// TestSetuidInVolumeNotRunnable: what a container plants in a volume (here
// a setuid-root copy of id) cannot be run by a host user: the directories
// that hold volume data are root's alone, whatever the modes inside.
func TestSetuidInVolumeNotRunnable(t *testing.T) {
	needFUSE(t) // root
	parent, err := os.MkdirTemp("", "ol-shim-setuid-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	must(t, os.Chmod(parent, 0o755)) // as /var/lib is
	root := filepath.Join(parent, "root")
	// A state root made by an earlier version, with its looser modes.
	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "mnt")} {
		must(t, os.MkdirAll(d, 0o711))
		must(t, os.Chmod(d, 0o711))
	}
	m := openManager(t, root, nil)
	must(t, m.Create("planted", map[string]string{"mode": "0755"}))
	p, err := m.Path("planted")
	must(t, err)
	bin, err := os.ReadFile("/usr/bin/id")
	must(t, err)
	planted := filepath.Join(p, "id")
	must(t, os.WriteFile(planted, bin, 0o755))
	must(t, os.Chmod(planted, 0o4755))
	cmd := exec.Command(planted, "-u")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("uid 65534 ran a setuid-root binary planted in a volume (it printed euid %s; where setuid is honoured, that is root)", strings.TrimSpace(string(out)))
	}
	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "mnt")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v (%v); want 0700", d, fi.Mode(), err)
		}
	}
}
