//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestImageLabelsDoNotMakeAContainerOurs: a user's container whose image
// copies every label of one of ol-shim's sandboxes (the state root's ID,
// pool, sandbox, instance, spec) is not ol-shim's: neither the reconcile
// of a restart nor the orphan sweep after it removes it, and no pool
// adopts it. A pool cannot be made of an image that carries those labels.
func TestImageLabelsDoNotMakeAContainerOurs(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	ours := d.containers(false)
	if len(ours) == 0 {
		t.Fatal("no container of the daemon to copy labels from")
	}
	out, err := exec.Command("docker", "inspect", "-f", "{{json .Config.Labels}}", ours[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	var labels map[string]string
	if err := json.Unmarshal(out, &labels); err != nil {
		t.Fatal(err)
	}
	var df strings.Builder
	df.WriteString("FROM ol-shim-test/busybox:latest\n")
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "io.ol-shim.") && k != "io.ol-shim.test.inputs" {
			fmt.Fprintf(&df, "LABEL %s=%q\n", k, labels[k])
		}
	}
	image := fmt.Sprintf("ol-shim-test/copycat:%d", os.Getpid())
	build := exec.Command("docker", "build", "-q", "-t", image, "-")
	build.Stdin = strings.NewReader(df.String())
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build of the copycat image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })
	name := fmt.Sprintf("copycat-%d", os.Getpid())
	for i, args := range [][]string{
		{"run", "-d", "--name", name, "--network", "none", image, "sleep", "1000"},
		{"run", "-d", "--name", name + "-paused", "--network", "none", image, "sleep", "1000"},
		{"pause", name + "-paused"},
	} {
		if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
			t.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		if i < 2 {
			t.Cleanup(func() { exec.Command("docker", "rm", "-f", args[3]).Run() })
		}
	}
	// A restart reconciles, and sweeps orphans 5 s after.
	d.stop(syscall.SIGTERM)
	d.start()
	time.Sleep(7 * time.Second)
	for _, c := range []string{name, name + "-paused"} {
		if err := exec.Command("docker", "inspect", c).Run(); err != nil {
			t.Errorf("the user's container %s, whose image copies ol-shim's labels, was removed", c)
		}
	}
	if p, err := d.c.Pool(t.Context(), "bb"); err == nil && p.Stats.Idle+p.Stats.InUse > 2 {
		t.Errorf("pool bb holds %d sandboxes: a user's container was adopted", p.Stats.Idle+p.Stats.InUse)
	}
	if _, stderr, code := d.cli("", "pool", "create", "copycat", image); code != 0 {
		t.Fatalf("pool create: exit %d: %s", code, stderr)
	}
	defer d.cli("", "pool", "rm", "copycat")
	_, stderr, code := d.cli("", "run", "--timeout", "30s", "--pool", "copycat", "true")
	if code == 0 || !strings.Contains(stderr, "io.ol-shim.") {
		t.Errorf("a run in a pool of an image that carries ol-shim's labels: exit %d, %q; want a refusal naming the label", code, stderr)
	}
	t.Logf("run in the copycat pool: exit %d: %s", code, strings.TrimSpace(stderr))
}

// TestAdHocWritesBounded: a run in an ad hoc pool (an image with no pool)
// cannot write more than its bounds to the host's disks: not into /host
// past the ad hoc scratch quota, not into its root file system, and not
// into /tmp past its tmpfs.
func TestAdHocWritesBounded(t *testing.T) {
	d := newDaemon(t, "")
	out, stderr, code := d.cli("", "run", "--timeout", "60s", "ol-shim-test/busybox:latest", "sh", "-c", `
dd if=/dev/zero of=/host/big bs=1M count=200 2>/dev/null; echo host $(($(wc -c < /host/big) >> 20))
dd if=/dev/zero of=/big bs=1M count=200 2>/dev/null; echo root $(($(wc -c < /big 2>/dev/null || echo 0) >> 20))
dd if=/dev/zero of=/tmp/big bs=1M count=200 2>/dev/null; echo tmp $(($(wc -c < /tmp/big) >> 20))
`)
	t.Logf("exit %d:\n%s%s", code, out, stderr)
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var k string
		var n int
		if _, err := fmt.Sscan(line, &k, &n); err == nil {
			got[k] = n
		}
	}
	if len(got) != 3 {
		t.Fatalf("the run did not report its three writes")
	}
	for k, n := range got {
		if n >= 200 {
			t.Errorf("an ad hoc run wrote %d MiB into %s: no bound held it", n, k)
		}
	}
}

