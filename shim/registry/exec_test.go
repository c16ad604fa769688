package registry

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// TestExecOnlyIntoYourOwnRun: an exec in a sandbox (docker exec into a
// served container) runs only beside a run that holds that sandbox now,
// and only for that run's caller or root: bob naming the sandbox alice's
// run holds is told no run of his holds it, as when none does; after
// alice's run ends, no one may exec there (the sandbox is on its way back,
// or to someone else), and an exec still open is cut off.
func TestExecOnlyIntoYourOwnRun(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	var agents []net.Conn
	p := runProvider{testProvider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}}
	p.session = func() io.ReadWriteCloser {
		a, b := net.Pipe()
		agents = append(agents, b)
		return a
	}
	r, err := New(Config{Provider: p, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20, Shared: true}); err != nil {
		t.Fatal(err)
	}
	alice := WithOwner(context.Background(), Owner{Key: "uid:1000"})
	bob := WithOwner(context.Background(), Owner{Key: "uid:1001"})
	main, err := r.OpenRun(alice, api.RunRequest{Pool: "fn", Cmd: []string{"sleep", "9"}})
	if err != nil {
		t.Fatal(err)
	}
	sb := main.Hello().Sandbox
	exec := api.RunRequest{Sandbox: sb, Cmd: []string{"sh"}}
	if _, err := r.OpenRun(bob, exec); !errdefs.IsNotFound(err) {
		t.Errorf("bob's exec in the sandbox alice's run holds: %v; want not found", err)
	}
	if _, err := r.OpenRun(alice, api.RunRequest{Sandbox: "fn-0123456789abcdef", Cmd: []string{"sh"}}); !errdefs.IsNotFound(err) {
		t.Errorf("an exec in a sandbox no run holds: %v; want not found", err)
	}
	if _, err := r.OpenRun(alice, api.RunRequest{Sandbox: sb}); err == nil {
		t.Errorf("an exec with no command was opened")
	}
	mine, err := r.OpenRun(alice, exec)
	if err != nil {
		t.Fatalf("alice's exec beside her own run: %v", err)
	}
	rootExec, err := r.OpenRun(context.Background(), exec)
	if err != nil {
		t.Fatalf("root's exec: %v", err)
	}
	rootExec.Abort()
	main.Abort()
	if _, err := r.OpenRun(alice, exec); !errdefs.IsNotFound(err) {
		t.Errorf("an exec after its run ended: %v; want not found", err)
	}
	// The exec still open was cut off: its connection to the agent is
	// closed (the agent kills its process group).
	agents[1].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := agents[1].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the agent's side of an exec still open after its run ended: %v; want EOF (cut off)", err)
	}
	mine.Abort()
	if n := len(agents); n != 3 {
		t.Errorf("%d connections to the agent; want 3 (the run, alice's exec, root's)", n)
	}
}
