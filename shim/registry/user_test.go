package registry

import (
	"context"
	"testing"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// TestPoolsRunAsTheSandboxUser: a pool that names no user runs as the
// sandbox user; by image, a run that names another user lands, for the
// administrator, in an ad hoc pool that runs as root, and for any other
// caller in its own pool of the sandbox user (whose init cannot become
// another user), never in a root one.
func TestPoolsRunAsTheSandboxUser(t *testing.T) {
	const su = "1879048192:1879048192"
	r, err := New(Config{Provider: testProvider{b: sandboxset.NewMockBackend(), scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir(), SandboxUser: su})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	admin := context.Background()
	bob := WithOwner(context.Background(), Owner{Key: "uid:1000"})
	if _, err := r.PutPool(admin, "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20, Shared: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutPool(admin, "rootfn", spec.PoolConfig{Image: "rimg", Memory: 32 << 20, User: "root", Shared: true}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who        string
		ctx        context.Context
		image, as  string
		pool, runs string // "" pool: an ad hoc one
	}{
		{"admin", admin, "img", "", "fn", su},
		{"admin", admin, "img", su, "fn", su},
		{"admin", admin, "img", "0:0", "", "0:0"},
		{"admin", admin, "img", "1000:1000", "", "0:0"},
		{"admin", admin, "rimg", "1000:1000", "rootfn", "root"},
		{"bob", bob, "img", "", "fn", su},
		{"bob", bob, "img", "0:0", "", su},
		{"bob", bob, "rimg", "0:0", "rootfn", "root"},
		{"admin", admin, "other", "", "", su},
	} {
		p, err := r.PoolForImage(c.ctx, c.image, c.as)
		if err != nil {
			t.Errorf("%s, image %s as %q: %v", c.who, c.image, c.as, err)
			continue
		}
		if (c.pool == "" && !p.AdHoc) || (c.pool != "" && p.Name != c.pool) || p.RunsAs != c.runs {
			t.Errorf("%s, image %s as %q: pool %s (ad hoc %v) running as %q; want %q running as %q", c.who, c.image, c.as, p.Name, p.AdHoc, p.RunsAs, c.pool, c.runs)
		}
	}
}
