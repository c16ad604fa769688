package shim

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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
