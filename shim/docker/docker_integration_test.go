//go:build integration

package docker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

func TestNegotiatesAPIVersion(t *testing.T) {
	e := newEnv(t)
	v, err := e.d.cli.ServerVersion(context.Background(), client.ServerVersionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := e.d.APIVersion()
	t.Logf("daemon %s, API %s; client negotiated %s", v.Version, v.APIVersion, got)
	if got != v.APIVersion && !(got < v.APIVersion) {
		t.Errorf("client speaks API %s, daemon %s", got, v.APIVersion)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	b := e.backend("life", sleepSpec)
	sb := e.create(b, "life-1")
	ctx := context.Background()
	if st := e.state(sb.ContainerID()); st != container.StateRunning {
		t.Fatalf("after Create: %s", st)
	}
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.state(sb.ContainerID()); st != container.StatePaused {
		t.Fatalf("after Pause: %s", st)
	}
	if err := sb.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.resumed(sb.ContainerID()); st != container.StateRunning {
		t.Fatalf("after Unpause: %s", st)
	}
	// Destroy works on a paused container, and twice.
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Destroy(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.cli.ContainerInspect(ctx, sb.ContainerID(), client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect after Destroy: %v, want not found", err)
	}
	if err := sb.Destroy(ctx, "again"); err != nil {
		t.Errorf("Destroy of a container already gone: %v", err)
	}
}

// Runs through docker exec in a sandbox paused and unpaused back to back,
// as a pool does between runs that reuse it: a command that cannot start
// gives its own error, never dockerd's "is paused". dockerd records a
// pause or unpause when its call returns and again when containerd's event
// for it arrives; after a failed exec start, a late pause event can mark
// the running container paused until the unpause event follows.
func TestExecAfterQuickPauseCycles(t *testing.T) {
	e := newEnv(t)
	b := e.backend("cycle", sleepSpec)
	sb := e.create(b, "cycle-1")
	ctx := context.Background()
	defer sb.Destroy(ctx, "test")
	for i := range 200 {
		if err := sb.Pause(ctx); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		time.Sleep(time.Duration(i%7) * time.Millisecond)
		if err := sb.Unpause(ctx); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		c, via, err := sb.Session(ctx)
		if err != nil || via != "exec" {
			t.Fatalf("cycle %d: session %q: %v", i, via, err)
		}
		var out bytes.Buffer
		x, err := agent.Run(ctx, agent.NewConn(c), agent.Start{Argv: []string{"/etc"}}, agent.Stdio{Stdout: &out, Stderr: &out})
		c.Close()
		var ae *agent.Error
		if !errors.As(err, &ae) || ae.Code != agent.CodeCannotRun || !strings.Contains(ae.Message, "permission denied") || out.Len() != 0 {
			t.Fatalf("cycle %d: run of /etc through docker exec: exit %+v, error %v, output %q; want 126 for permission denied, no output", i, x, err, out.String())
		}
	}
}

func TestContainerConfigApplied(t *testing.T) {
	e := newEnv(t)
	ps := spec.PoolSpec{
		Image:          busyboxImage,
		Cmd:            []string{"sleep", "3600"},
		Env:            []string{"FOO=bar"},
		WorkingDir:     "/tmp",
		User:           "65534:65534",
		MemoryBytes:    64 << 20,
		CPUs:           0.5,
		PidsLimit:      32,
		ReadOnlyRootfs: true,
	}
	b := e.backend("limits", ps)
	sb := e.create(b, "limits-1")
	defer sb.Destroy(context.Background(), "test")
	c := e.inspect(sb.ContainerID())
	hc := c.HostConfig
	checks := []struct {
		what      string
		got, want any
	}{
		{"memory", hc.Memory, int64(64 << 20)},
		{"memory+swap", hc.MemorySwap, int64(64 << 20)},
		{"cpu quota", hc.CPUQuota, int64(50_000)},
		{"cpu period", hc.CPUPeriod, int64(100_000)},
		{"pids limit", *hc.PidsLimit, int64(32)},
		{"read-only rootfs", hc.ReadonlyRootfs, true},
		{"privileged", hc.Privileged, false},
		{"network", string(hc.NetworkMode), "none"},
		{"cap drop", strings.Join(hc.CapDrop, ","), "ALL"},
		{"cap add", strings.Join(hc.CapAdd, ","), strings.Join(DefaultCapabilities, ",")},
		{"security opt", strings.Join(hc.SecurityOpt, ","), "no-new-privileges"},
		{"user", c.Config.User, "65534:65534"},
		{"workdir", c.Config.WorkingDir, "/tmp"},
		{"env FOO", slices.Contains(c.Config.Env, "FOO=bar"), true},
		{"label managed", c.Config.Labels[api.LabelManaged], "true"},
		{"label root", c.Config.Labels[api.LabelRoot], e.d.RootID()},
		{"label pool", c.Config.Labels[api.LabelPool], "limits"},
		{"label sandbox", c.Config.Labels[api.LabelSandbox], "limits-1"},
		{"label spec", c.Config.Labels[api.LabelSpec], ps.Hash()},
		{"name", c.Name, "/" + ContainerName("limits-1")},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.what, ck.got, ck.want)
		}
	}
	var scratchMount bool
	for _, m := range c.Mounts {
		if m.Destination == ScratchTarget && m.Source == sb.ScratchDir() && m.RW {
			scratchMount = true
		}
	}
	if !scratchMount {
		t.Errorf("no writable mount of %s at %s: %+v", sb.ScratchDir(), ScratchTarget, c.Mounts)
	}
	// The limits hold inside: the memory cgroup says 64 MiB, and the
	// process's capability bounding set is the default one.
	out := e.exec(sb.ContainerID(), "sh", "-c", "grep CapBnd /proc/self/status; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null")
	if !strings.Contains(out, "CapBnd:\t00000000000000fb") {
		t.Errorf("capability bounding set in %q, want 0xfb (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID)", out)
	}
	if !strings.Contains(out, "67108864") {
		t.Errorf("memory cgroup limit in %q, want 67108864", out)
	}
}

// exec runs a command in a running container and returns its stdout.
func (e *env) exec(id string, cmd ...string) string {
	e.t.Helper()
	ctx := context.Background()
	ex, err := e.d.cli.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		e.t.Fatalf("exec create %v: %v", cmd, err)
	}
	att, err := e.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		e.t.Fatalf("exec attach %v: %v", cmd, err)
	}
	defer att.Close()
	raw, _ := io.ReadAll(att.Reader)
	return demux(raw)
}

