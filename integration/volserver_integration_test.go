//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
)

// writer starts a container that appends a line to a file on volume vol
// every 50 ms and prints FAIL for each append that fails.
func writer(t *testing.T, vol string) string {
	t.Helper()
	id := strings.TrimSpace(mustRun(t, "docker", "run", "-d", "--network", "none", "--label", "ol-shim-it-writer=1", "-v", vol+":/data", busybox,
		"sh", "-c", "i=0; while :; do echo $i >> /data/log || echo FAIL $i; i=$((i+1)); usleep 50000; done"))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", id).Run() })
	return id
}

// lines counts the lines a writer wrote, read through a fresh container.
func lines(t *testing.T, vol string) int {
	t.Helper()
	out := mustRun(t, "docker", "run", "--rm", "--network", "none", "-v", vol+":/data", busybox, "wc", "-l", "/data/log")
	n, _ := strconv.Atoi(strings.Fields(out)[0])
	return n
}

// TestVolumesOutliveDaemon: three containers write continuously to quota'd
// volumes through a SIGTERM restart and a kill -9 of the daemon. Not one
// write fails: each volume is served by a process of its own, which the
// next daemon finds again. Quotas stay exact, and the paused sandbox of a
// quota'd pool is adopted, not removed as "scratch lost".
func TestVolumesOutliveDaemon(t *testing.T) {
	d := newDaemonWith(t, `
[pools.q]
image = "ol-shim-test/busybox:latest"
min_idle = 1
scratch_size = "16M"
`, nil)
	d.waitIdle("q", 1)
	paused := d.containers(true)
	var vols, writers []string
	for i := range 3 {
		vol := fmt.Sprintf("it-outlive-%d", i)
		mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=8M", "--opt", "backend=fuse", vol)
		t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", vol).Run() })
		vols = append(vols, vol)
		writers = append(writers, writer(t, vol))
	}
	time.Sleep(time.Second)
	before := make([]int, len(vols))
	for i, v := range vols {
		before[i] = lines(t, v)
	}
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, v := range st.Volumes {
		if v.Server != nil {
			pids[v.Name] = v.Server.PID
		}
	}
	for _, stop := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		d.stop(stop)
		time.Sleep(time.Second) // writes go on with no daemon
		d.start()
		time.Sleep(time.Second)
	}
	for i, id := range writers {
		out := mustRun(t, "docker", "logs", id)
		if n := strings.Count(out, "FAIL"); n > 0 {
			t.Errorf("writer on %s: %d failed writes through the restarts:\n%s", vols[i], n, out)
		}
		if n := lines(t, vols[i]); n < before[i]+40 {
			t.Errorf("writer on %s: %d lines, %d before the restarts: it stopped writing", vols[i], n, before[i])
		}
	}
	st, err = d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Volumes {
		if pid, ok := pids[v.Name]; ok && (v.Server == nil || v.Server.PID != pid || !v.Server.Alive) {
			t.Errorf("volume %s: server %+v after the restarts; want the same, alive (pid %d)", v.Name, v.Server, pid)
		}
		if strings.HasPrefix(v.Name, "it-outlive-") {
			du := mustRun(t, "du", "-s", "--block-size=1", filepath.Join(d.root, "volumes", v.Name))
			n, _ := strconv.ParseInt(strings.Fields(du)[0], 10, 64)
			if v.BytesUsed != n-4096 {
				t.Errorf("volume %s: the quota counts %d bytes, du %d (less the volume's own directory block)", v.Name, v.BytesUsed, n)
			}
		}
	}
	if now := d.containers(true); len(now) != len(paused) || now[0] != paused[0] {
		t.Errorf("paused sandboxes %v after the restarts; want %v adopted", now, paused)
	}
	if strings.Contains(d.log.String(), "scratch lost") {
		t.Errorf("a quota'd sandbox was removed as scratch lost:\n%s", d.log.String())
	}
}

