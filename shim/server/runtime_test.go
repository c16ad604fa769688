package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/internal/serve"
)

// TestRuntimeCheckOnlyRoot: only local root (dockerd's runtime, started by
// containerd's shim) may ask whether a container is served: the check
// reads dockerd's own records of the container by its id, and makes ad
// hoc pools, so a member of the socket's group or a TLS client could
// otherwise learn of other users' containers and fill the host with pools.
func TestRuntimeCheckOnlyRoot(t *testing.T) {
	var ids []string
	s := &Server{ServeCheck: func(_ context.Context, id string) (string, string, error) {
		ids = append(ids, id)
		return "", "not this one", nil
	}}
	h := s.Handler()
	do := func(cred serve.Cred, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/runtime/check", strings.NewReader(body))
		r = r.WithContext(serve.WithPeer(r.Context(), cred))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, c := range []serve.Cred{{UID: 1000}, {UID: 0, Client: "worker-1"}, {UID: 65534}} {
		if w := do(c, `{"id":"abc"}`); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "only root") {
			t.Errorf("peer %+v: %d %s, want 403", c, w.Code, w.Body)
		}
	}
	if len(ids) != 0 {
		t.Fatalf("the check ran for an unprivileged peer: %v", ids)
	}
	if w := do(serve.Cred{UID: 0}, `{"id":"abc","user":"0:0"}`); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "not this one") {
		t.Errorf("root: %d %s, want 200 and the check's answer", w.Code, w.Body)
	}
	for _, body := range []string{`[`, `{"id":"abc","extra":1}`, strings.Repeat(" ", 9<<20) + `{}`} {
		if w := do(serve.Cred{UID: 0}, body); w.Code/100 != 4 {
			t.Errorf("body of %d bytes: %d, want a 4xx", len(body), w.Code)
		}
	}
}
