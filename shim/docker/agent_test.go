package docker

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// A sandbox ID comes back from container labels, which anyone with access
// to dockerd can set: removing a control directory by a label like
// "../victim" must not remove anything outside the agents' directory, and
// the sweep at reconcile removes only what is inside it.
func TestRemoveCtlStaysInAgentDir(t *testing.T) {
	root := t.TempDir()
	agents := filepath.Join(root, "agents")
	victim := filepath.Join(root, "victim")
	for _, d := range []string{agents, victim, filepath.Join(agents, "fn-0123456789abcdef"), filepath.Join(agents, "keep-0123456789abcdef")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d := &Docker{cfg: DockerConfig{AgentDir: agents, InitBinary: "/bin/true"}, log: slog.New(slog.DiscardHandler)}
	for _, id := range []string{"../victim", "..", "/", "a/../../victim"} {
		d.removeCtl(id)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("a directory outside the agents' directory was removed by a label: %v", err)
	}
	if _, err := os.Stat(agents); err != nil {
		t.Fatalf("the agents' directory itself was removed: %v", err)
	}
	d.sweepCtl([]string{"keep-0123456789abcdef"})
	if _, err := os.Stat(filepath.Join(agents, "fn-0123456789abcdef")); !os.IsNotExist(err) {
		t.Errorf("the sweep left the control directory of a sandbox nobody adopted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(agents, "keep-0123456789abcdef")); err != nil {
		t.Errorf("the sweep removed an adopted sandbox's control directory: %v", err)
	}
}
