//go:build integration

package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/ociruntime"
)

// registerRuntime registers the built ol-shim-runtime with this host's
// dockerd through `ol-shim runtime install`, and puts daemon.json back as
// it was (and reloads dockerd) when the test ends.
func registerRuntime(t *testing.T, flags ...string) {
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
		if out, err := exec.Command(bin, "runtime", "uninstall", "--force").CombinedOutput(); err != nil { // the daemon's sandboxes still run under it: its own cleanup, after, removes them
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
	out, err := exec.Command(bin, append(flags, "runtime", "install", "--path", filepath.Join(filepath.Dir(bin), "ol-shim-runtime"))...).CombinedOutput()
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

// TestRuntimeServesDockerRun: `docker run --runtime=ol-shim --network none
// IMAGE CMD` runs CMD in a warm sandbox of the image's pool (its PID 1 is
// the sandbox's init), and gets what docker run gives: exit code, env,
// working directory, user, stdin, a terminal with -t, logs of a detached
// container, docker stop's signal. A container with a volume, and every
// container while ol-shimd is away, go to runc unchanged.
func TestRuntimeServesDockerRun(t *testing.T) {
	// A pool whose user is root serves containers of any user (a pool of
	// the sandbox user serves only that user's: see
	// TestSandboxUidsNoHostAccount).
	d := newDaemon(t, bbConfig+"user = \"root\"\n")
	registerRuntime(t, "--socket", d.socket)
	d.waitIdle("bb", 1)
	img := "ol-shim-test/busybox:latest"
	run := func(stdin string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("docker", append([]string{"run", "--rm", "--network", "none", "--runtime", "ol-shim"}, args...)...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
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
	before, _ := d.c.Pool(t.Context(), "bb")
	out, code := run("", img, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; exit 7")
	t.Logf("served: exit %d: %s", code, out)
	if code != 7 || !strings.Contains(out, "ol-shim") {
		t.Errorf("docker run --runtime ol-shim: exit %d, PID 1 %q; want 7 and the sandbox's init", code, out)
	}
	if p, _ := d.c.Pool(t.Context(), "bb"); p.Stats.HotHits+p.Stats.WarmHits+p.Stats.ColdMisses <= before.Stats.HotHits+before.Stats.WarmHits+before.Stats.ColdMisses {
		t.Errorf("pool bb served no take: %+v then %+v", before.Stats, p.Stats)
	}
	if out, code := run("", "-e", "FOO=bar", "-w", "/tmp", "-u", "65534:65534", img, "sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g)"); code != 0 || strings.TrimSpace(out) != "bar /tmp 65534:65534" {
		t.Errorf("env, working directory, user: exit %d, %q", code, out)
	}
	if out, code := run("hello stdin\n", "-i", img, "cat"); code != 0 || out != "hello stdin\n" {
		t.Errorf("stdin with -i: exit %d, %q", code, out)
	}
	if out, code := run("", "-t", img, "sh", "-c", "tty; echo TERM=$TERM"); code != 0 || !strings.Contains(out, "/dev/pts/") {
		t.Errorf("-t: exit %d, %q; want a terminal", code, out)
	}

	name := "ol-shim-served-" + filepath.Base(t.TempDir())
	if out, code := docker(t, "run", "-d", "--name", name, "--network", "none", "--runtime", "ol-shim", img, "sh", "-c",
		"echo started; trap 'echo got-term; exit 0' TERM; while :; do sleep 0.1; done"); code != 0 {
		t.Fatalf("docker run -d: %d %s", code, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := docker(t, "logs", name)
		if strings.Contains(out, "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker logs of a served container: %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, _ := docker(t, "inspect", "-f", "{{.State.Running}}", name); strings.TrimSpace(out) != "true" {
		t.Errorf("docker inspect of a served container: running %s", out)
	}
	// docker exec runs beside the command, in its sandbox.
	if out, code := docker(t, "exec", name, "sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; exit 3"); code != 3 || !strings.Contains(out, "got-term") || !strings.Contains(out, "ol-shim") {
		t.Errorf("docker exec into a served container: exit %d, %q; want 3, and the served command and the sandbox's init among its processes", code, out)
	}
	cmd := exec.Command("docker", "exec", "-i", "-u", "65534:65534", "-e", "X=y", "-w", "/tmp", name, "sh", "-c", "echo $X $(pwd) $(id -u); cat")
	cmd.Stdin = strings.NewReader("from stdin\n")
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "y /tmp 65534\nfrom stdin\n" {
		t.Errorf("docker exec -i -u -e -w: %v, %q", err, out)
	}
	if out, code := docker(t, "exec", "-t", name, "tty"); code != 0 || !strings.Contains(out, "/dev/pts/") {
		t.Errorf("docker exec -t: exit %d, %q; want a terminal", code, out)
	}
	if out, code := docker(t, "stop", "-t", "10", name); code != 0 {
		t.Errorf("docker stop: %d %s", code, out)
	}
	out, _ = docker(t, "logs", name)
	code2, _ := docker(t, "inspect", "-f", "{{.State.ExitCode}}", name)
	if !strings.Contains(out, "got-term") || strings.TrimSpace(code2) != "0" {
		t.Errorf("docker stop of a served container: logs %q, exit code %s; want the command's TERM trap to run, exit 0", out, code2)
	}

	vol := t.TempDir()
	if out, code := run("", "-v", vol+":/data", img, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo kept > /data/f"); code != 0 || strings.Contains(out, "ol-shim") {
		t.Errorf("a -v container: exit %d, PID 1 %q; want runc's (sh)", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(vol, "f")); string(b) != "kept\n" {
		t.Errorf("the -v container's volume holds %q", b)
	}
	d.stop(syscall.SIGTERM)
	if out, code := run("", img, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; exit 4"); code != 4 || strings.Contains(out, "ol-shim") {
		t.Errorf("with ol-shimd stopped: exit %d, PID 1 %q; want runc's, exit 4", code, out)
	}
	d.start()
}

// TestRuntimeServedLeavesNothing (issue 34, attacks): a served container
// whose command leaves a process behind (in a new session, ignoring
// SIGHUP and SIGTERM) does not outlive the container into the next one
// served from the same pool; and a served container sees none of another
// served container's processes, so none of its stdio.
func TestRuntimeServedLeavesNothing(t *testing.T) {
	d := newDaemon(t, "")
	registerRuntime(t, "--socket", d.socket)
	img := "ol-shim-test/busybox:latest"
	secret := "left-behind-" + filepath.Base(t.TempDir())
	out, code := docker(t, "run", "--rm", "--network", "none", "--runtime", "ol-shim", "-e", "MARK="+secret, img, "sh", "-c",
		"setsid sh -c 'trap \"\" HUP TERM; while :; do sleep 0.2; done' </dev/null >/dev/null 2>&1 & tr '\\0' ' ' < /proc/1/cmdline; echo; echo left")
	t.Logf("first: exit %d %q", code, out)
	if code != 0 || !strings.Contains(out, "ol-shim") {
		t.Fatalf("the first container was not served: exit %d %q", code, out)
	}
	survivor := func() string {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if b, err := os.ReadFile("/proc/" + e.Name() + "/environ"); err == nil && strings.Contains(string(b), "MARK="+secret) {
				return e.Name()
			}
		}
		return ""
	}
	deadline := time.Now().Add(10 * time.Second)
	for survivor() != "" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if pid := survivor(); pid != "" {
		t.Errorf("process %s of a served container outlived it by 10 s", pid)
	}

	// Two served at once: the second sees none of the first's processes.
	name := "ol-shim-served-a-" + filepath.Base(t.TempDir())
	if out, code := docker(t, "run", "-d", "--name", name, "--network", "none", "--runtime", "ol-shim", img, "sh", "-c", "exec sleep 3600"); code != 0 {
		t.Fatalf("docker run -d: %d %s", code, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	out, code = docker(t, "run", "--rm", "--network", "none", "--runtime", "ol-shim", img, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done")
	t.Logf("second: exit %d %q", code, out)
	if code != 0 || !strings.Contains(out, "ol-shim") {
		t.Fatalf("the second container was not served: exit %d %q", code, out)
	}
	if strings.Contains(out, "sleep 3600") {
		t.Errorf("a served container sees another served container's process: %q", out)
	}
}
