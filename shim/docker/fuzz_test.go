package docker

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/shim/api"
)

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
		"fus": {Backend: &Backend{hash: "h1"}, ScratchLost: func(string) bool { return true }},
	}
	imageIDs := map[string]string{"bb": "sha256:img", "fus": "sha256:img"}
	f.Fuzz(func(t *testing.T, sandbox, pool, spec, state, image string) {
		labels := map[string]string{api.LabelSandbox: sandbox, api.LabelPool: pool, api.LabelSpec: spec, api.LabelManaged: "true"}
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

// TestReconcileAdoptsLongIDs: a pool of a 100-character name makes
// 117-character sandbox IDs, and reconcile adopts them (and removes their
// scratch with them): IDs are checked with their own rule, not the pool
// name's.
func TestReconcileAdoptsLongIDs(t *testing.T) {
	pool := strings.Repeat("p", 100)
	id := pool + "-0123456789abcdef"
	pools := map[string]ReconcilePool{pool: {Backend: &Backend{hash: "h1"}}}
	labels := map[string]string{api.LabelSandbox: id, api.LabelPool: pool, api.LabelSpec: "h1", api.LabelManaged: "true"}
	if reason := removalReason(labels, "paused", "sha256:img", pools, map[string]string{pool: "sha256:img"}); reason != "" {
		t.Errorf("a paused sandbox of a 100-character pool: removed (%s), want adopted", reason)
	}
	if got, ok := scratchOfLabels(labels); !ok || got != id {
		t.Errorf("its scratch: %q, %v", got, ok)
	}
}
