//go:build integration

package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestPoolCLIAsDocker: pool ls prints pools only, with docker's -q and
// --format table|json|TEMPLATE; pool inspect shows a pool in full (JSON or
// a template); pool create takes docker run's flag names (-m, --pids-limit,
// --read-only, -u, -w), with the old ones kept, and every pool key that
// has a meaning on the command line.
func TestPoolCLIAsDocker(t *testing.T) {
	d := newDaemon(t, "")
	if _, stderr, code := d.cli("", "pool", "create", "-m", "1.5g", "--pids-limit", "99", "--read-only", "-u", "1000:1000", "-w", "/tmp",
		"--network", "none", "--pull", "never", "--runtime", "runc", "--scratch-size", "8m", "--scratch-inodes", "100", "p1", busybox); code != 0 {
		t.Fatalf("pool create with docker's flag names: %s", stderr)
	}
	if _, stderr, code := d.cli("", "pool", "create", "--pids", "77", "--read-only-rootfs", "p2", busybox); code != 0 {
		t.Fatalf("pool create with the old flag names: %s", stderr)
	}
	out, stderr, code := d.cli("", "pool", "inspect", "--format", "{{.Config.Memory}} {{.Config.Pids}} {{.Config.ReadOnlyRootfs}} {{.Config.User}} {{.Config.WorkingDir}} {{.Config.Runtime}} {{.Config.ScratchInodes}}", "p1", "p2")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 ||
		strings.Join(strings.Fields(lines[0]), " ") != "1610612736 99 true 1000:1000 /tmp runc 100" ||
		strings.Join(strings.Fields(lines[1]), " ") != "268435456 77 true 0" { // p2: the default memory, 256M
		t.Errorf("pool inspect --format: exit %d, %q %q", code, out, stderr)
	}
	out, _, code = d.cli("", "pool", "ls", "-q")
	if code != 0 || out != "p1\np2\n" {
		t.Errorf("pool ls -q: exit %d, %q", code, out)
	}
	out, _, code = d.cli("", "pool", "ls")
	if code != 0 || !strings.HasPrefix(out, "POOL ") || strings.Contains(out, "VOLUME") || strings.Contains(out, "limits:") {
		t.Errorf("pool ls: exit %d; want the pools' table only:\n%s", code, out)
	}
	out, _, code = d.cli("", "pool", "ls", "--format", "{{.Name}}={{.Image}}")
	if code != 0 || out != "p1="+busybox+"\np2="+busybox+"\n" {
		t.Errorf("pool ls --format TEMPLATE: exit %d, %q", code, out)
	}
	var pools []struct{ Name string }
	out, _, code = d.cli("", "pool", "ls", "--format", "json")
	if err := json.Unmarshal([]byte(out), &pools); code != 0 || err != nil || len(pools) != 2 {
		t.Errorf("pool ls --format json: exit %d, %v: %q", code, err, out)
	}
	out, _, code = d.cli("", "pool", "inspect", "p1")
	if err := json.Unmarshal([]byte(out), &pools); code != 0 || err != nil || len(pools) != 1 || pools[0].Name != "p1" {
		t.Errorf("pool inspect: exit %d, %v: %q", code, err, out)
	}
	for _, args := range [][]string{{"pool", "ls", "--format", "{{"}, {"pool", "inspect"}, {"pool", "inspect", "p1", "--format", "x"}} {
		if _, stderr, code := d.cli("", args...); code != 125 {
			t.Errorf("%s: exit %d (%s); want a usage error, 125", strings.Join(args, " "), code, stderr)
		}
	}
	if _, stderr, code := d.cli("", "pool", "inspect", "nosuch"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("pool inspect of no pool: exit %d, %q", code, stderr)
	}
}
