package ociruntime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	sock := "/run/ol-shim/ol-shim.sock"
	for _, c := range []struct {
		argv []string
		want Args
		bad  bool
	}{
		{[]string{"--root", "/r", "--log", "/l.json", "--log-format", "json", "pause", "abc"},
			Args{Root: "/r", Log: "/l.json", LogFormat: "json", Command: "pause", Rest: []string{"abc"}, Socket: sock,
				Runc: []string{"--root", "/r", "--log", "/l.json", "--log-format", "json", "pause", "abc"}}, false},
		{[]string{"--root=/r", "--systemd-cgroup", "resume", "x"},
			Args{Root: "/r", LogFormat: "text", SystemdCgroup: true, Command: "resume", Rest: []string{"x"}, Socket: sock,
				Runc: []string{"--root=/r", "--systemd-cgroup", "resume", "x"}}, false},
		{[]string{"--ol-shim-socket", "/s.sock", "--debug", "create", "--bundle", "/b", "id"},
			Args{Root: DefaultRoot, LogFormat: "text", Command: "create", Rest: []string{"--bundle", "/b", "id"}, Socket: "/s.sock",
				Runc: []string{"--debug", "create", "--bundle", "/b", "id"}}, false},
		{[]string{"--version"}, Args{Root: DefaultRoot, LogFormat: "text", Command: "--version", Socket: sock, Runc: []string{"--version"}}, false},
		{[]string{"--no-such-flag", "pause", "x"}, Args{}, true},
		{[]string{"--root"}, Args{}, true},
	} {
		got, err := Parse(c.argv)
		if c.bad {
			if err == nil {
				t.Errorf("Parse(%q): no error", c.argv)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.argv, got, err, c.want)
		}
	}
}

// writeState writes runc's state file of id under root with cgroup paths.
func writeState(t *testing.T, root, id, paths string) string {
	t.Helper()
	dir := filepath.Join(root, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "state.json")
	if err := os.WriteFile(f, []byte(`{"id":"`+id+`","cgroup_paths":`+paths+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFreezeRefusesWhatItCannotTrust: ids that are paths, state files that
// are symlinks, too big, not JSON, or whose cgroup is not under
// /sys/fs/cgroup: nothing is written, and the command goes to runc
// (ErrNoState).
func TestFreezeRefusesWhatItCannotTrust(t *testing.T) {
	root := t.TempDir()
	victim := filepath.Join(t.TempDir(), "freezer.state")
	os.WriteFile(victim, []byte("THAWED"), 0o644)
	writeState(t, root, "outside", fmt.Sprintf(`{"freezer":%q}`, filepath.Dir(victim)))
	writeState(t, root, "dotdot", `{"freezer":"/sys/fs/cgroup/../../tmp"}`)
	writeState(t, root, "garbage", `not json`)
	big := writeState(t, root, "big", `{}`)
	os.WriteFile(big, []byte(strings.Repeat(" ", maxState+1)+"{}"), 0o600)
	os.MkdirAll(filepath.Join(root, "link"), 0o700)
	os.Symlink(writeState(t, t.TempDir(), "real", `{"freezer":"/sys/fs/cgroup/freezer"}`), filepath.Join(root, "link", "state.json"))
	for _, id := range []string{"../outside", "a/b", "..", "", "outside", "dotdot", "garbage", "big", "link", "missing"} {
		err := Freeze(root, id, true)
		if !errors.Is(err, ErrNoState) {
			t.Errorf("Freeze(%q): %v; want ErrNoState (handed to runc)", id, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "THAWED" {
		t.Errorf("a file outside /sys/fs/cgroup was written: %q", b)
	}
	if err := Freeze("relative", "x", true); !errors.Is(err, ErrNoState) {
		t.Errorf("a relative root: %v", err)
	}
}

// TestFreezeRealCgroup freezes and thaws a real cgroup holding a sleep, as
// runc's state names it, and checks what the kernel says of it.
func TestFreezeRealCgroup(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (CI runs as root)")
		}
		t.Skip("needs root")
	}
	name := fmt.Sprintf("ol-shim-freeze-test-%d", os.Getpid())
	var dir, key, stateFile string
	var frozen, thawed string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dir, key, stateFile, frozen, thawed = filepath.Join("/sys/fs/cgroup", name), "", "cgroup.events", "frozen 1", "frozen 0"
	} else {
		dir, key, stateFile, frozen, thawed = filepath.Join("/sys/fs/cgroup/freezer", name), "freezer", "freezer.state", "FROZEN", "THAWED"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
		os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
		sleep.Process.Kill()
		sleep.Wait()
		os.Remove(dir)
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(sleep.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeState(t, root, "c1", fmt.Sprintf(`{%q:%q}`, key, dir))
	has := func(want string) bool {
		b, _ := os.ReadFile(filepath.Join(dir, stateFile))
		return strings.Contains(string(b), want)
	}
	if err := Freeze(root, "c1", true); err != nil {
		t.Fatal(err)
	}
	if !has(frozen) {
		t.Errorf("after pause, %s does not say %q", stateFile, frozen)
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleep.Process.Pid))
	t.Logf("sleep while frozen: %.60s", st)
	if err := Freeze(root, "c1", false); err != nil {
		t.Fatal(err)
	}
	if !has(thawed) {
		t.Errorf("after resume, %s does not say %q", stateFile, thawed)
	}
}
