package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/internal/serve"
	"github.com/open-lambda/ol-shim/shim/api"
)

// TestGrowOnlyRoot: only local root may grow a volume; a member of the
// socket's group or a TLS client could otherwise raise a sandbox's scratch
// limit or fill the host's disk.
func TestGrowOnlyRoot(t *testing.T) {
	type call struct {
		name         string
		size, inodes int64
	}
	var calls []call
	s := &Server{Grow: func(_ context.Context, name string, size, inodes int64) (api.VolumeStatus, error) {
		calls = append(calls, call{name, size, inodes})
		return api.VolumeStatus{Name: name, Options: api.VolumeOptions{Size: size, Inodes: inodes}}, nil
	}}
	h := s.Handler()
	do := func(cred *serve.Cred, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/volumes/v1/grow", strings.NewReader(body))
		if cred != nil {
			r = r.WithContext(serve.WithPeer(r.Context(), *cred))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, c := range []serve.Cred{{UID: 1000}, {UID: 0, Client: "worker-1"}} {
		if w := do(&c, `{"size":"1G"}`); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "only root") {
			t.Errorf("peer %+v: %d %s, want 403", c, w.Code, w.Body)
		}
	}
	if len(calls) != 0 {
		t.Fatalf("grow called for an unprivileged peer: %+v", calls)
	}
	for _, body := range []string{`{}`, `{"size":"lots"}`, `{"size":"-1M"}`, `{"inodes":-5}`, `{"size":"1G","extra":1}`, `[`} {
		if w := do(&serve.Cred{UID: 0}, body); w.Code != http.StatusBadRequest {
			t.Errorf("body %s: %d %s, want 400", body, w.Code, w.Body)
		}
	}
	if len(calls) != 0 {
		t.Fatalf("grow called for a bad request: %+v", calls)
	}
	w := do(&serve.Cred{UID: 0}, `{"size":"128M","inodes":5000}`)
	var st api.VolumeStatus
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &st) != nil || st.Options.Size != 128<<20 {
		t.Fatalf("root: %d %s", w.Code, w.Body)
	}
	if len(calls) != 1 || calls[0] != (call{"v1", 128 << 20, 5000}) {
		t.Errorf("calls %+v", calls)
	}
}
