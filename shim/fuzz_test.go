package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParseConfig: any text is a config or an ErrInvalidConfig, never a
// panic; an accepted config's pools all validate.
func FuzzParseConfig(f *testing.F) {
	f.Add("[pools.a]\nimage = \"x\"\nmemory = \"64M\"\n")
	f.Add("[daemon]\nbackend = \"mock\"\nmemory_budget = \"50%\"\n")
	f.Add("[pools.\"../x\"]\nimage = \"x\"\n")
	f.Add("[pools.a]\nimage = \"x\"\nready = { socket = \"../../etc\" }\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConfig(text)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
			return
		}
		for name, p := range c.Pools {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted pool %q that does not validate: %v", name, err)
			}
			if n := p.Spec().Network; n == "host" {
				t.Fatalf("accepted host network in pool %q", name)
			}
		}
	})
}

// FuzzAPIPoolBody: any PUT /v1/pools body is a 2xx or a 4xx with a
// message, never a 5xx or a panic; whatever is accepted validates.
func FuzzAPIPoolBody(f *testing.F) {
	f.Add([]byte(`{"image": "img"}`))
	f.Add([]byte(`{"image": "img", "network": "host"}`))
	f.Add([]byte(`{"image": "img", "memory": "-1"}`))
	f.Add([]byte(`{"image": "img", "ready": {"file": "../x"}}`))
	f.Add([]byte(`{"image": 5}`))
	reg, err := NewRegistry(RegistryConfig{Root: f.TempDir(), Lease: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { reg.Close(context.Background(), true) })
	h := (&API{Registry: reg, Backend: "mock"}).Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/v1/pools/fz", bytes.NewReader(body)))
		switch {
		case rec.Code >= 500:
			t.Fatalf("PUT %q: %d %s", body, rec.Code, rec.Body)
		case rec.Code >= 400 && !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"message":`)):
			t.Fatalf("PUT %q: %d without a message: %s", body, rec.Code, rec.Body)
		case rec.Code < 300:
			p, err := reg.Pool("fz")
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Config.Validate(); err != nil {
				t.Fatalf("accepted a pool that does not validate: %v", err)
			}
			_ = reg.DeletePool("fz")
		}
	})
}

// FuzzReconcileLabels: labels read back from Docker may be anything (a
// container made by hand, an older version, a hostile user with access to
// dockerd). Reconcile adopts a container only if every label checks out,
// and never takes a label for a scratch name that could leave the scratch
// root.
func FuzzReconcileLabels(f *testing.F) {
	f.Add("bb-0123456789abcdef", "bb", "h1", "paused", "sha256:img")
	f.Add("../../etc", "bb", "h1", "paused", "sha256:img")
	f.Add("bb-1", "../bb", "h1", "running", "sha256:img")
	f.Add("", "", "", "", "")
	f.Add("bb-1/..", "bb", "h1", "paused", "sha256:img")
	pools := map[string]ReconcilePool{
		"bb":  {Backend: &Backend{hash: "h1"}},
		"fus": {Backend: &Backend{hash: "h1"}, NoAdopt: true},
	}
	imageIDs := map[string]string{"bb": "sha256:img", "fus": "sha256:img"}
	f.Fuzz(func(t *testing.T, sandbox, pool, spec, state, image string) {
		labels := map[string]string{LabelSandbox: sandbox, LabelPool: pool, LabelSpec: spec, LabelManaged: "true"}
		reason := removalReason(labels, state, image, pools, imageIDs)
		if reason == "" {
			if sandbox == "" || strings.ContainsAny(sandbox, "/\x00") || sandbox == ".." || state != "paused" ||
				pool != "bb" || spec != "h1" || image != "sha256:img" {
				t.Fatalf("adopted sandbox %q of pool %q, spec %q, state %q, image %q", sandbox, pool, spec, state, image)
			}
		}
		if id, ok := scratchOfLabels(labels); ok {
			if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." || filepath.Base(id) != id {
				t.Fatalf("scratch name %q from labels could leave the scratch root", id)
			}
		}
	})
}

// FuzzAPIAcquireAndLeases: any acquire body and any lease ID in a path is
// answered with a status and a message, never a 5xx or a panic, and a
// granted lease can be released.
func FuzzAPIAcquireAndLeases(f *testing.F) {
	f.Add([]byte(`{"pool": "p"}`), "x")
	f.Add([]byte(`{"pool": "p", "timeout": "-1s"}`), "../../etc")
	f.Add([]byte(`{"image": "img"}`), "%2e%2e")
	f.Add([]byte(`{"pool": "p", "image": "img"}`), "")
	f.Add([]byte(`{"pool": "nope", "timeout": "1ns"}`), "l-1")
	reg, err := NewRegistry(RegistryConfig{Root: f.TempDir(), Lease: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { reg.Close(context.Background(), true) })
	if _, err := reg.PutPool("p", PoolConfig{Image: "img", Memory: 32 << 20, MaxSize: 2}); err != nil {
		f.Fatal(err)
	}
	h := (&API{Registry: reg, Backend: "mock"}).Handler()
	do := func(t *testing.T, method, path string, body []byte) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req, err := http.NewRequest(method, "http://ol-shim"+path, bytes.NewReader(body))
		if err != nil {
			return nil // not a request a client could send
		}
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"message":`)) {
			t.Fatalf("%s %q %q: %d without a message: %s", method, path, body, rec.Code, rec.Body)
		}
		return rec
	}
	f.Fuzz(func(t *testing.T, body []byte, id string) {
		if rec := do(t, http.MethodPost, "/v1/acquire", body); rec != nil && rec.Code < 300 {
			var l Lease
			if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || l.ID == "" {
				t.Fatalf("acquire %q: %d %s", body, rec.Code, rec.Body)
			}
			if rec := do(t, http.MethodPost, "/v1/leases/"+l.ID+"/release", nil); rec.Code >= 300 {
				t.Fatalf("release of a granted lease: %d %s", rec.Code, rec.Body)
			}
		}
		for _, op := range []string{"release", "destroy", "renew"} {
			do(t, http.MethodPost, "/v1/leases/"+id+"/"+op, nil)
		}
	})
}
