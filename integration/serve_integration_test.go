//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/daemon"
)

// These tests run the built binary against the real dockerd, as a user
// would. The volume plugin is registered as "ol-shim-it" on one socket
// path for every integration test package (see package shim).
const (
	itPluginName   = "ol-shim-it"
	itPluginSocket = "/run/ol-shim-it/plugin.sock"
	busybox        = "ol-shim-test/busybox:latest"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ol-shim-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // TestServeSecurity runs it as nobody
	bin = filepath.Join(dir, "ol-shim")
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/ol-shim", "../cmd/ol-shimd", "../cmd/ol-shim-init", "../cmd/ol-shim-runtime") // ol-shim hands serve on to ol-shimd beside it, which finds the sandboxes' init there
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	if out, err := exec.Command("docker", "image", "inspect", busybox).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %s: %v\n%s\nrun `make integration`, which starts dockerd and builds the images\n", busybox, err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.Remove(filepath.Join("/etc/docker/plugins", itPluginName+".json"))
	os.RemoveAll(dir)
	os.Exit(code)
}

type testDaemon struct {
	t      testing.TB
	root   string
	socket string
	config string
	cmd    *exec.Cmd
	log    syncBuffer
	c      *api.Client
	extra  []string // more flags of serve
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newDaemon(t testing.TB, config string) *testDaemon {
	t.Helper()
	return newDaemonWith(t, config, nil)
}

// newDaemonWith is newDaemon with prepare run before the daemon starts
// (and its cleanups run after the daemon's sweep).
func newDaemonWith(t testing.TB, config string, prepare func(d *testDaemon)) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &testDaemon{t: t, root: filepath.Join(dir, "root"), socket: filepath.Join(dir, "api.sock"), config: filepath.Join(dir, "config.toml")}
	if err := os.WriteFile(d.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(d)
	}
	d.c = api.NewClient(d.socket)
	t.Cleanup(func() {
		// Nothing labelled with this root may outlive the test. A daemon
		// with no pools reconciles everything away (containers, scratch
		// volumes) while its plugin still serves them: dockerd retries a
		// plugin that is gone for about 30s per call.
		d.stop(syscall.SIGTERM)
		if err := os.WriteFile(d.config, nil, 0o644); err != nil {
			t.Error(err)
		}
		d.start() // serving means reconciled
		if left := d.containers(false); len(left) > 0 {
			t.Errorf("%d containers of this daemon left after a sweep", len(left))
			exec.Command("docker", append([]string{"rm", "-f"}, left...)...).Run()
		}
		out, _ := exec.Command("docker", "volume", "ls", "-q", "--filter", "label="+api.LabelRoot+"="+rootID(d.root)).Output()
		if vols := strings.Fields(string(out)); len(vols) > 0 {
			t.Errorf("scratch volumes left after a sweep: %v; log:\n%s", vols, d.log.String())
		}
		// Cleanup, not a check: any other volume of the test driver that
		// dockerd records (a user's, unlabelled) goes while the plugin still
		// serves it. A record left for a plugin that is gone makes every
		// later dockerd start wait about 15 s for it, per volume; CI runs
		// on a machine whose dockerd outlives the run.
		out, _ = exec.Command("docker", "volume", "ls", "-q", "--filter", "driver="+itPluginName).Output()
		if vols := strings.Fields(string(out)); len(vols) > 0 {
			t.Logf("removing volumes of %s that dockerd still records: %v", itPluginName, vols)
			exec.Command("docker", append([]string{"volume", "rm", "-f"}, vols...)...).Run()
		}
		d.stop(syscall.SIGTERM)
	})
	d.start()
	return d
}

