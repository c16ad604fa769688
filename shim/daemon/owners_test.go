package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// TestPoolsHaveOwners: over mutual TLS, a client (bob) can neither change,
// warm, shrink nor remove the administrator's pools or another client's,
// nor read another client's pool (its env); a pool bob makes for an image
// does not catch alice's acquires by that image; ad hoc pools are each
// caller's own. Root on the unix socket may do everything.
func TestPoolsHaveOwners(t *testing.T) {
	td := startTLSDaemon(t)
	ctx := context.Background()
	alice, bob := td.client(t, td.alice), td.client(t, td.bob)
	evil := spec.PoolConfig{Image: "img", Env: []string{"EVIL=1"}, Memory: 32 << 20}

	// The administrator's pool fn.
	if _, err := bob.PutPool(ctx, "fn", evil); err == nil {
		t.Error("bob replaced the config file's pool fn")
	}
	if _, err := bob.Warm(ctx, "fn", 2); err == nil {
		t.Error("bob warmed the config file's pool fn")
	}
	if _, err := bob.Shrink(ctx, "fn", 0); err == nil {
		t.Error("bob shrank the config file's pool fn")
	}
	if err := bob.DeletePool(ctx, "fn"); err == nil {
		t.Error("bob removed the config file's pool fn")
	}
	if p, err := td.c.Pool(ctx, "fn"); err != nil || len(p.Config.Env) != 0 {
		t.Fatalf("pool fn after bob: %+v, %v", p.Config, err)
	}

	// alice's own pool, with a secret.
	mine := spec.PoolConfig{Image: "img2", Env: []string{"SECRET=hunter2"}, Memory: 32 << 20}
	if _, err := alice.PutPool(ctx, "alice-fn", mine); err != nil {
		t.Fatalf("alice makes her pool: %v", err)
	}
	if p, err := bob.Pool(ctx, "alice-fn"); !errdefs.IsNotFound(err) {
		t.Errorf("bob reads alice's pool: %+v, %v; want not found", p.Config, err)
	}
	ps, err := bob.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Name == "alice-fn" || strings.Contains(strings.Join(p.Config.Env, " "), "hunter2") {
			t.Errorf("bob's list of pools shows alice's: %+v", p)
		}
	}
	if _, err := bob.PutPool(ctx, "alice-fn", evil); err == nil {
		t.Error("bob replaced alice's pool")
	}
	if _, err := bob.Warm(ctx, "alice-fn", 1); err == nil {
		t.Error("bob warmed alice's pool")
	}
	if _, err := bob.Shrink(ctx, "alice-fn", 0); err == nil {
		t.Error("bob shrank alice's pool")
	}
	if err := bob.DeletePool(ctx, "alice-fn"); err == nil {
		t.Error("bob removed alice's pool")
	}
	if _, err := bob.Acquire(ctx, apiAcquire("alice-fn", "")); err == nil {
		t.Error("bob acquired from alice's pool")
	}
	if _, err := alice.Warm(ctx, "alice-fn", 1); err != nil {
		t.Errorf("alice warms her pool: %v", err)
	}

	// bob's pool for img, named to come first, does not catch alice's
	// acquire by image.
	if _, err := bob.PutPool(ctx, "0-shadow", evil); err != nil {
		t.Fatalf("bob makes his own pool: %v", err)
	}
	l, err := alice.Acquire(ctx, apiAcquire("", "img"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Pool == "0-shadow" {
		t.Errorf("alice's acquire by image landed in bob's pool %s", l.Pool)
	}
	alice.Release(ctx, l.ID)

	// Ad hoc pools are each caller's.
	la, err := alice.Acquire(ctx, apiAcquire("", "other-image"))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := bob.Acquire(ctx, apiAcquire("", "other-image"))
	if err != nil {
		t.Fatal(err)
	}
	if la.Pool == lb.Pool {
		t.Errorf("alice's and bob's ad hoc pool for one image are one: %s", la.Pool)
	}
	alice.Release(ctx, la.ID)
	bob.Release(ctx, lb.ID)

	// Root may do everything.
	if err := td.c.DeletePool(ctx, "0-shadow"); err != nil {
		t.Errorf("root removes bob's pool: %v", err)
	}
	if _, err := td.c.Warm(ctx, "alice-fn", 0); err != nil {
		t.Errorf("root warms alice's pool: %v", err)
	}
}

func apiAcquire(pool, image string) api.AcquireRequest {
	return api.AcquireRequest{Pool: pool, Image: image, Timeout: "10s"}
}

// TestSandboxNotPassedBetweenOwners: a sandbox one client held (and so may
// have left files, processes' marks or a poisoned binary in) goes back to
// its pool for that client's later takes only: another client, or root,
// never gets it; the same client does, warm.
func TestSandboxNotPassedBetweenOwners(t *testing.T) {
	td := startTLSDaemon(t)
	ctx := context.Background()
	alice, bob := td.client(t, td.alice), td.client(t, td.bob)
	take := func(c *api.Client, who string) string {
		t.Helper()
		l, err := c.Acquire(ctx, apiAcquire("fn", ""))
		if err != nil {
			t.Fatalf("%s acquires from fn: %v", who, err)
		}
		if err := c.Release(ctx, l.ID); err != nil {
			t.Fatalf("%s releases: %v", who, err)
		}
		return l.SandboxID
	}
	a1 := take(alice, "alice")
	if a2 := take(alice, "alice"); a2 != a1 {
		t.Errorf("alice's second take got sandbox %s, not hers (%s): a warm sandbox was not reused for its owner", a2, a1)
	}
	b1 := take(bob, "bob")
	if b1 == a1 {
		t.Fatalf("bob got sandbox %s, which alice held", b1)
	}
	if r1 := take(td.c, "root"); r1 == a1 || r1 == b1 {
		t.Errorf("root got sandbox %s, which a client held", r1)
	}
	p, err := td.c.Pool(ctx, "fn")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fn: %+v", p.Stats.Destroys)
}

// TestReloadNamesKeysNeedingARestart: a reload says which [daemon] keys it
// does not apply (they need a restart), and not the ones it does (the TLS
// certificates and proxies) nor unchanged ones.
func TestReloadNamesKeysNeedingARestart(t *testing.T) {
	old := config.DaemonConfig{MaxPids: 100, TLSCert: "a.pem", LogLevel: "info"}
	new := old
	new.MaxPids, new.TLSCert, new.SandboxUser, new.TLSProxies = 200, "b.pem", "image", []string{"CN=x"}
	got := ChangedDaemonKeys(old, new)
	if strings.Join(got, ",") != "max_pids,sandbox_user" {
		t.Errorf("changed keys needing a restart: %v; want max_pids, sandbox_user", got)
	}
	if got := ChangedDaemonKeys(old, old); len(got) != 0 {
		t.Errorf("nothing changed, yet %v", got)
	}
}
