// Package packaging holds the Debian package's recipe and maintainer
// scripts; its tests run the scripts.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPurgeKeepsWhatIsMounted runs postrm purge (its state root moved to a
// temporary directory) in a mount namespace of its own: a file system
// still mounted and busy below the state root keeps its data, one that can
// be unmounted is, and the rest of the state root goes.
func TestPurgeKeepsWhatIsMounted(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (CI runs as root)")
		}
		t.Skip("needs root")
	}
	script, err := os.ReadFile("postrm")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "state")
	moved := filepath.Join(t.TempDir(), "postrm")
	if err := os.WriteFile(moved, []byte(strings.ReplaceAll(string(script), "/var/lib/ol-shim", root)), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "sh", "-c", `set -e
mount --make-rprivate /
mkdir -p "$1/mnt/busy" "$1/mnt/free" "$1/volumes/x"
mount -t tmpfs busy "$1/mnt/busy"; echo data > "$1/mnt/busy/f"
mount -t tmpfs free "$1/mnt/free"; echo d > "$1/mnt/free/g"
echo rec > "$1/volumes/x/r"
cd "$1/mnt/busy"
PATH=/usr/sbin:/usr/bin:/sbin:/bin sh "$2" purge
echo "kept: $(cat "$1/mnt/busy/f")"
test ! -e "$1/volumes" && echo "records gone"
test ! -e "$1/mnt/free" && echo "free gone"
cd /
umount "$1/mnt/busy"`, "sh", root, moved)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("postrm purge: %v", err)
	}
	for _, want := range []string{"kept: data", "records gone", "free gone", "still mounted (busy)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("postrm purge: no %q in its run", want)
		}
	}
}
