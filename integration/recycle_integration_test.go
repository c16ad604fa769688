//go:build integration

package integration

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

const recycleConfig = `
[pools.rc]
image = "ol-shim-test/busybox:latest"
cmd = ["sh", "-c", "echo started >> /host/cmd-starts; exec sleep 3333"]
read_only_rootfs = true
recycle = true
min_idle = 1
max_size = 1
memory = "64M"
`

// TestRecycle: in a recycle pool, a plain run (no --reuse) leaves the
// sandbox as it was made for the next run, without a new container: what
// it left running is gone, the pool's command runs again (once), and
// /host, /dev, /dev/shm and System V IPC hold nothing of it. Each step of
// the first run is checked to have happened (the test would prove nothing
// otherwise).
func TestRecycle(t *testing.T) {
	evil := buildEvil(t)
	payload, err := os.ReadFile(evil)
	if err != nil {
		t.Fatal(err)
	}
	// As root: the run dirties /dev, which the sandbox user cannot write.
	d := newDaemon(t, recycleConfig+"user = \"root\"\n")
	d.waitIdle("rc", 1)
	const dirty = `set -e
hostname > /host/hostname-was
cat > /host/ipc && chmod +x /host/ipc && /host/ipc ipc && rm /host/ipc
mkdir /host/d && echo x > /host/d/f
echo y > /dev/shm/s
echo z > /.ol-shim/ctl/leftover
touch /dev/zz && mkdir /dev/dd
chmod 700 /host
setsid sleep 1111 </dev/null >/dev/null 2>&1 &
test $(($(wc -l < /proc/sysvipc/shm) + $(wc -l < /proc/sysvipc/sem) + $(wc -l < /proc/sysvipc/msg))) = 6
ps -o args | grep -q '^sleep 1111'
echo dirtied`
	out, errOut, code := d.cli(string(payload), "run", "-i", "--pool", "rc", "sh", "-c", dirty)
	if code != 0 || !strings.Contains(out, "dirtied") {
		t.Fatalf("the run that leaves things behind: exit %d\n%s%s", code, out, errOut)
	}
	host1, _, _ := d.cli("", "run", "--pool", "rc", "hostname")
	const look = `echo "host: $(ls -A /host | tr '\n' ' ')"
echo "starts: $(cat /host/cmd-starts | wc -l)"
echo "mode: $(stat -c %a /host)"
echo "shm: $(ls -A /dev/shm | tr '\n' ' ')"
echo "dev: $(ls -A /dev | grep -E '^(zz|dd)$' | tr '\n' ' ')"
echo "ipc: $(($(wc -l < /proc/sysvipc/shm) + $(wc -l < /proc/sysvipc/sem) + $(wc -l < /proc/sysvipc/msg)))"
echo "procs: $(ps -o args | grep -c '^sleep 1111')"
echo "ctl: $(ls -A /.ol-shim/ctl | tr '\n' ' ')"
echo "cmd: $(ps -o args | grep -c '^sleep 3333')"
hostname`
	out, errOut, code = d.cli("", "run", "--pool", "rc", "sh", "-c", look)
	if code != 0 {
		t.Fatalf("look: exit %d\n%s%s", code, out, errOut)
	}
	want := []string{"host: cmd-starts \n", "starts: 1\n", "mode: 750\n", "shm: \n", "dev: \n", "ipc: 3\n", "procs: 0\n", "cmd: 1\n", "ctl: agent.sock \n"}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("after a recycle, want %q in:\n%s", w, out)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(out), strings.TrimSpace(host1)) || strings.TrimSpace(host1) == "" {
		t.Errorf("the runs were not in one sandbox (hostnames %q, then %q): recycling was not tried", host1, out)
	}
	st, err := d.c.Pool(context.Background(), "rc")
	if err != nil {
		t.Fatal(err)
	}
	if st.Recycled < 3 || st.Stats.Creates != 1 || st.Stats.Destroyed() != 0 {
		t.Errorf("pool after 3 runs: recycled %d, creates %d, destroys %v; want 3+, 1, none", st.Recycled, st.Stats.Creates, st.Stats.Destroys)
	}
}

// TestRecycleFailsClosed: a run that removes what it cannot be given back
// (/dev/null: no CAP_MKNOD to make it again) makes the recycle fail; the
// sandbox is destroyed and the next run gets a new one, with /dev/null.
func TestRecycleFailsClosed(t *testing.T) {
	// As root: the sandbox user cannot remove /dev/null.
	d := newDaemon(t, recycleConfig+"user = \"root\"\n")
	d.waitIdle("rc", 1)
	out, errOut, code := d.cli("", "run", "--pool", "rc", "sh", "-c", "rm /dev/null && hostname")
	if code != 0 {
		t.Fatalf("rm /dev/null: exit %d\n%s%s", code, out, errOut)
	}
	out2, errOut, code := d.cli("", "run", "--pool", "rc", "sh", "-c", "test -c /dev/null && hostname")
	if code != 0 {
		t.Fatalf("the next run has no /dev/null: exit %d\n%s%s", code, out2, errOut)
	}
	if strings.TrimSpace(out) == strings.TrimSpace(out2) {
		t.Errorf("the run after the failed recycle ran in the same sandbox (%s)", out)
	}
	st, err := d.c.Pool(context.Background(), "rc")
	if err != nil {
		t.Fatal(err)
	}
	if st.Stats.Destroys[registry.ReasonRecycleFailed] != 1 {
		t.Errorf("destroys %v; want one %q", st.Stats.Destroys, registry.ReasonRecycleFailed)
	}
}

// A recycle pool must have a read-only root file system: refused with a
// message that names both, and nothing made.
func TestRecycleNeedsReadOnlyRoot(t *testing.T) {
	d := newDaemon(t, "")
	_, err := d.c.PutPool(context.Background(), "rw", spec.PoolConfig{Image: busybox, Recycle: true, MinIdle: 1})
	if err == nil || !strings.Contains(err.Error(), "recycle") || !strings.Contains(err.Error(), "read_only_rootfs") {
		t.Fatalf("PutPool with recycle and a writable root: %v", err)
	}
	if n := len(d.containers(false)); n != 0 {
		t.Errorf("%d containers made", n)
	}
}
