package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/metrics"
	"github.com/open-lambda/ol-shim/shim/mock"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// apiFixture serves a mock-backend registry over a unix socket.
type apiFixture struct {
	t    *testing.T
	reg  *registry.Registry
	mock *sandboxset.MockBackend
	c    *api.Client
	hc   *http.Client // raw HTTP to the socket
	ctx  context.Context
}

func newAPI(t *testing.T, edit func(*registry.Config)) *apiFixture {
	t.Helper()
	root := t.TempDir()
	mp, err := mock.New(root)
	if err != nil {
		t.Fatal(err)
	}
	cfg := registry.Config{Provider: mp, Root: root, Lease: time.Minute, AdHoc: config.AdHocConfig{Memory: spec.DefaultPoolMemory}}
	if edit != nil {
		edit(&cfg)
	}
	reg, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: (&Server{Registry: reg, Backend: "mock", Version: "test"}).Handler()}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		reg.Close(context.Background(), true)
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &apiFixture{t: t, reg: reg, mock: mp.Backend, c: api.NewClient(sock), hc: hc, ctx: context.Background()}
}

func wantStatus(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != code || !strings.Contains(ae.Message, msg) {
		t.Errorf("error %v; want %d with %q", err, code, msg)
	}
}

func TestAPIPools(t *testing.T) {
	f := newAPI(t, nil)
	pc := spec.PoolConfig{Image: "ol-shim-test/runtime:latest", MinIdle: 2, MaxSize: 4}
	if _, err := f.c.PutPool(f.ctx, "fn", pc); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := f.c.Pool(f.ctx, "fn")
		if err != nil {
			t.Fatal(err)
		}
		if p.Stats.Idle == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never warmed: %+v", p.Stats)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p, err := f.c.Warm(f.ctx, "fn", 3); err != nil || p.Stats.MinIdle != 3 {
		t.Errorf("warm: %+v, %v", p, err)
	}
	if p, err := f.c.Shrink(f.ctx, "fn", 1); err != nil || p.Stats.Idle != 1 {
		t.Errorf("shrink: %+v, %v", p, err)
	}
	ps, err := f.c.Pools(f.ctx)
	if err != nil || len(ps) != 1 || ps[0].Image != pc.Image {
		t.Errorf("list: %+v, %v", ps, err)
	}
	if err := f.c.DeletePool(f.ctx, "fn"); err != nil {
		t.Fatal(err)
	}
	_, err = f.c.Pool(f.ctx, "fn")
	wantStatus(t, err, 404, `pool "fn": not found`)
	if _, _, alive := f.mock.Counts(); alive != 0 {
		t.Errorf("%d sandboxes alive after the pool was deleted", alive)
	}
}