// demux strips Docker's stream headers (8 bytes per frame) from a
// non-TTY attach stream, keeping every stream's bytes.
func demux(raw []byte) string {
	var out []byte
	for len(raw) >= 8 {
		n := int(raw[4])<<24 | int(raw[5])<<16 | int(raw[6])<<8 | int(raw[7])
		raw = raw[8:]
		n = min(n, len(raw))
		out = append(out, raw[:n]...)
		raw = raw[n:]
	}
	return string(out)
}

func TestIdleInitFromScratchImage(t *testing.T) {
	e := newEnv(t)
	// The runtime image holds one file and no shell; with no cmd the pool
	// runs ol-shim's idle init.
	b := e.backend("idle", spec.PoolSpec{Image: runtimeImage})
	sb := e.create(b, "idle-1")
	defer sb.Destroy(context.Background(), "test")
	time.Sleep(300 * time.Millisecond)
	c := e.inspect(sb.ContainerID())
	if !c.State.Running || c.Path != InitPath {
		t.Fatalf("container runs %q (running %v), want %s", c.Path, c.State.Running, InitPath)
	}
	ctx := context.Background()
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	// init exits promptly and cleanly on SIGTERM.
	timeout := 10
	start := time.Now()
	if _, err := e.d.cli.ContainerStop(ctx, sb.ContainerID(), client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	c = e.inspect(sb.ContainerID())
	if c.State.ExitCode != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("stop took %v, exit code %d; want a quick exit 0 on SIGTERM", time.Since(start), c.State.ExitCode)
	}
}

func TestReadinessSocket(t *testing.T) {
	e := newEnv(t)
	b := e.backend("rt", spec.PoolSpec{Image: runtimeImage, Cmd: []string{"/runtime"}, Ready: &spec.Readiness{Socket: "ol.sock"}})
	sb := e.create(b, "rt-1")
	defer sb.Destroy(context.Background(), "test")
	// Create returned: the runtime answers at once over /host/ol.sock.
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(sb.ScratchDir(), "ol.sock"))
	}}}
	resp, err := hc.Get("http://sandbox/")
	if err != nil {
		t.Fatalf("runtime not answering after a ready Create: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "ok ") {
		t.Errorf("runtime said %q", body)
	}
}