// TestScratchNoExec: a program a run drops into a quota'd /host (a kernel
// backend volume, and a FUSE one) does not run, read-only root file system
// or not, unless the pool says scratch_exec; then it does.
func TestScratchNoExec(t *testing.T) {
	for _, backend := range []string{"kernel", "fuse"} {
		t.Run(backend, func(t *testing.T) { testScratchNoExec(t, backend) })
	}
}

func testScratchNoExec(t *testing.T, backend string) {
	d := newDaemonWith(t, scratchNoExecConfig, func(d *testDaemon) { d.extra = []string{"--scratch-backend", backend} })
	for pool, want := range map[string]bool{"q": false, "qx": true} {
		out, stderr, code := d.cli("", "run", "--timeout", "60s", "--pool", pool, "sh", "-c", "cp /bin/busybox /host/true && /host/true && echo RAN")
		t.Logf("pool %s: exit %d %q %q", pool, code, out, stderr)
		if ran := strings.Contains(out, "RAN"); ran != want {
			t.Errorf("pool %s: a program copied into /host ran: %v; want %v", pool, ran, want)
		}
	}
}

const scratchNoExecConfig = `
[pools.q]
image = "ol-shim-test/busybox:latest"
memory = "64M"
scratch_size = "16M"
read_only_rootfs = true

[pools.qx]
image = "ol-shim-test/busybox:latest"
memory = "64M"
scratch_size = "16M"
scratch_exec = true
`

// TestSandboxUidsNoHostAccount (issue 33, item 7): a sandbox's processes
// run under a uid and gid that no host account owns, whatever the image's
// USER says, and can still write their /host. The attack: a host user
// whose uid an image names (USER 1000; uid 1000 is a host account on the
// machines this runs on, or any uid a host user has) reads a run's
// environment through /proc.
func TestSandboxUidsNoHostAccount(t *testing.T) {
	const img = "ol-shim-test/user1000:it"
	buildImage(t, img, "USER 1000:1000")
	d := newDaemon(t, "")
	for _, image := range []string{busybox, img} {
		out, stderr, code := d.cli("", "run", "--timeout", "60s", image, "sh", "-c", "id -u; id -g; echo x > /host/f && echo WROTE")
		t.Logf("%s: exit %d %q %q", image, code, out, stderr)
		f := strings.Fields(out)
		if code != 0 || len(f) != 3 || f[2] != "WROTE" {
			t.Errorf("a run of %s: exit %d, %q: want its uid, its gid and a write to /host", image, code, out)
			continue
		}
		if u, err := user.LookupId(f[0]); err == nil {
			t.Errorf("a run of %s ran as uid %s, the host account %q's", image, f[0], u.Username)
		}
		if g, err := user.LookupGroupId(f[1]); err == nil {
			t.Errorf("a run of %s ran as gid %s, the host group %q's", image, f[1], g.Name)
		}
	}

	// Another user only where a pool says so: root on the host, who may
	// run as anyone, gets an ad hoc pool that runs as root for -u; a pool
	// of the sandbox user cannot run a command as another.
	out, stderr, code := d.cli("", "run", "--timeout", "60s", "-u", "0", busybox, "id", "-u")
	if code != 0 || strings.TrimSpace(out) != "0" {
		t.Errorf("root's run -u 0 by image: exit %d, %q %q: want uid 0", code, out, stderr)
	}
	if _, stderr, code := d.cli("", "pool", "create", "plain", busybox); code != 0 {
		t.Fatalf("pool create: %s", stderr)
	}
	out, stderr, code = d.cli("", "run", "--timeout", "60s", "--pool", "plain", "-u", "0", "id", "-u")
	if code != 126 || !strings.Contains(stderr, "cannot run as 0:0") {
		t.Errorf("run -u 0 in a pool of the sandbox user: exit %d, %q %q: want 126, cannot run as 0:0", code, out, stderr)
	}

	secret := fmt.Sprintf("hunter2-%d", os.Getpid())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.cli("", "run", "--timeout", "60s", "-e", "SECRET="+secret, img, "sleep", "8")
	}()
	defer func() { <-done }()
	pid := ""
	for deadline := time.Now().Add(30 * time.Second); pid == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
			if err == nil && strings.Contains(string(b), "SECRET="+secret) {
				pid = e.Name()
				break
			}
		}
	}
	if pid == "" {
		t.Fatal("the run's process never showed on the host")
	}
	cat := exec.Command("cat", "/proc/"+pid+"/environ")
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	got, err := cat.Output()
	t.Logf("host uid 1000 reads /proc/%s/environ: %v", pid, err)
	if strings.Contains(string(got), secret) {
		t.Errorf("a host process of uid 1000 read a sandbox's environment: %q", got)
	}
}