func TestAPILeases(t *testing.T) {
	f := newAPI(t, nil)
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	if l.ID == "" || l.Pool != "fn" || l.Outcome != "cold" || l.ScratchPath == "" || time.Until(l.Expires) < 50*time.Second {
		t.Errorf("lease %+v", l)
	}
	if r, err := f.c.Renew(f.ctx, l.ID, "2h"); err != nil || time.Until(r.Expires) < time.Hour {
		t.Errorf("renew: %+v, %v", r, err)
	}
	if err := f.c.Release(f.ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, f.c.Release(f.ctx, l.ID), 409, "already released")
	wantStatus(t, f.c.Release(f.ctx, "nope"), 404, `lease "nope": not found`)
	l2, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	if err != nil || l2.Outcome != "warm" || l2.SandboxID != l.SandboxID {
		t.Errorf("second acquire: %+v, %v; want the same sandbox, warm", l2, err)
	}
	if err := f.c.Destroy(f.ctx, l2.ID, "done with it"); err != nil {
		t.Fatal(err)
	}
	st, err := f.c.Status(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pools) != 1 || st.Pools[0].Stats.Destroys["done with it"] != 1 || len(st.Leases) != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestAPILeaseExpires(t *testing.T) {
	f := newAPI(t, func(c *registry.Config) { c.Lease = 200 * time.Millisecond })
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	// The holder hangs: the lease runs out and the sandbox is destroyed,
	// and accounted for.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, _ := f.c.Pool(f.ctx, "fn")
		if f.mock.Lookup(l.SandboxID) == nil && p.Stats.Destroys[registry.ReasonLeaseExpired] == 1 && p.Stats.InUse == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox of an expired lease: alive %v, stats %+v", f.mock.Lookup(l.SandboxID) != nil, p.Stats)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantStatus(t, f.c.Release(f.ctx, l.ID), 409, "already released")
}

func TestAPIAdHocPools(t *testing.T) {
	f := newAPI(t, func(c *registry.Config) { c.AdHoc.IdleTTL = spec.Duration(300 * time.Millisecond) })
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Image: "ol-shim-test/busybox:latest"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.Pool, "adhoc-ol-shim-test-busybox-latest-") {
		t.Errorf("ad-hoc pool %q", l.Pool)
	}
	if err := f.c.Release(f.ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, _ := f.c.Pools(f.ctx)
		_, _, alive := f.mock.Counts()
		if len(ps) == 0 && alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ad-hoc pool not removed after its ttl: %+v, %d sandboxes alive", ps, alive)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAPIMemoryBudget(t *testing.T) {
	f := newAPI(t, func(c *registry.Config) { c.Budget = 2 * spec.DefaultPoolMemory })
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn", Timeout: "100ms"})
	wantStatus(t, err, 503, "memory budget exhausted")
	st, _ := f.c.Status(f.ctx)
	if st.MemoryUsed != 2*spec.DefaultPoolMemory || st.MemoryTotal != 2*spec.DefaultPoolMemory {
		t.Errorf("memory %d of %d", st.MemoryUsed, st.MemoryTotal)
	}
}

func TestAPIBadInput(t *testing.T) {
	f := newAPI(t, nil)
	beside, _ := os.ReadDir(filepath.Dir(f.reg.Root()))
	raw := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://ol-shim"+path, strings.NewReader(body))
		resp, err := f.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"malformed json", "PUT", "/v1/pools/fn", `{"image": `, 400, "body"},
		{"unknown field", "PUT", "/v1/pools/fn", `{"image": "x", "privileged": true}`, 400, `unknown field \"privileged\"`},
		{"capabilities", "PUT", "/v1/pools/fn", `{"image": "x", "cap_add": ["SYS_ADMIN"]}`, 400, "unknown field"},
		{"host network", "PUT", "/v1/pools/fn", `{"image": "x", "network": "host"}`, 400, `network \"host\": not allowed`},
		{"pid namespace", "PUT", "/v1/pools/fn", `{"image": "x", "network": "container:abc"}`, 400, "not allowed"},
		{"bad image", "PUT", "/v1/pools/fn", `{"image": "Not An Image"}`, 400, "image"},
		{"bad pool name", "PUT", "/v1/pools/..x", `{"image": "x"}`, 400, "pool name"},
		{"escaping pool name", "PUT", "/v1/pools/..%2F..%2Fescape", `{"image": "x"}`, 400, "pool name"},
		{"slash in pool name", "PUT", "/v1/pools/a%2Fb", `{"image": "x"}`, 400, "pool name"},
		{"escaping warm", "POST", "/v1/pools/..%2Fx/warm", `{"n": 1}`, 404, "not found"},
		{"escaping lease", "POST", "/v1/leases/..%2F..%2Fx/release", ``, 404, "not found"},
		{"negative size", "PUT", "/v1/pools/fn", `{"image": "x", "scratch_size": "-1"}`, 400, "size"},
		{"negative min idle", "PUT", "/v1/pools/fn", `{"image": "x", "min_idle": -1}`, 400, "min_idle"},
		{"two values", "PUT", "/v1/pools/fn", `{"image": "x"}{}`, 400, "more than one"},
		{"oversized", "PUT", "/v1/pools/fn", `{"image": "` + strings.Repeat("x", api.MaxBody) + `"}`, 400, "larger than"},
		{"unknown pool", "POST", "/v1/acquire", `{"pool": "nope"}`, 404, `pool \"nope\": not found`},
		{"pool and image", "POST", "/v1/acquire", `{"pool": "a", "image": "b"}`, 400, "exactly one"},
		{"bad timeout", "POST", "/v1/acquire", `{"pool": "a", "timeout": "soon"}`, 400, "timeout"},
		{"warm without n", "POST", "/v1/pools/fn/warm", `{}`, 400, "want {"},
		{"negative warm", "POST", "/v1/pools/fn/warm", `{"n": -1}`, 400, "count"},
		{"run on mock", "POST", "/v1/run", `{"image": "x", "cmd": ["true"]}`, 501, "mock backend cannot run"},
		{"run bad image", "POST", "/v1/run", `{"image": "a b", "cmd": ["true"]}`, 400, "image"},
		{"run image not of Docker's grammar", "POST", "/v1/run", `{"image": "UPPER/Case", "cmd": ["true"]}`, 400, "image"},
		{"pool image not of Docker's grammar", "PUT", "/v1/pools/fn", `{"image": "UPPER/Case"}`, 400, "image"},
		{"no such endpoint", "GET", "/v2/status", ``, 404, "no such endpoint"},
		{"bad renew", "POST", "/v1/leases/x/renew", `{"lease": "-5m"}`, 400, "lease"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := raw(tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.msg) || !strings.HasPrefix(body, `{"message":`) {
				t.Errorf("%s %s: %d %s; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.msg)
			}
		})
	}
	if ps, _ := f.c.Pools(f.ctx); len(ps) != 0 {
		t.Errorf("bad requests made pools: %+v", ps)
	}
	// Nothing was made beside the state root.
	if ents, _ := os.ReadDir(filepath.Dir(f.reg.Root())); len(ents) != len(beside) {
		t.Errorf("beside the state root: %v, before the requests %v", ents, beside)
	}
}

