package ociruntime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRegisterKeepsTheRest: install and uninstall change only the
// runtime's entry of daemon.json: every other key (and other runtimes)
// stays, and so do the file's owner and mode; a daemon.json that is not
// JSON is refused, named, and left as it was.
func TestRegisterKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ol-shim-runtime")
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
	conf := filepath.Join(dir, "daemon.json")
	orig := `{"log-driver": "journald", "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace"]}}, "live-restore": true}`
	os.WriteFile(conf, []byte(orig), 0o640)
	os.Chown(conf, 0, 4)
	changed, err := Register(conf, Name, bin)
	if err != nil || !changed {
		t.Fatalf("Register: %v, %v", changed, err)
	}
	if changed, err := Register(conf, Name, bin); err != nil || changed {
		t.Errorf("a second Register: changed %v, %v; want nothing to change", changed, err)
	}
	var got map[string]any
	b, _ := os.ReadFile(conf)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["log-driver"] != "journald" || got["live-restore"] != true {
		t.Errorf("other keys changed: %s", b)
	}
	rt := got["runtimes"].(map[string]any)
	if rt["runsc"].(map[string]any)["runtimeArgs"].([]any)[0] != "--platform=ptrace" || rt[Name].(map[string]any)["path"] != bin {
		t.Errorf("runtimes: %s", b)
	}
	if p, err := Registered(conf, Name); err != nil || p != bin {
		t.Errorf("Registered: %q, %v", p, err)
	}
	fi, _ := os.Stat(conf)
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o640 || st.Gid != 4 {
		t.Errorf("mode %v gid %d; want 0640 and gid 4 as before", fi.Mode().Perm(), st.Gid)
	}
	if changed, err := Unregister(conf, Name); err != nil || !changed {
		t.Fatalf("Unregister: %v, %v", changed, err)
	}
	b, _ = os.ReadFile(conf)
	var back, want map[string]any
	json.Unmarshal(b, &back)
	json.Unmarshal([]byte(orig), &want)
	if bb, wb := mustJSON(back), mustJSON(want); bb != wb {
		t.Errorf("after uninstall: %s; want %s", bb, wb)
	}

	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"runtimes": `), 0o644)
	if _, err := Register(bad, Name, bin); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Register into a broken daemon.json: %v; want an error naming it", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != `{"runtimes": ` {
		t.Errorf("a broken daemon.json was changed: %q", b)
	}
	if _, err := Register(conf, Name, "relative/bin"); err == nil {
		t.Error("a relative binary path was registered")
	}
	fresh := filepath.Join(dir, "new", "daemon.json")
	if _, err := Register(fresh, Name, bin); err != nil {
		t.Errorf("Register into a daemon.json not there yet: %v", err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
