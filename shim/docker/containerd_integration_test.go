//go:build integration

package docker

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// dockerView is what dockerd says of a container: inspect's State.Paused
// and State.Running, and the status `docker ps` lists.
type dockerView struct {
	paused, running bool
	ps              string
}

func (e *env) view(id string) dockerView {
	e.t.Helper()
	st := e.inspect(id).State
	list, err := e.d.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("id", id)})
	if err != nil || len(list.Items) != 1 {
		e.t.Fatalf("docker ps of %.12s: %v (%d listed)", id, err, len(list.Items))
	}
	return dockerView{paused: st.Paused, running: st.Running, ps: list.Items[0].Status}
}

// waitView waits (up to 2 s) until dockerd's view of id is paused (or not)
// and returns how long that took after the call returned, and the view.
func (e *env) waitView(id string, paused bool) (time.Duration, dockerView) {
	e.t.Helper()
	start := time.Now()
	for {
		v := e.view(id)
		if v.paused == paused || time.Since(start) > 2*time.Second {
			return time.Since(start), v
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// Pause and resume go through containerd's task API in dockerd's namespace
// where dockerd's containerd is on this host, and dockerd's own record
// (inspect, ps) follows every step.
func TestPauseThroughContainerdDockerView(t *testing.T) {
	e := newEnv(t)
	if via := e.d.PauseVia(); !strings.HasPrefix(via, "containerd task API") {
		t.Fatalf("pauses go through %s; want containerd's task API on this host", via)
	}
	sb := e.create(e.backend("ctd", sleepSpec), "ctd-00000000000000c1")
	defer sb.Destroy(context.Background(), "test")
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := sb.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		// A pause returns once dockerd has recorded it.
		if v := e.view(sb.ContainerID()); !v.paused || !v.running || !strings.Contains(v.ps, "(Paused)") {
			t.Fatalf("after a pause dockerd says paused=%v running=%v, ps %q", v.paused, v.running, v.ps)
		}
		if st := e.state(sb.ContainerID()); st != container.StatePaused {
			t.Fatalf("inspect State.Status %s after a pause", st)
		}
		if err := sb.Unpause(ctx); err != nil {
			t.Fatal(err)
		}
		// A resume is recorded by dockerd as containerd's event reaches it.
		lag, v := e.waitView(sb.ContainerID(), false)
		if v.paused || !v.running || strings.Contains(v.ps, "Paused") {
			t.Fatalf("after a resume dockerd says paused=%v running=%v, ps %q", v.paused, v.running, v.ps)
		}
		t.Logf("resume: dockerd's view followed in %v", lag)
	}
	if !strings.HasPrefix(e.d.PauseVia(), "containerd task API") {
		t.Fatalf("after the calls, pauses go through %s", e.d.PauseVia())
	}
}

// resumed is the state dockerd records for a container ol-shim resumed:
// through containerd, dockerd records it when containerd's event reaches
// it, a millisecond or two after the call returns (2 s at most here).
func (e *env) resumed(id string) container.ContainerState {
	e.t.Helper()
	_, v := e.waitView(id, false)
	if v.paused {
		return container.StatePaused
	}
	return e.state(id)
}

// envWith is newEnv with cfg's Containerd setting.
func envWith(t *testing.T, containerd string) *env {
	t.Helper()
	e := newEnv(t)
	d, err := NewDocker(context.Background(), DockerConfig{RootID: e.d.cfg.RootID, InitBinary: initBinary, CallTimeout: 60 * time.Second, Containerd: containerd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e.d = d
	return e
}

// pauseRound pauses and resumes a new sandbox and checks dockerd's view.
func pauseRound(t *testing.T, e *env, id string) {
	t.Helper()
	sb := e.create(e.backend("ctd", sleepSpec), id)
	defer sb.Destroy(context.Background(), "test")
	if err := sb.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := e.view(sb.ContainerID()); !v.paused || !strings.Contains(v.ps, "(Paused)") {
		t.Fatalf("after a pause dockerd says paused=%v, ps %q", v.paused, v.ps)
	}
	if err := sb.Unpause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.resumed(sb.ContainerID()); st != container.StateRunning {
		t.Fatalf("after a resume: %s", st)
	}
}

// --containerd off: dockerd's API only.
func TestPauseContainerdOff(t *testing.T) {
	e := envWith(t, ContainerdOff)
	if via := e.d.PauseVia(); !strings.HasPrefix(via, "dockerd (turned off") {
		t.Fatalf("PauseVia %q", via)
	}
	pauseRound(t, e, "ctd-00000000000000c2")
}

// A socket that is not a containerd (it hangs up at once): pauses fall back
// to dockerd's API and work; the status says so.
func TestPauseContainerdRefusesFallsBack(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "not-containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := envWith(t, sock)
	if via := e.d.PauseVia(); !strings.Contains(via, sock) {
		t.Fatalf("PauseVia %q before any pause; want the socket named", via)
	}
	pauseRound(t, e, "ctd-00000000000000c3")
	if via := e.d.PauseVia(); !strings.HasPrefix(via, "dockerd (") {
		t.Fatalf("PauseVia %q after containerd refused", via)
	}
}

// A containerd path that is no socket: refused at start, with the reason.
func TestPauseContainerdNotASocket(t *testing.T) {
	e := envWith(t, "/etc/hostname")
	if via := e.d.PauseVia(); !strings.Contains(via, "not a socket") {
		t.Fatalf("PauseVia %q", via)
	}
	pauseRound(t, e, "ctd-00000000000000c4")
}
