package server

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestOpenAPIUpToDate: api/openapi.yaml is what the route table and the
// API's types make (go run ./hack/openapi writes it): a route, a field or a
// type changed without the reference fails here.
func TestOpenAPIUpToDate(t *testing.T) {
	b, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := OpenAPI("v1"); string(b) != want {
		t.Errorf("api/openapi.yaml is not what the code makes: run go run ./hack/openapi")
	}
}

// TestRouteTableServed: every endpoint of the reference is served (not
// 404), and with another method answers 405 naming the allowed ones.
func TestRouteTableServed(t *testing.T) {
	h := (&Server{}).Handler()
	for _, rt := range routeTable {
		path := strings.NewReplacer("{name}", "x", "{id}", "x").Replace(rt.path)
		r := httptest.NewRequest("PATCH", path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusMethodNotAllowed || !strings.Contains(w.Header().Get("Allow"), rt.method) {
			t.Errorf("PATCH %s: %d, Allow %q; want 405 allowing %s", path, w.Code, w.Header().Get("Allow"), rt.method)
		}
	}
}
