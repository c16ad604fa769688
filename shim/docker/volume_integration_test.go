//go:build integration

package docker

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
)

// The volume plugin these tests serve to dockerd, in this process: the
// same arrangement as `ol-shim serve`, where creating a container makes
// dockerd call back into the process that asked for it. dockerd remembers
// every legacy plugin it has talked to and retries a vanished one for
// about 30s whenever it looks a volume up across drivers, so all
// integration tests (package scratch's too) use this one name and socket,
// one package at a time (make integration runs go test -p 1).
const (
	itPluginName   = "ol-shim-it"
	itPluginSocket = "/run/ol-shim-it/plugin.sock"
)

var (
	pluginOnce    sync.Once
	pluginManager *scratch.Manager
	pluginErr     error
)

func startVolumePlugin(t testing.TB) *scratch.Manager {
	t.Helper()
	pluginOnce.Do(func() {
		root, err := os.MkdirTemp("", "ol-shim-it-plugin-")
		if err != nil {
			pluginErr = err
			return
		}
		m, err := scratch.Open(context.Background(), scratch.Config{Root: root})
		if err != nil {
			pluginErr = err
			return
		}
		l, err := scratch.Listen(itPluginSocket, "")
		if err != nil {
			pluginErr = err
			return
		}
		go scratch.NewDriver(m, nil).Serve(l)
		spec, _ := json.Marshal(map[string]string{"Name": itPluginName, "Addr": "unix://" + itPluginSocket})
		if err := os.MkdirAll("/etc/docker/plugins", 0o755); err != nil {
			pluginErr = err
			return
		}
		pluginErr = os.WriteFile(filepath.Join("/etc/docker/plugins", itPluginName+".json"), spec, 0o644)
		pluginManager = m
		stopPlugin = func() {
			l.Close()
			m.Close()
			os.Remove(filepath.Join("/etc/docker/plugins", itPluginName+".json"))
			os.RemoveAll(root)
		}
	})
	if pluginErr != nil {
		t.Fatalf("volume plugin: %v", pluginErr)
	}
	return pluginManager
}

var stopPlugin = func() {}

// newVolumeEnv is an env whose sandboxes get their scratch through the
// volume plugin.
func newVolumeEnv(t *testing.T) (*env, *scratch.Manager) {
	t.Helper()
	m := startVolumePlugin(t)
	e := newEnv(t)
	d, err := NewDocker(context.Background(), DockerConfig{RootID: e.d.RootID(), InitBinary: initBinary, VolumeDriver: itPluginName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e.d = d
	return e, m
}

func TestSandboxScratchIsAQuotaVolume(t *testing.T) {
	e, m := newVolumeEnv(t)
	vs, err := e.d.VolumeScratch(map[string]string{"size": "8M"}, m.Path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sandboxset.New(sandboxset.Config{Name: "vol", Backend: e.backend("vol", sleepSpec), Scratch: vs})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb := r.Sandbox().(*Sandbox)
	c := e.inspect(sb.ContainerID())
	var found bool
	for _, mp := range c.Mounts {
		if mp.Destination == ScratchTarget && mp.Type == mount.TypeVolume && mp.Name == sb.ID() && mp.Driver == itPluginName {
			found = true
		}
	}
	if !found {
		t.Fatalf("no %s volume %s at %s: %+v", itPluginName, sb.ID(), ScratchTarget, c.Mounts)
	}
	// The quota holds inside the sandbox, and the host sees what it wrote.
	out := e.exec(sb.ContainerID(), "sh", "-c", "echo hi > /host/small; dd if=/dev/zero of=/host/big bs=1M count=16 2>&1; echo done")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("16 MiB into an 8 MiB scratch: %s", out)
	}
	if b, err := os.ReadFile(filepath.Join(sb.ScratchDir(), "small")); err != nil || string(b) != "hi\n" {
		t.Errorf("host view of /host/small: %q, %v", b, err)
	}
	st, err := m.Get(sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mounts != 1 || st.BytesUsed < 7<<20 {
		t.Errorf("volume status %+v", st)
	}
	// Docker lists it with our labels.
	res, err := e.d.cli.VolumeList(ctx, client.VolumeListOptions{Filters: client.Filters{}.Add("label", api.LabelRoot+"="+e.d.RootID())})
	if err != nil || len(res.Items) != 1 || res.Items[0].Labels[api.LabelSandbox] != sb.ID() {
		t.Errorf("docker volume ls: %+v, %v", res.Items, err)
	}
	// Pause and reuse keep the volume; destroy removes it everywhere.
	if err := r.Put(); err != nil {
		t.Fatal(err)
	}
	r, err = s.GetOrCreateUnpaused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome() != sandboxset.Warm {
		t.Errorf("outcome %v", r.Outcome())
	}
	if err := r.Destroy("test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(sb.ID()); err == nil {
		t.Errorf("volume %s still in the plugin after Destroy", sb.ID())
	}
	if res, _ := e.d.cli.VolumeList(ctx, client.VolumeListOptions{Filters: client.Filters{}.Add("label", api.LabelRoot+"="+e.d.RootID())}); len(res.Items) != 0 {
		t.Errorf("docker still lists %d scratch volumes", len(res.Items))
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileRemovesOrphanVolumes(t *testing.T) {
	e, m := newVolumeEnv(t)
	vs, err := e.d.VolumeScratch(nil, m.Path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A scratch volume whose container was never made (a crash between
	// the two), and a user's own volume of the same driver.
	if _, err := vs.Make(ctx, "fn-orphan"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: "users-own", Driver: itPluginName}); err != nil {
		t.Fatal(err)
	}
	defer e.d.cli.VolumeRemove(ctx, "users-own", client.VolumeRemoveOptions{})
	s, err := sandboxset.New(sandboxset.Config{Name: "fn", Backend: e.backend("fn", sleepSpec), Scratch: vs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	rep, err := Reconcile(ctx, e.d, vs, map[string]ReconcilePool{"fn": {Set: s, Backend: e.backend("fn", sleepSpec)}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed[RemovedOrphanDir] != 1 {
		t.Errorf("report %+v, want the orphan volume removed", rep)
	}
	if _, err := m.Get("fn-orphan"); err == nil {
		t.Error("orphan scratch volume survived reconcile")
	}
	if _, err := m.Get("users-own"); err != nil {
		t.Errorf("reconcile touched a user's volume: %v", err)
	}
}
