//go:build integration

package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Images built by hack/images.sh (make images).
const (
	runtimeImage = "ol-shim-test/runtime:latest"
	busyboxImage = "ol-shim-test/busybox:latest"
)

// initBinary is a static ol-shim built for the run.
var initBinary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// These tests need a real dockerd and the test images. They fail, never
	// skip, when either is missing: `make integration` provides both.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: docker client: %v\n", err)
		return 1
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		fmt.Fprintf(os.Stderr, "integration: no dockerd answers (%v); run `make integration`, which starts one\n", err)
		return 1
	}
	for _, img := range []string{runtimeImage, busyboxImage} {
		if _, err := cli.ImageInspect(ctx, img); err != nil {
			fmt.Fprintf(os.Stderr, "integration: image %s: %v; run `make images` (or `make integration`)\n", img, err)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "ol-shim-init-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	initBinary = filepath.Join(dir, "ol-shim-init")
	build := exec.Command("go", "build", "-o", initBinary, "../../cmd/ol-shim-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: build static ol-shim: %v\n%s", err, out)
		return 1
	}
	defer func() { stopPlugin() }()
	return m.Run()
}

// env is one test's view of Docker: its own root ID, so its containers
// are its own, and a scratch root.
type env struct {
	t       testing.TB
	d       *Docker
	scratch sandboxset.DirScratch
}

func newEnv(t testing.TB) *env {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	root := "test-" + hex.EncodeToString(b)
	ctx := context.Background()
	d, err := NewDocker(ctx, DockerConfig{RootID: root, InitBinary: initBinary, CallTimeout: 60 * time.Second})
	if err != nil {
		t.Fatalf("NewDocker: %v", err)
	}
	e := &env{t: t, d: d, scratch: sandboxset.DirScratch{Root: t.TempDir()}}
	t.Cleanup(func() {
		// Whatever the test left is a leak: report it, then remove it.
		left := e.containers()
		for _, c := range left {
			_, _ = d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		}
		if len(left) > 0 && !t.Failed() {
			t.Errorf("%d containers of root %s left behind", len(left), root)
		}
		d.Close()
	})
	return e
}

// containers lists the containers labelled with this env's root.
func (e *env) containers() []container.Summary {
	e.t.Helper()
	res, err := e.d.cli.ContainerList(context.Background(), client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", api.LabelRoot+"="+e.d.RootID()),
	})
	if err != nil {
		e.t.Fatalf("list containers: %v", err)
	}
	return res.Items
}

func (e *env) backend(pool string, ps spec.PoolSpec) *Backend {
	e.t.Helper()
	b, err := e.d.Backend(pool, ps)
	if err != nil {
		e.t.Fatalf("Backend: %v", err)
	}
	return b
}

func (e *env) set(pool string, ps spec.PoolSpec, edit func(*sandboxset.Config)) *sandboxset.Set {
	e.t.Helper()
	cfg := sandboxset.Config{Name: pool, Backend: e.backend(pool, ps), Scratch: e.scratch}
	if edit != nil {
		edit(&cfg)
	}
	s, err := sandboxset.New(cfg)
	if err != nil {
		e.t.Fatalf("sandboxset.New: %v", err)
	}
	e.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func (e *env) inspect(id string) container.InspectResponse {
	e.t.Helper()
	res, err := e.d.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		e.t.Fatalf("inspect %s: %v", id, err)
	}
	return res.Container
}

func (e *env) state(id string) container.ContainerState {
	e.t.Helper()
	return e.inspect(id).State.Status
}

func (e *env) create(b *Backend, id string) *Sandbox {
	e.t.Helper()
	ctx := context.Background()
	dir, err := e.scratch.Make(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	sb, err := b.Create(ctx, sandboxset.Spec{ID: id, Pool: b.pool, ScratchDir: dir})
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return sb.(*Sandbox)
}

var sleepSpec = spec.PoolSpec{Image: busyboxImage, Cmd: []string{"sleep", "3600"}}
