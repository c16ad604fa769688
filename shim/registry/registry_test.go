package registry

import (
	"context"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// testProvider is the mock backend with plain scratch directories.
type testProvider struct {
	b       *sandboxset.MockBackend
	scratch sandboxset.DirScratch
}

func (p testProvider) Pool(string, spec.PoolConfig) (sandboxset.Backend, sandboxset.ScratchMaker, error) {
	return p.b, p.scratch, nil
}

func (p testProvider) Describe(sandboxset.Sandbox) (string, string) { return "", "" }

// TestCloseWaitsForCreates: a stop that leaves sandboxes for the next start
// waits for the ones being made, so that none is finished by the backend
// after the process is gone and belongs to nobody.
func TestCloseWaitsForCreates(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	mb.SetLatency(sandboxset.OpCreate, 300*time.Millisecond)
	r, err := New(Config{Provider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20, MinIdle: 3}); err != nil {
		t.Fatal(err)
	}
	p, err := r.Pool("fn")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Creating == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := r.Close(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Creating != 0 || st.Idle != 3 {
		t.Errorf("after Close: %d being created, %d idle; want 0 and 3", st.Creating, st.Idle)
	}
}