func TestReadinessFailures(t *testing.T) {
	tests := []struct {
		name string
		spec spec.PoolSpec
		want string
	}{
		{"timeout", spec.PoolSpec{Image: busyboxImage, Cmd: []string{"sleep", "3600"}, Ready: &spec.Readiness{File: "ready", Timeout: 500 * time.Millisecond}}, "no file /host/ready within 500ms"},
		{"exits", spec.PoolSpec{Image: busyboxImage, Cmd: []string{"true"}, Ready: &spec.Readiness{Socket: "ol.sock", Timeout: 10 * time.Second}}, "is exited before"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.backend("ready", tc.spec)
			dir, _ := e.scratch.Make(context.Background(), "ready-1")
			_, err := b.Create(context.Background(), sandboxset.Spec{ID: "ready-1", Pool: "ready", ScratchDir: dir})
			if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Create: %v; want ErrNotReady saying %q", err, tc.want)
			}
			if left := e.containers(); len(left) != 0 {
				t.Errorf("container left after a failed readiness: %v", left[0].Names)
			}
		})
	}
	t.Run("file appears", func(t *testing.T) {
		e := newEnv(t)
		b := e.backend("ready", spec.PoolSpec{Image: busyboxImage, Cmd: []string{"sh", "-c", "sleep 0.2; touch /host/ready; exec sleep 3600"}, Ready: &spec.Readiness{File: "ready"}})
		sb := e.create(b, "ready-2")
		defer sb.Destroy(context.Background(), "test")
		if _, err := os.Stat(filepath.Join(sb.ScratchDir(), "ready")); err != nil {
			t.Errorf("Create returned before the file appeared: %v", err)
		}
	})
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	b := e.backend("missing", spec.PoolSpec{Image: "ol-shim-test/no-such-image:1"})
	dir, _ := e.scratch.Make(context.Background(), "missing-1")
	_, err := b.Create(context.Background(), sandboxset.Spec{ID: "missing-1", Pool: "missing", ScratchDir: dir})
	if !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), "ol-shim-test/no-such-image:1") {
		t.Errorf("Create with a missing image: %v; want ErrImageNotFound naming it", err)
	}
	for _, ps := range []spec.PoolSpec{
		{Image: busyboxImage, MemoryBytes: 1 << 20},
		{Image: busyboxImage, CPUs: -1},
		{Image: busyboxImage, Network: "host"},
		{Image: "Has Space"},
		{Image: "busybox:bad:tag"},
	} {
		if _, err := e.d.Backend("bad", ps); !errors.Is(err, spec.ErrInvalidSpec) {
			t.Errorf("Backend(%+v): %v, want spec.ErrInvalidSpec", ps, err)
		}
	}
	if left := e.containers(); len(left) != 0 {
		t.Errorf("bad input left %d containers", len(left))
	}
}

