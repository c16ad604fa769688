package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The built binary: the pool command's status is its own; a command that
// does not start is 127 with a message naming it; a bad flag or command is 125.
func TestInitBinary(t *testing.T) {
	bin := buildInit(t)
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{args: []string{"init", "--", "sh", "-c", "exit 7"}, code: 7},
		{args: []string{"--", "true"}, code: 0},
		{args: []string{"init", "--", "no-such-command-here"}, code: 127, says: `start "no-such-command-here"`},
		{args: []string{"--agent=/nonexistent/dir/s", "--frob"}, code: 125, says: `unknown flag "--frob"`},
		{args: []string{"frob"}, code: 125, says: `unknown command "frob"`},
		{args: []string{"--version"}, code: 0, says: "ol-shim version "},
		{args: []string{"version"}, code: 0, says: "(ol-shim-init)"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(string(out), c.says) {
			t.Errorf("ol-shim-init %q: exit %d, %q; want %d, %q", c.args, code, out, c.code, c.says)
		}
	}
}

// buildInit builds ol-shim-init as the daemon ships it (static).
func buildInit(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "ol-shim-init")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}
