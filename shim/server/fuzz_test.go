package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// FuzzAPIPoolBody: any PUT /v1/pools body is a 2xx or a 4xx with a
// message, never a 5xx or a panic; whatever is accepted validates.
func FuzzAPIPoolBody(f *testing.F) {
	f.Add([]byte(`{"image": "img"}`))
	f.Add([]byte(`{"image": "img", "network": "host"}`))
	f.Add([]byte(`{"image": "img", "memory": "-1"}`))
	f.Add([]byte(`{"image": "img", "ready": {"file": "../x"}}`))
	f.Add([]byte(`{"image": 5}`))
	reg, err := registry.New(registry.Config{Provider: mockProvider(f, f.TempDir()), Root: f.TempDir(), Lease: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { reg.Close(context.Background(), true) })
	h := (&Server{Registry: reg, Backend: "mock"}).Handler()
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
			_ = reg.DeletePool(context.Background(), "fz")
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
	reg, err := registry.New(registry.Config{Provider: mockProvider(f, f.TempDir()), Root: f.TempDir(), Lease: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { reg.Close(context.Background(), true) })
	if _, err := reg.PutPool(context.Background(), "p", spec.PoolConfig{Image: "img", Memory: 32 << 20, MaxSize: 2}); err != nil {
		f.Fatal(err)
	}
	h := (&Server{Registry: reg, Backend: "mock"}).Handler()
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
			var l api.Lease
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