func TestSetDeadWhilePaused(t *testing.T) {
	e := newEnv(t)
	s := e.set("dead", sleepSpec, nil)
	ctx := context.Background()
	r, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := r.Sandbox().(*Sandbox)
	if err := r.Put(); err != nil {
		t.Fatal(err)
	}
	if st := e.state(victim.ContainerID()); st != container.StatePaused {
		t.Fatalf("after Put: %s", st)
	}
	// Killed from outside while paused, as `docker kill` would.
	if _, err := e.d.cli.ContainerKill(ctx, victim.ContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	r, err = s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sandbox().ID() == victim.ID() || r.Outcome() != sandboxset.Cold {
		t.Errorf("got %s (%v); want a new sandbox", r.Sandbox().ID(), r.Outcome())
	}
	if st := s.Stats(); st.UnpauseFailures != 1 || st.Destroys[sandboxset.ReasonUnpauseFailed] != 1 {
		t.Errorf("stats %+v", st)
	}
	if _, err := e.d.cli.ContainerInspect(ctx, victim.ContainerID(), client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("dead container still there: %v", err)
	}
	if _, err := os.Stat(victim.ScratchDir()); !os.IsNotExist(err) {
		t.Errorf("dead sandbox's scratch directory still there: %v", err)
	}
	if err := r.Put(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if left := e.containers(); len(left) != 0 {
		t.Errorf("%d containers left after Close", len(left))
	}
}

func TestSetReuseAndMaxSize(t *testing.T) {
	e := newEnv(t)
	s := e.set("max", sleepSpec, func(c *sandboxset.Config) { c.MaxSize = 2 })
	ctx := context.Background()
	a, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.GetOrCreateUnpaused(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third Get on a pool of 2: %v, want deadline exceeded", err)
	}
	if n := len(e.containers()); n != 2 {
		t.Errorf("%d containers, want 2 (max size)", n)
	}
	idA := a.Sandbox().ID()
	if err := a.Put(); err != nil {
		t.Fatal(err)
	}
	c, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sandbox().ID() != idA || c.Outcome() != sandboxset.Warm {
		t.Errorf("got %s (%v), want %s warm", c.Sandbox().ID(), c.Outcome(), idA)
	}
	if st := e.resumed(c.Sandbox().(*Sandbox).ContainerID()); st != container.StateRunning {
		t.Errorf("reused sandbox is %s", st)
	}
	_ = c.Put()
	_ = b.Destroy("test")
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if left := e.containers(); len(left) != 0 {
		t.Errorf("%d containers left after Close", len(left))
	}
}

// TestFreshPoolCommandKept: a sandbox handed out as soon as its agent
// listens, which can be before init's child has exec'd the pool's command
// (or while the Go runtime's one-off probe child of its first fork is
// there), is returned with that command alive: the sweep of its return
// kills a run's processes, never the pool's. Before the mark waited for an
// exec'd child, the sweep took the probe child for the pool's command and
// killed the command: this failed in its first round in most runs.
func TestFreshPoolCommandKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.set("fresh", sleepSpec, nil)
	const rounds, each = 10, 3
	for round := range rounds {
		var refs []*sandboxset.Ref
		for range each {
			r, err := s.GetOrCreateUnpaused(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Outcome() != sandboxset.Cold {
				t.Fatalf("round %d: %v, want a new sandbox", round, r.Outcome())
			}
			refs = append(refs, r)
		}
		for i, r := range refs {
			if err := r.Put(); err != nil {
				t.Fatalf("round %d, sandbox %d: %v", round, i, err)
			}
		}
		// Take them again, warm, and destroy them for the next round.
		for i := range refs {
			r, err := s.GetOrCreateUnpaused(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Outcome() != sandboxset.Warm {
				t.Fatalf("round %d, sandbox %d: %v after its Put, want warm", round, i, r.Outcome())
			}
			if err := r.Destroy("test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := s.Stats(); st.Destroyed() != rounds*each || st.Destroys["test"] != rounds*each {
		t.Errorf("destroys %v: want %d, all by the test", st.Destroys, rounds*each)
	}
}

func TestReconcileAfterCrash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Before the crash: pool fn with two idle (paused) sandboxes and one in
	// use; a pool that will be gone; an older spec of fn.
	old := e.set("fn", sleepSpec, nil)
	var refs []*sandboxset.Ref
	for range 3 {
		r, err := old.GetOrCreateUnpaused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	for _, r := range refs[:2] {
		if err := r.Put(); err != nil {
			t.Fatal(err)
		}
	}
	gone := e.set("gone", sleepSpec, nil)
	stale := e.set("fn", spec.PoolSpec{Image: busyboxImage, Cmd: []string{"sleep", "3601"}}, nil)
	for _, s := range []*sandboxset.Set{gone, stale} {
		r, err := s.GetOrCreateUnpaused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Put(); err != nil {
			t.Fatal(err)
		}
	}
	// A scratch directory whose container was never made.
	if _, err := e.scratch.Make(ctx, "fn-orphan"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.containers()); n != 5 {
		t.Fatalf("%d containers before the crash, want 5", n)
	}
	// The crash: the old sets are dropped without Close. The restart
	// configures pool fn only.
	fresh := e.set("fn", sleepSpec, nil)
	b := e.backend("fn", sleepSpec)
	rep, err := Reconcile(ctx, e.d, e.scratch, map[string]ReconcilePool{"fn": {Set: fresh, Backend: b}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile: %+v", rep)
	want := registry.ReconcileReport{
		Adopted: map[string]int{"fn": 2},
		Removed: map[string]int{RemovedNotPaused: 1, RemovedUnknownPool: 1, RemovedStaleSpec: 1, RemovedOrphanDir: 1},
	}
	if !mapsEqual(rep.Adopted, want.Adopted) || !mapsEqual(rep.Removed, want.Removed) {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	left := e.containers()
	if len(left) != 2 {
		t.Errorf("%d containers after reconcile, want the 2 adopted", len(left))
	}
	if st := fresh.Stats(); st.Idle != 2 {
		t.Errorf("fresh pool holds %d idle, want 2", st.Idle)
	}
	dirs, _ := e.scratch.List(ctx)
	if len(dirs) != 2 {
		t.Errorf("scratch directories after reconcile: %v, want 2", dirs)
	}
	// The adopted sandboxes serve warm.
	r, err := fresh.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome() != sandboxset.Warm {
		t.Errorf("first Get after reconcile: %v, want warm", r.Outcome())
	}
	_ = r.Put()
	if err := fresh.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if left := e.containers(); len(left) != 0 {
		t.Errorf("%d containers after Close", len(left))
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
