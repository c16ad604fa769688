//go:build integration

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/ociruntime"
)

// registerRuntime registers the built ol-shim-runtime with this host's
// dockerd through `ol-shim runtime install`, and puts daemon.json back as
// it was (and reloads dockerd) when the test ends.
func registerRuntime(t *testing.T) {
	t.Helper()
	orig, err := os.ReadFile(ociruntime.DaemonJSON)
	existed := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	was, err := ociruntime.Registered(ociruntime.DaemonJSON, ociruntime.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// dockerd forgets a runtime at a reload only if the file still
		// has runtimes, without it: uninstall, then the file as it was.
		if out, err := exec.Command(bin, "runtime", "uninstall").CombinedOutput(); err != nil {
			t.Errorf("ol-shim runtime uninstall: %v\n%s", err, out)
		}
		waitRuntime(t, false)
		if existed {
			os.WriteFile(ociruntime.DaemonJSON, orig, 0o644)
		} else {
			os.Remove(ociruntime.DaemonJSON)
		}
		if was != "" {
			ociruntime.ReloadDockerd()
			waitRuntime(t, true)
		}
	})
	out, err := exec.Command(bin, "runtime", "install", "--path", filepath.Join(filepath.Dir(bin), "ol-shim-runtime")).CombinedOutput()
	if err != nil {
		t.Fatalf("ol-shim runtime install: %v\n%s", err, out)
	}
	waitRuntime(t, true)
}

// waitRuntime waits until dockerd does (or does not) list the runtime.
func waitRuntime(t *testing.T, want bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _ := exec.Command("docker", "info", "-f", "{{json .Runtimes}}").Output()
		if strings.Contains(string(out), `"ol-shim"`) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd's runtimes after a reload: %s (want ol-shim listed: %v)", out, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func docker(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("docker", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestRuntimeRegistered: with ol-shim-runtime registered, pools make their
// sandboxes with it, and dockerd's records of pause and resume stay true
// (ol-shim-runtime writes the freezer itself); `docker run
// --runtime=ol-shim` runs as with runc (exit code, output, a volume, docker
// exec, docker pause), and a plain docker run is unaffected.
func TestRuntimeRegistered(t *testing.T) {
	registerRuntime(t)
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	ids := d.containers(true)
	if len(ids) == 0 {
		t.Fatal("no paused sandbox")
	}
	if out, _ := docker(t, "inspect", "-f", "{{.HostConfig.Runtime}} {{.State.Paused}}", ids[0]); strings.TrimSpace(out) != "ol-shim true" {
		t.Errorf("an idle sandbox: runtime and paused %q; want \"ol-shim true\"", strings.TrimSpace(out))
	}
	if out, _, code := d.cli("", "run", "--pool", "bb", "--reuse", "echo", "served"); code != 0 || out != "served\n" {
		t.Errorf("a run in the pool: exit %d, %q", code, out)
	}
	st, stderr, _ := d.cli("", "status")
	if !strings.Contains(st, "OCI runtime: ol-shim") {
		t.Errorf("status does not name the runtime:\n%s%s", st, stderr)
	}
	d.waitIdle("bb", 1)
	for _, id := range d.containers(false) {
		if out, _ := docker(t, "inspect", "-f", "{{.State.Paused}}", id); strings.TrimSpace(out) != "true" {
			t.Errorf("sandbox %.12s back in its pool: paused %s", id, out)
		}
	}

	img := "ol-shim-test/busybox:latest"
	if out, code := docker(t, "run", "--rm", "--network", "none", "--runtime", "ol-shim", img, "sh", "-c", "echo out; echo err >&2; exit 3"); code != 3 || !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Errorf("docker run --runtime ol-shim: exit %d, %q; want 3 and both streams", code, out)
	}
	vol := filepath.Join(t.TempDir(), "v")
	os.Mkdir(vol, 0o755)
	if out, code := docker(t, "run", "--rm", "--network", "none", "--runtime", "ol-shim", "-v", vol+":/data", img, "sh", "-c", "echo kept > /data/f"); code != 0 {
		t.Errorf("docker run -v --runtime ol-shim: exit %d %s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(vol, "f")); string(b) != "kept\n" {
		t.Errorf("the volume of a -v container holds %q", b)
	}
	name := "ol-shim-rt-" + filepath.Base(t.TempDir())
	if out, code := docker(t, "run", "-d", "--name", name, "--network", "none", "--runtime", "ol-shim", img, "sleep", "300"); code != 0 {
		t.Fatalf("docker run -d: %d %s", code, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	for _, step := range []struct {
		cmd  string
		want string
	}{{"pause", "true"}, {"unpause", "false"}, {"pause", "true"}, {"unpause", "false"}} {
		if out, code := docker(t, step.cmd, name); code != 0 {
			t.Fatalf("docker %s: %d %s", step.cmd, code, out)
		}
		if out, _ := docker(t, "inspect", "-f", "{{.State.Paused}}", name); strings.TrimSpace(out) != step.want {
			t.Errorf("after docker %s: State.Paused %s", step.cmd, out)
		}
	}
	if out, code := docker(t, "exec", name, "echo", "exec-ok"); code != 0 || out != "exec-ok\n" {
		t.Errorf("docker exec into a runtime=ol-shim container: %d %q", code, out)
	}
	if out, code := docker(t, "run", "--rm", "--network", "none", img, "echo", "plain"); code != 0 || out != "plain\n" {
		t.Errorf("a plain docker run: %d %q", code, out)
	}
}