func (d *testDaemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(bin, "serve", "--config", d.config, "--root", d.root, "--socket", d.socket,
		"--plugin-socket", itPluginSocket, "--plugin-name", itPluginName, "--socket-group", "", "--log-level", "debug")
	d.cmd.Args = append(d.cmd.Args, d.extra...)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := d.c.Status(context.Background()); err == nil {
			return
		}
		if d.cmd.ProcessState != nil || time.Now().After(deadline) {
			d.t.Fatalf("daemon did not answer; log:\n%s", d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *testDaemon) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil && sig == syscall.SIGTERM {
			d.t.Errorf("daemon exit after SIGTERM: %v; log:\n%s", err, d.log.String())
		}
	case <-time.After(90 * time.Second):
		d.cmd.Process.Kill()
		<-done
		d.t.Errorf("daemon did not stop on %v", sig)
	}
	d.cmd = nil
}

// containers lists the containers labelled with this daemon's root (all,
// or only paused ones).
func (d *testDaemon) containers(pausedOnly bool) []string {
	args := []string{"ps", "-aq", "--filter", "label=" + api.LabelRoot + "=" + rootID(d.root)}
	if pausedOnly {
		args = append(args, "--filter", "status=paused")
	}
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		d.t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

// cli runs the binary as a client of this daemon.
func (d *testDaemon) cli(stdin string, args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	cmd := exec.Command(bin, append([]string{"--socket", d.socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func (d *testDaemon) waitIdle(pool string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := d.c.Pool(context.Background(), pool)
		if err == nil && p.Stats.Idle >= n && p.Stats.Creating == 0 && p.Stats.Pausing == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("pool %s never reached %d idle: %+v, %v", pool, n, p.Stats, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const bbConfig = `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 1
memory = "32M"
`

func TestServeRun(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	out, errOut, code := d.cli("", "run", "--pool", "bb", "sh", "-c", "echo out; echo err >&2; exit 3")
	if out != "out\n" || errOut != "err\n" || code != 3 {
		t.Errorf("run: stdout %q, stderr %q, exit %d; want out, err, 3", out, errOut, code)
	}
	// By image: served from the configured pool of that image.
	if _, _, code := d.cli("", "run", busybox, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("ol-shim run IMAGE sh -c 'exit 3' exited %d", code)
	}
	if out, _, code := d.cli("hello from stdin\n", "run", "-e", "GREETING=hi", "-w", "/tmp", busybox, "sh", "-c", "cat; echo $GREETING; pwd"); out != "hello from stdin\nhi\n/tmp\n" || code != 0 {
		t.Errorf("stdin, env and workdir: %q (exit %d)", out, code)
	}
	// An image with no configured pool gets an ad-hoc one; this one is
	// FROM scratch: its only programs are /runtime and ol-shim's init.
	if out, _, code := d.cli("", "run", "ol-shim-test/runtime:latest", "/.ol-shim/init", "version"); code != 0 || !strings.HasPrefix(out, "ol-shim ") {
		t.Errorf("run in an ad-hoc pool of a FROM-scratch image: %q, exit %d", out, code)
	}
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var adhoc bool
	for _, p := range st.Pools {
		adhoc = adhoc || p.AdHoc
	}
	if !adhoc {
		t.Errorf("no ad-hoc pool after a run of an unconfigured image: %+v", st.Pools)
	}
	// --reuse puts the sandbox back: the next run is warm, same sandbox.
	d.cli("", "run", "--reuse", "--pool", "bb", "true")
	before, _ := d.c.Pool(context.Background(), "bb")
	d.cli("", "run", "--reuse", "--pool", "bb", "true")
	after, _ := d.c.Pool(context.Background(), "bb")
	if after.Stats.WarmHits+after.Stats.HotHits <= before.Stats.WarmHits+before.Stats.HotHits {
		t.Errorf("a --reuse run was not served warm: before %+v after %+v", before.Stats, after.Stats)
	}

	table, _, code := d.cli("", "status")
	if code != 0 || !strings.Contains(table, "bb") || !strings.Contains(table, "dockerd 20.10") {
		t.Errorf("status (exit %d):\n%s", code, table)
	}
	js, _, _ := d.cli("", "status", "--json")
	var parsed api.StatusResponse
	if err := json.Unmarshal([]byte(js), &parsed); err != nil || parsed.Backend != "docker" {
		t.Errorf("status --json: %v\n%s", err, js)
	}
}

func TestStatusWithoutDaemon(t *testing.T) {
	cmd := exec.Command(bin, "--socket", filepath.Join(t.TempDir(), "none.sock"), "status")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "ol-shim serve") {
		t.Errorf("status without a daemon: %v\n%s", err, out)
	}
}

func TestServeRestartAdoptsAndKillLeaksNothing(t *testing.T) {
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 3
memory = "32M"
`)
	d.waitIdle("bb", 3)
	ctx := context.Background()
	// One sandbox leased when the daemon stops.
	if _, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"}); err != nil {
		t.Fatal(err)
	}
	d.waitIdle("bb", 3) // refilled
	d.stop(syscall.SIGTERM)
	if n := len(d.containers(true)); n < 3 {
		t.Errorf("%d paused sandboxes left for the next start, want at least 3", n)
	}
	d.start()
	st, _ := d.c.Pool(ctx, "bb")
	if st.Stats.Idle < 3 {
		t.Errorf("after restart the pool holds %d idle, want the 3 adopted", st.Stats.Idle)
	}
	l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Outcome != "warm" {
		t.Errorf("first acquire after restart: %s, want warm (adopted)", l.Outcome)
	}

	// kill -9 with a lease out and creates in flight; the next start
	// reconciles: every labelled container is adopted or removed.
	if _, err := d.c.Warm(ctx, "bb", 5); err != nil {
		t.Fatal(err)
	}
	go d.c.Warm(ctx, "bb", 8)
	time.Sleep(300 * time.Millisecond)
	d.stop(syscall.SIGKILL)
	d.start()
	p, err := d.c.Pool(ctx, "bb")
	if err != nil {
		t.Fatal(err)
	}
	all := d.containers(false)
	if len(all) != p.Stats.Idle+p.Stats.Creating+p.Stats.Pausing {
		t.Errorf("after kill -9 and restart: %d labelled containers, the pool holds %+v", len(all), p.Stats)
	}
	d.stop(syscall.SIGTERM)
	// Destroying on exit leaves nothing.
	d.cmd = nil
	cmd := exec.Command(bin, "serve", "--config", d.config, "--root", d.root, "--socket", d.socket,
		"--plugin-socket", itPluginSocket, "--plugin-name", itPluginName, "--socket-group", "", "--destroy-on-exit")
	cmd.Stdout, cmd.Stderr = &d.log, &d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
	for i := 0; i < 600; i++ {
		if _, err := d.c.Status(ctx); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop(syscall.SIGTERM)
	if left := d.containers(false); len(left) != 0 {
		t.Errorf("--destroy-on-exit left %d containers", len(left))
	}
}

func TestServeReloadAndBadConfig(t *testing.T) {
	d := newDaemon(t, bbConfig)
	if err := os.WriteFile(d.config, []byte(bbConfig+`
[pools.second]
image = "ol-shim-test/busybox:latest"
cmd = ["sleep", "3600"]
memory = "32M"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := d.c.Pool(context.Background(), "second"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool added to the config not there after SIGHUP; log:\n%s", d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A broken config on reload is refused; the daemon keeps running.
	os.WriteFile(d.config, []byte("[pools.x]\nimage = \n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	if _, err := d.c.Pool(context.Background(), "second"); err != nil {
		t.Errorf("a bad reload broke the running config: %v", err)
	}
	// At start, a bad config is an error naming the file and the line.
	out, err := exec.Command(bin, "serve", "--config", d.config, "--root", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), d.config) || !strings.Contains(string(out), "line 2") {
		t.Errorf("serve with a bad config: %v\n%s", err, out)
	}
}

// TestSocketActivation starts serve as systemd would with ol-shim.socket:
// both sockets passed in, nothing made by the daemon itself.
func TestSocketActivation(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate (Debian's systemd package): %v", err)
	}
	dir := t.TempDir()
	apiSock, plugin := filepath.Join(dir, "api.sock"), filepath.Join(dir, "plugin.sock")
	cmd := exec.Command(sa, "-l", apiSock, "-l", plugin, bin, "serve", "--backend", "mock", "--config", "/dev/null",
		"--root", filepath.Join(dir, "root"), "--socket", apiSock, "--plugin-socket", plugin, "--plugin-spec-dir", filepath.Join(dir, "specs"))
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	c := api.NewClient(apiSock)
	var st api.StatusResponse
	for i := 0; ; i++ {
		if st, err = c.Status(context.Background()); err == nil {
			break
		}
		if i > 200 {
			t.Fatalf("no answer on the activated socket: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The daemon logs "serving" just after it starts answering.
	for i := 0; i < 100 && !strings.Contains(log.String(), "socket_activated=true"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if st.Backend != "mock" || !strings.Contains(log.String(), "socket_activated=true") {
		t.Errorf("status %+v; log:\n%s", st, log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "specs")); !os.IsNotExist(err) {
		t.Errorf("a socket-activated daemon wrote a plugin spec: %v", err)
	}
}

// TestServeLeasesAndBudget: acquire, release and destroy over the socket
// with real containers; a lease that runs out destroys its container; the
// memory budget evicts an idle sandbox of another pool to make room.
func TestServeLeasesAndBudget(t *testing.T) {
	d := newDaemon(t, `
[daemon]
memory_budget = "96M"
lease = "2s"

[pools.a]
image = "ol-shim-test/busybox:latest"
min_idle = 2
memory = "32M"

[pools.b]
image = "ol-shim-test/busybox:latest"
cmd = ["sleep", "infinity"]
memory = "32M"
`)
	ctx := context.Background()
	d.waitIdle("a", 2)
	l1, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Outcome != "cold" || l1.ContainerID == "" || l1.ScratchPath == "" {
		t.Errorf("lease %+v", l1)
	}
	// 96M are now spoken for: a second sandbox of b evicts an idle one of a.
	l2, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "b", Timeout: "30s"})
	if err != nil {
		t.Fatalf("acquire past the budget with idle sandboxes to evict: %v", err)
	}
	a, _ := d.c.Pool(ctx, "a")
	if a.Stats.Destroys["evicted"] != 1 {
		t.Errorf("pool a after the eviction: %+v", a.Stats)
	}
	st, _ := d.c.Status(ctx)
	if st.MemoryUsed > 96<<20 {
		t.Errorf("memory %d over the 96M budget", st.MemoryUsed)
	}
	// Release: back to the pool, paused. Destroy: gone.
	if err := d.c.Release(ctx, l1.ID); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("docker", "inspect", "-f", "{{.State.Status}}", l1.ContainerID).Output()
	if strings.TrimSpace(string(out)) != "paused" {
		t.Errorf("released sandbox is %q, want paused", out)
	}
	if err := d.c.Destroy(ctx, l2.ID, "test done"); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("docker", "inspect", l2.ContainerID).Run(); err == nil {
		t.Error("destroyed sandbox's container still exists")
	}
	var ae *api.APIError
	if err := d.c.Release(ctx, l2.ID); !errors.As(err, &ae) || ae.Status != 409 {
		t.Errorf("release after destroy: %v, want 409", err)
	}
	// A holder that hangs: after the 2s lease the container is destroyed.
	l3, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "b"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for exec.Command("docker", "inspect", l3.ContainerID).Run() == nil {
		if time.Now().After(deadline) {
			t.Fatal("container of an expired lease still exists")
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := d.c.Pool(ctx, "b")
	if b.Stats.Destroys["lease expired"] != 1 {
		t.Errorf("pool b: %+v", b.Stats)
	}
}

// TestServeSecurity: the sockets are root:<group> 0660 and refuse a user
// outside the group; a sandbox made through the API is unprivileged, keeps
// only the default capabilities, mounts nothing of the host but its scratch
// (and the read-only init), and joins none of the host's namespaces.
func TestServeSecurity(t *testing.T) {
	d := newDaemon(t, bbConfig)
	for _, sock := range []string{d.socket, itPluginSocket} {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o660 || st.Uid != 0 {
			t.Errorf("%s: mode %v owner %d, want 0660 root", sock, fi.Mode().Perm(), st.Uid)
		}
	}
	// nobody is in no group that owns the socket.
	cmd := exec.Command(bin, "--socket", d.socket, "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "connect: permission denied") {
		t.Errorf("status as nobody: %v\n%s", err, out)
	}
	ctx := context.Background()
	l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("docker", "inspect", "-f",
		"{{.HostConfig.Privileged}} {{.HostConfig.CapAdd}} {{.HostConfig.CapDrop}} {{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}}|{{.HostConfig.IpcMode}} {{.HostConfig.Devices}} {{.HostConfig.SecurityOpt}} {{range .Mounts}}{{.Type}}:{{.Destination}}:{{.RW}} {{end}}",
		l.ContainerID).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(out))
	want := "false [CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID] [ALL] none |private [] [no-new-privileges] "
	if !strings.HasPrefix(got, want) {
		t.Errorf("sandbox settings:\n got %s\nwant %s...", got, want)
	}
	mounts := strings.Fields(got[len(want):])
	slices.Sort(mounts)
	if strings.Join(mounts, " ") != "bind:/.ol-shim/ctl:true bind:/.ol-shim/init:false bind:/etc/hosts:false volume:/host:true" {
		t.Errorf("sandbox mounts %v; want only the agent's control directory, the read-only init, the read-only hosts file and the /host volume", mounts)
	}
	// The control directory is the sandbox's own, and only root on the
	// host reaches it.
	ctl := filepath.Join(d.root, "agents")
	if fi, err := os.Stat(ctl); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, %v; want mode 0700", ctl, fi.Mode(), err)
	}
	if err := d.c.Release(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
}

// rootID names a state root in container labels, as the daemon does.
func rootID(root string) string { return daemon.RootID(root) }

// TestAPIPoolsSurviveRestart: a pool made through the API (ol-shim pool
// create) is kept as Docker keeps what its API made: through a reload
// (SIGHUP) and a restart (SIGTERM, start), with its paused sandbox adopted,
// not remade; removed through the API, it stays removed after a restart.
func TestAPIPoolsSurviveRestart(t *testing.T) {
	d := newDaemon(t, "")
	if out, errOut, code := d.cli("", "pool", "create", "--min-idle", "1", "--memory", "64M", "persist1", busybox, "sleep", "3600"); code != 0 {
		t.Fatalf("pool create: exit %d: %s%s", code, out, errOut)
	}
	d.waitIdle("persist1", 1)
	before := d.containers(true)
	if len(before) != 1 {
		t.Fatalf("%d paused containers, want 1", len(before))
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(time.Second)
	if p, err := d.c.Pool(context.Background(), "persist1"); err != nil || p.Source != "api" {
		t.Fatalf("after a reload: pool %+v, %v; want it, made through the api", p, err)
	}
	d.stop(syscall.SIGTERM)
	d.start()
	p, err := d.c.Pool(context.Background(), "persist1")
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if p.Source != "api" || p.Config.MinIdle != 1 || p.Config.Image != busybox || len(p.Config.Cmd) != 2 || p.Config.Memory != 64<<20 {
		t.Errorf("after a restart the pool is %+v", p)
	}
	d.waitIdle("persist1", 1)
	if after := d.containers(true); len(after) != 1 || after[0] != before[0] {
		t.Errorf("paused containers %v before the restart, %v after: want the same one, adopted", before, after)
	}
	if p, _ := d.c.Pool(context.Background(), "persist1"); p.Stats.Creates != 0 {
		t.Errorf("the pool made %d sandboxes after the restart; its paused one should have been adopted", p.Stats.Creates)
	}
	if out, errOut, code := d.cli("", "pool", "rm", "persist1"); code != 0 {
		t.Fatalf("pool rm: exit %d: %s%s", code, out, errOut)
	}
	d.stop(syscall.SIGTERM)
	d.start()
	if _, err := d.c.Pool(context.Background(), "persist1"); err == nil {
		t.Error("a pool removed through the API came back after a restart")
	}
}
