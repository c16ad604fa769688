package registry

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// adoptAll is a Janitor that adopts, into pool fn, every sandbox its mock
// backend still has: what a restart finds paused.
type adoptAll struct{ mb *sandboxset.MockBackend }

func (j adoptAll) Reconcile(ctx context.Context, pools map[string]AdoptPool) (ReconcileReport, error) {
	rep := ReconcileReport{Adopted: map[string]int{}}
	ap := pools["fn"]
	for _, id := range j.mb.Alive() {
		sb := j.mb.Lookup(id)
		if err := sb.Pause(ctx); err != nil && !sb.Paused() {
			return rep, err
		}
		if err := ap.Set.Adopt(ap.Wrap(sb)); err != nil {
			return rep, err
		}
		rep.Adopted["fn"]++
	}
	return rep, nil
}
func (adoptAll) Watch(ctx context.Context, _ Host) { <-ctx.Done() }
func (adoptAll) RemoveAll(context.Context) error   { return nil }

// TestRestartKeepsWhoHeldASandbox: who held a paused sandbox last is
// known after a restart, so a restart does not hand bob the sandbox alice
// left (her files, her marks): after a clean stop, the record says it was
// alice's, and alice gets it back warm while bob does not; after a stop
// that wrote no record (kill -9), no one is known, and neither gets it as
// it was.
func TestRestartKeepsWhoHeldASandbox(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := map[bool]string{true: "clean stop", false: "no record"}[clean]
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			mb := sandboxset.NewMockBackend()
			prov := testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}
			pools := map[string]spec.PoolConfig{"fn": {Image: "img", Memory: 32 << 20}}
			alice := WithOwner(context.Background(), Owner{Key: "uid:1000"})
			bob := WithOwner(context.Background(), Owner{Key: "uid:1001"})

			r1, err := New(Config{Provider: prov, Root: root, Janitor: adoptAll{mb}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r1.Start(context.Background(), pools); err != nil {
				t.Fatal(err)
			}
			l, err := r1.Acquire(alice, "fn", "")
			if err != nil {
				t.Fatal(err)
			}
			left := l.SandboxID
			if err := r1.Release(l.ID); err != nil {
				t.Fatal(err)
			}
			if err := r1.Close(context.Background(), false); err != nil {
				t.Fatal(err)
			}
			if !clean {
				if err := os.Remove(filepath.Join(root, heldFile)); err != nil {
					t.Fatalf("the clean stop wrote no record: %v", err)
				}
			}

			r2, err := New(Config{Provider: prov, Root: root, Janitor: adoptAll{mb}})
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close(context.Background(), true)
			rep, err := r2.Start(context.Background(), pools)
			if err != nil || rep.Adopted["fn"] != 1 {
				t.Fatalf("restart adopted %v (%v); want alice's sandbox", rep.Adopted, err)
			}
			lb, err := r2.Acquire(bob, "fn", "")
			if err != nil {
				t.Fatal(err)
			}
			if lb.SandboxID == left {
				t.Errorf("after a restart (%s), bob got sandbox %s, which alice left", name, left)
			}
			r2.Release(lb.ID)
			if clean {
				// Bob's take destroyed it, or left it: alice's next take
				// is hers or a new one, never bob's.
				la, err := r2.Acquire(alice, "fn", "")
				if err != nil {
					t.Fatal(err)
				}
				if la.SandboxID == lb.SandboxID {
					t.Errorf("alice got sandbox %s, which bob held", la.SandboxID)
				}
			}
		})
	}
}

// TestRestartKeepsAliceWarm: after a clean stop, alice's own take of the
// sandbox she left is warm: the record keeps owners apart without costing
// the owner her warm sandbox.
func TestRestartKeepsAliceWarm(t *testing.T) {
	root := t.TempDir()
	mb := sandboxset.NewMockBackend()
	prov := testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}
	pools := map[string]spec.PoolConfig{"fn": {Image: "img", Memory: 32 << 20}}
	alice := WithOwner(context.Background(), Owner{Key: "uid:1000"})
	r1, err := New(Config{Provider: prov, Root: root, Janitor: adoptAll{mb}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Start(context.Background(), pools); err != nil {
		t.Fatal(err)
	}
	l, err := r1.Acquire(alice, "fn", "")
	if err != nil {
		t.Fatal(err)
	}
	r1.Release(l.ID)
	r1.Close(context.Background(), false)
	r2, err := New(Config{Provider: prov, Root: root, Janitor: adoptAll{mb}})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(context.Background(), true)
	if _, err := r2.Start(context.Background(), pools); err != nil {
		t.Fatal(err)
	}
	l2, err := r2.Acquire(alice, "fn", "")
	if err != nil {
		t.Fatal(err)
	}
	if l2.SandboxID != l.SandboxID {
		t.Errorf("alice's take after a clean restart got %s, not the sandbox she left (%s)", l2.SandboxID, l.SandboxID)
	}
	if _, err := os.Stat(filepath.Join(root, heldFile)); !os.IsNotExist(err) {
		t.Errorf("the record outlived the start that read it: %v", err)
	}
}