func TestStateRootHealth(t *testing.T) {
	h := StateRootHealth(t.TempDir())
	if h.Size <= 0 || h.Free <= 0 || h.Free > h.Size {
		t.Errorf("health of a temp dir: %+v", h)
	}
	h = StateRootHealth(filepath.Join(t.TempDir(), "missing"))
	if !strings.Contains(h.Warning, "no such file") {
		t.Errorf("health of a missing root: %+v", h)
	}
}

func TestClientUnreachable(t *testing.T) {
	c := api.NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, api.ErrUnreachable) || !strings.Contains(err.Error(), "ol-shim serve") {
		t.Errorf("status of no daemon: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	m := metrics.NewMetrics("test")
	f := newAPI(t, func(c *registry.Config) { c.Observe = m.Observe; c.Budget = 1 << 30 })
	m.Watch(f.reg.Status, nil, func(context.Context) *api.DockerHealth { return &api.DockerHealth{OK: true} })
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	f.c.Release(f.ctx, l.ID)
	l, _ = f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	f.c.Destroy(f.ctx, l.ID, "metrics test")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`ol_shim_acquire_seconds_count{outcome="cold",pool="fn"} 1`,
		`ol_shim_acquire_seconds_count{outcome="warm",pool="fn"} 1`,
		`ol_shim_acquisitions_total{outcome="warm",pool="fn"} 1`,
		`ol_shim_destroys_total{pool="fn",reason="metrics test"} 1`,
		`ol_shim_sandboxes{pool="fn",state="idle"} 0`,
		`ol_shim_memory_budget_bytes 1.073741824e+09`,
		`ol_shim_memory_budget_used_bytes 0`,
		`ol_shim_waiting_callers{pool="fn"} 0`,
		`ol_shim_docker_up 1`,
		`ol_shim_build_info{goversion="` + runtime.Version() + `",version="test"} 1`,
		`ol_shim_creates_total{pool="fn"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestAPIStatusCodes(t *testing.T) {
	f := newAPI(t, nil)
	put := func(body string) int {
		t.Helper()
		req, _ := http.NewRequest("PUT", "http://ol-shim/v1/pools/fn", strings.NewReader(body))
		resp, err := f.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(`{"image": "img", "max_size": 1}`); code != http.StatusCreated {
		t.Errorf("first PUT: %d, want 201", code)
	}
	if code := put(`{"image": "img", "max_size": 1}`); code != http.StatusOK {
		t.Errorf("same PUT again: %d, want 200", code)
	}
	if _, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"}); err != nil {
		t.Fatal(err)
	}
	// The pool is full: waiting until the request's timeout is a 504.
	_, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn", Timeout: "100ms"})
	wantStatus(t, err, http.StatusGatewayTimeout, "max size 1")
	if err := f.c.DeletePool(f.ctx, "fn"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, f.c.DeletePool(f.ctx, "fn"), http.StatusNotFound, "not found")
}

// TestClientErrorClasses: the client's errors carry their class, so callers
// test them with errdefs, not with status codes or strings.
func TestClientErrorClasses(t *testing.T) {
	f := newAPI(t, nil)
	if err := f.c.DeletePool(f.ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("delete of a missing pool: %v; want not found", err)
	}
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "Has Space"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a bad image: %v; want invalid argument", err)
	}
	if _, err := f.c.PutPool(f.ctx, "fn", spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.Release(f.ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Release(f.ctx, l.ID); !errdefs.IsConflict(err) {
		t.Errorf("a second release: %v; want conflict", err)
	}
	if _, err := f.c.Run(f.ctx, api.RunCall{RunRequest: api.RunRequest{Pool: "fn", Cmd: []string{"true"}}}); !errdefs.IsNotImplemented(err) {
		t.Errorf("a run on the mock backend: %v; want not implemented", err)
	}
}

// TestAPIEdges: a size as a JSON number; a wrong method is a 405 naming the
// allowed ones; a 100-character pool name works end to end.
func TestAPIEdges(t *testing.T) {
	f := newAPI(t, nil)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://ol-shim"+path, strings.NewReader(body))
		resp, err := f.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b) + resp.Header.Get("Allow")
	}
	if code, body := do("PUT", "/v1/pools/fn", `{"image": "img", "memory": 67108864}`); code != http.StatusCreated {
		t.Errorf("memory as a JSON number: %d %s", code, body)
	} else if p, _ := f.c.Pool(f.ctx, "fn"); p.Config.Memory != 64<<20 {
		t.Errorf("memory as a JSON number: %d", p.Config.Memory)
	}
	if code, body := do("PUT", "/v1/pools/fn2", `{"image": "img", "memory": -5}`); code != http.StatusBadRequest || !strings.Contains(body, "size -5") {
		t.Errorf("negative memory: %d %s", code, body)
	}
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/status", "GET"},
		{"POST", "/v1/pools/fn", "GET, PUT, DELETE"},
		{"GET", "/v1/acquire", "POST"},
	} {
		if code, body := do(tc.method, tc.path, ""); code != http.StatusMethodNotAllowed || !strings.Contains(body, tc.allow) {
			t.Errorf("%s %s: %d %s; want 405 allowing %s", tc.method, tc.path, code, body, tc.allow)
		}
	}
	long := strings.Repeat("p", 100)
	if _, err := f.c.PutPool(f.ctx, long, spec.PoolConfig{Image: "img"}); err != nil {
		t.Fatal(err)
	}
	l, err := f.c.Acquire(f.ctx, api.AcquireRequest{Pool: long})
	if err != nil {
		t.Fatal(err)
	}
	if err := sandboxset.ValidateSandboxID(l.SandboxID); err != nil || len(l.SandboxID) != 117 {
		t.Errorf("sandbox of a 100-character pool: %q (%v)", l.SandboxID, err)
	}
	if err := f.c.Release(f.ctx, l.ID); err != nil {
		t.Error(err)
	}
}

// mockProvider is a mock provider with scratch directories under root.
func mockProvider(tb testing.TB, root string) *mock.Provider {
	tb.Helper()
	mp, err := mock.New(root)
	if err != nil {
		tb.Fatal(err)
	}
	return mp
}
