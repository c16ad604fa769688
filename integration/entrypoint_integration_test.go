//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildImage builds tag from busybox with the Dockerfile lines given (no
// registry: FROM a local image), removed at the test's end.
func buildImage(t *testing.T, tag string, lines ...string) {
	t.Helper()
	dir := t.TempDir()
	df := "FROM " + busybox + "\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", tag, err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
}

// ol-shim run IMAGE starts what docker run IMAGE would: the image's
// ENTRYPOINT with the run's arguments, or with the image's CMD when there
// are none; --entrypoint replaces it (and drops CMD), --entrypoint ""
// drops it. Each case is checked against docker run itself, on the same
// image, through an ad-hoc pool and through a configured one. A pool with
// its own cmd runs what docker exec would.
func TestRunImageEntrypointAsDockerRun(t *testing.T) {
	const img = "ol-shim-test/entrypoint:it"
	buildImage(t, img, `ENTRYPOINT ["/bin/echo", "ep"]`, `CMD ["dflt"]`)
	const plain = "ol-shim-test/nocmd:it" // busybox: neither
	buildImage(t, plain, `LABEL x=y`)
	d := newDaemon(t, fmt.Sprintf("[pools.ep]\nimage = %q\nmin_idle = 1\n\n[pools.epcmd]\nimage = %q\ncmd = [\"sleep\", \"3600\"]\nmin_idle = 1\n", img, img))
	d.waitIdle("ep", 1)
	d.waitIdle("epcmd", 1)
	for _, args := range [][]string{
		{img},
		{img, "x", "y"},
		{"--entrypoint", "sh", img, "-c", "echo via sh"},
		{"--entrypoint", "", img, "echo", "no entrypoint"},
		{"--entrypoint", "/bin/echo", img},
	} {
		out, err := exec.Command("docker", append([]string{"run", "--rm", "--network", "none"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker run %q: %v\n%s", args, err, out)
		}
		stdout, stderr, code := d.cli("", append([]string{"run"}, args...)...)
		if code != 0 || stdout != string(out) {
			t.Errorf("ol-shim run %q: exit %d, %q (stderr %q); docker run printed %q", args, code, stdout, stderr, out)
		}
		// The same through the configured pool of the image: "--" where
		// the image was ends the flags, as the command may start with "-".
		pargs := append([]string{"run", "--pool", "ep"}, args...)
		for i, a := range pargs {
			if a == img {
				pargs[i] = "--"
				break
			}
		}
		if stdout, stderr, code := d.cli("", pargs...); code != 0 || stdout != string(out) {
			t.Errorf("ol-shim %q: exit %d, %q (stderr %q); docker run printed %q", pargs, code, stdout, stderr, out)
		}
	}
	// A pool with its own cmd (which replaced the image's ENTRYPOINT and
	// CMD): a run starts what docker exec would; no command is refused.
	if stdout, stderr, code := d.cli("", "run", "--pool", "epcmd", "echo", "as", "exec"); code != 0 || stdout != "as exec\n" {
		t.Errorf("ol-shim run --pool epcmd echo as exec: exit %d, %q (stderr %q)", code, stdout, stderr)
	}
	if _, stderr, code := d.cli("", "run", "--pool", "epcmd"); code != 125 || !strings.Contains(stderr, "runs its own cmd") {
		t.Errorf("ol-shim run --pool epcmd (no command): exit %d, stderr %q; want 125 saying the pool runs its own cmd", code, stderr)
	}
	// An image with neither, and no command: refused, naming the image.
	_, stderr, code := d.cli("", "run", plain)
	if code != 125 || !strings.Contains(stderr, "no command") || !strings.Contains(stderr, plain) {
		t.Errorf("ol-shim run %s (no ENTRYPOINT, CMD or command): exit %d, stderr %q; want 125 naming the image", plain, code, stderr)
	}
}