// TestVolumeServerKilled: kill -9 of one volume's server gives its
// container I/O errors (unavoidable); the daemon notices within seconds,
// says so in its log and status, and the next mount serves the volume
// again, data intact. Nothing outside the volume changes.
func TestVolumeServerKilled(t *testing.T) {
	d := newDaemonWith(t, "", nil)
	const vol = "it-killed-server"
	mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=8M", "--opt", "backend=fuse", vol)
	t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", vol).Run() })
	w := writer(t, vol)
	time.Sleep(500 * time.Millisecond)
	var pid int
	eventually(t, "the volume's server in the status", 10*time.Second, func() error {
		st, err := d.c.Status(context.Background())
		if err != nil {
			return err
		}
		for _, v := range st.Volumes {
			if v.Name == vol && v.Server != nil && v.Server.Alive && !v.Server.InProcess {
				pid = v.Server.PID
				return nil
			}
		}
		return fmt.Errorf("volumes %+v", st.Volumes)
	})
	if pid == os.Getpid() || pid == d.cmd.Process.Pid {
		t.Fatalf("volume server pid %d is not a process of its own", pid)
	}
	// It runs with only the capabilities it needs (not CAP_SYS_ADMIN: the
	// daemon mounts and unmounts), and cannot gain more.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CapEff:\t000000000000001b", "CapBnd:\t000000000000001b", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("volume server: want %q in /proc/%d/status:\n%s", want, pid, status)
		}
	}
	// It sees nothing of the host: a mount namespace of its own, whose
	// root is empty but for its own descriptors (/proc/self/fd) and
	// /dev/null.
	confinedServer(t, pid, filepath.Join(d.root, "volumes", vol))
	mustRun(t, "kill", "-9", strconv.Itoa(pid))
	eventually(t, "the daemon noticed the dead server", 10*time.Second, func() error {
		st, err := d.c.Status(context.Background())
		if err != nil {
			return err
		}
		for _, v := range st.Volumes {
			if v.Name == vol && v.Server != nil && !v.Server.Alive {
				return nil
			}
		}
		return fmt.Errorf("volumes %+v", st.Volumes)
	})
	if !strings.Contains(d.log.String(), "volume server died") {
		t.Errorf("the daemon's log does not say the server died")
	}
	eventually(t, "the writer's writes fail", 10*time.Second, func() error {
		if out := mustRun(t, "docker", "logs", w); !strings.Contains(out, "FAIL") {
			return fmt.Errorf("no failure yet")
		}
		return nil
	})
	// A new container gets the volume served again, with what was written.
	if n := lines(t, vol); n == 0 {
		t.Errorf("the volume lost its data")
	}
	st, err := d.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Volumes {
		if v.Name == vol && (v.Server == nil || !v.Server.Alive || v.Server.PID == pid) {
			t.Errorf("after a new mount: server %+v; want a new one, alive", v.Server)
		}
	}
	_ = api.LabelRoot
}

// confinedServer checks that the process pid (a volume server) is in a
// mount namespace other than this one's and that its root holds nothing
// but /proc/self/fd and /dev/null: no host path names anything from where
// it stands.
func confinedServer(t *testing.T, pid int, data string) {
	t.Helper()
	// The only directory it holds open is its volume's: no handle on a
	// host directory survives its confinement.
	var dst syscall.Stat_t
	if err := syscall.Stat(data, &dst); err != nil {
		t.Fatal(err)
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		var st syscall.Stat_t
		if syscall.Stat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			continue
		}
		if st.Dev != dst.Dev || st.Ino != dst.Ino {
			target, _ := os.Readlink(fd)
			t.Errorf("volume server %d holds a directory other than its volume's open: %s -> %s", pid, fd, target)
		}
	}
	// It is in a Landlock domain (where the kernel has Landlock).
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); !strings.Contains(string(st), "NoNewPrivs:\t1") {
		t.Errorf("volume server %d: no_new_privs not set", pid)
	}
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if own, _ := os.Readlink("/proc/self/ns/mnt"); ns == "" || ns == own {
		t.Errorf("volume server %d: mount namespace %q, the host's is %q: want one of its own", pid, ns, own)
	}
	root := fmt.Sprintf("/proc/%d/root/", pid)
	var seen []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		seen = append(seen, rel)
		if rel == "proc/self/fd" {
			return filepath.SkipDir
		}
		return nil
	})
	if want := "dev dev/null proc proc/self proc/self/fd"; strings.Join(seen, " ") != want {
		t.Errorf("volume server %d sees %q at its root; want only %q", pid, seen, want)
	}
	for _, host := range []string{"etc/passwd", "var/lib", "proc/1", "dev/fuse", "tmp"} {
		if _, err := os.Lstat(filepath.Join(root, host)); err == nil {
			t.Errorf("volume server %d sees /%s", pid, host)
		}
	}
}

