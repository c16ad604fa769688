//go:build integration

package integration

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestVolumeGrow: a user's volume, filled by a container, grows with
// `ol-shim volume grow` once no container has it; the next container
// fills it to the new limit, its data kept, and docker volume inspect
// shows the new limits. While a container has it, the grow is refused
// with a message that says why, and nothing changes.
func TestVolumeGrow(t *testing.T) {
	d := newDaemon(t, "")
	for _, backend := range []string{"kernel", "fuse"} {
		t.Run(backend, func(t *testing.T) {
			vol := "it-grow-" + backend
			mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=8M", "--opt", "backend="+backend, vol)
			t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", vol).Run() })
			// Fill it: dd stops at ENOSPC (or EDQUOT); the second one takes
			// what a full file system held back for the first's writes.
			fill := "echo kept > /data/kept; dd if=/dev/zero of=/data/f bs=4096 2>/dev/null; sync; dd if=/dev/zero of=/data/g bs=4096 2>/dev/null; sync; cat /data/kept"
			out := mustRun(t, "docker", "run", "--rm", "-v", vol+":/data", busybox, "sh", "-c", fill)
			if !strings.Contains(out, "kept") {
				t.Fatalf("first fill: %s", out)
			}
			// What docker volume inspect shows.
			used := func() (size, bytes int64) {
				t.Helper()
				var st struct {
					Size      int64  `json:"size"`
					BytesUsed int64  `json:"bytes_used"`
					Backend   string `json:"backend"`
				}
				out := mustRun(t, "docker", "volume", "inspect", "--format", "{{json .Status}}", vol)
				if err := json.Unmarshal([]byte(out), &st); err != nil || st.Backend != backend {
					t.Fatalf("docker volume inspect %s: %s (%v); want the %s backend", vol, out, err, backend)
				}
				return st.Size, st.BytesUsed
			}
			if size, b := used(); size != 8<<20 || b > 8<<20 || b < 7<<20 {
				t.Fatalf("after the first fill: limit %d, %d bytes used; want 8M, nearly all of it", size, b)
			}

			id := strings.TrimSpace(mustRun(t, "docker", "run", "-d", "-v", vol+":/data", busybox, "sleep", "600"))
			_, stderr, code := d.cli("", "volume", "grow", vol, "--size", "32M")
			if code == 0 || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, vol) {
				t.Errorf("grow while a container has it: exit %d, %q; want refused, naming the volume and why", code, stderr)
			}
			mustRun(t, "docker", "rm", "-f", id)
			if size, _ := used(); size != 8<<20 {
				t.Errorf("a refused grow changed the limit to %d", size)
			}

			stdout, stderr, code := d.cli("", "volume", "grow", vol, "--size", "32M")
			if code != 0 || !strings.Contains(stdout, strconv.Itoa(32<<20)) {
				t.Fatalf("grow: exit %d, %q %q", code, stdout, stderr)
			}
			out = mustRun(t, "docker", "run", "--rm", "-v", vol+":/data", busybox, "sh", "-c", "rm -f /data/g; "+strings.Replace(fill, "echo kept > /data/kept; ", "", 1)+"; du -k /data/f")
			if !strings.Contains(out, "kept") {
				t.Fatalf("data lost in the grow: %s", out)
			}
			if size, b := used(); size != 32<<20 || b > 32<<20 || b < 31<<20 {
				t.Errorf("after the grow and a second fill: limit %d, %d bytes used; want 32M, nearly all of it (%s)", size, b, out)
			}
			// Smaller is refused.
			if _, stderr, code := d.cli("", "volume", "grow", vol, "--size", "16M"); code == 0 || !strings.Contains(stderr, "not shrink") {
				t.Errorf("shrink: exit %d, %q", code, stderr)
			}
		})
	}
}