// TestVolumePassthrough: a quota'd volume made with passthrough=true reads
// through the kernel's FUSE passthrough on this kernel (6.18) and status
// says so; one made without says it is off; containers read and write
// both; a writer of a file a passthrough reader holds open is refused
// (ETXTBSY) rather than written past the quota, and never refused on the
// other.
func TestVolumePassthrough(t *testing.T) {
	d := newDaemonWith(t, "", nil)
	on, off := "it-passthrough-on", "it-passthrough-off"
	mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=16M", "--opt", "passthrough=true", "--opt", "backend=fuse", on)
	mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=16M", "--opt", "backend=fuse", off)
	t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", on, off).Run() })
	for _, vol := range []string{on, off} {
		out := mustRun(t, "docker", "run", "--rm", "--network", "none", "-v", vol+":/data", busybox,
			"sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=4 2>/dev/null && md5sum /data/f | cut -c1-8 && wc -c < /data/f")
		if f := strings.Fields(out); len(f) != 2 || f[0] != "b5cfa9d6" || f[1] != "4194304" {
			t.Errorf("volume %s: write 4 MiB then read it back: %q", vol, out)
		}
	}
	// A reader holds the file open; a writer beside it is refused on the
	// passthrough volume, and writes on the other.
	script := "exec 3</data/f; sleep 0.3; if echo x >> /data/f; then echo WROTE; else echo REFUSED; fi; head -c 4 <&3 | wc -c"
	for vol, want := range map[string]string{on: "REFUSED", off: "WROTE"} {
		out := mustRun(t, "docker", "run", "--rm", "--network", "none", "-v", vol+":/data", busybox, "sh", "-c", script+" 2>&1")
		if !strings.Contains(out, want) || !strings.HasSuffix(strings.TrimSpace(out), "4") {
			t.Errorf("volume %s: a writer beside a reader: %q, want %s and the reader's 4 bytes", vol, out, want)
		}
	}
	// Status, while each is mounted.
	holders := map[string]string{}
	for _, vol := range []string{on, off} {
		holders[vol] = strings.TrimSpace(mustRun(t, "docker", "run", "-d", "--network", "none", "-v", vol+":/data", busybox, "sleep", "60"))
		id := holders[vol]
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", id).Run() })
	}
	pids := map[string]int{}
	eventually(t, "passthrough in status", 10*time.Second, func() error {
		st, err := d.c.Status(context.Background())
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, v := range st.Volumes {
			if v.Server != nil {
				got[v.Name] = v.Server.Passthrough
				pids[v.Name] = v.Server.PID
			}
		}
		if got[on] != "on" || !strings.HasPrefix(got[off], "off: ") {
			return fmt.Errorf("passthrough in status: %q", got)
		}
		return nil
	})
	// Both confined alike; a passthrough server keeps CAP_SYS_ADMIN, which
	// the kernel asks of whoever opens a backing file.
	for vol, caps := range map[string]string{on: "000000000020001b", off: "000000000000001b"} {
		confinedServer(t, pids[vol], filepath.Join(d.root, "volumes", vol))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[vol]))
		if !strings.Contains(string(status), "CapEff:\t"+caps) {
			t.Errorf("volume %s's server: want CapEff %s:\n%s", vol, caps, status)
		}
	}
	out, _, _ := d.cli("", "status")
	if !strings.Contains(out, "reads: passthrough on") || !strings.Contains(out, "reads: passthrough off: not asked for") {
		t.Errorf("ol-shim status does not say how volumes read:\n%s", out)
	}
}
