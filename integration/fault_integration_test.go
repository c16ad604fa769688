//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Fault injection against the built binary and a real dockerd: what users
// trust ol-shim with must survive its own crash, its sandboxes dying, and a
// full disk.

// eventually polls cond until it returns nil or limit passes.
func eventually(t *testing.T, what string, limit time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settled waits until no pool is creating or pausing and every pool holds
// its min_idle, and returns the pools.
func (d *testDaemon) settled(t *testing.T) []api.PoolStatus {
	t.Helper()
	var pools []api.PoolStatus
	eventually(t, "pools settled", 2*time.Minute, func() (err error) {
		if pools, err = d.c.Pools(context.Background()); err != nil {
			return err
		}
		for _, p := range pools {
			if s := p.Stats; s.Creating > 0 || s.Pausing > 0 || s.Idle < s.MinIdle {
				return fmt.Errorf("pool %s: %+v", p.Name, s)
			}
		}
		return nil
	})
	return pools
}

// volumes lists the Docker volumes labelled with this daemon's root.
func (d *testDaemon) volumes(t *testing.T) []string {
	out, err := exec.Command("docker", "volume", "ls", "-q", "--filter", "label="+api.LabelRoot+"="+rootID(d.root)).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// TestFaultKill9UnderLoad: 32 clients acquire and release, acquire and
// destroy, and run, against two pools (8 and 4 sandboxes at most, so
// clients queue; one with FUSE-quota'd scratch) while a user's
// container keeps a quota'd volume mounted; ol-shim is killed with -9 in
// the middle and started again. Afterwards every container, scratch volume,
// scratch directory and FUSE mount labelled with or kept under its root is
// held by a pool (or is the user's volume): nothing leaked. The user's data
// is still there and served again.
func TestFaultKill9UnderLoad(t *testing.T) {
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 8
max_size = 8
memory = "32M"

[pools.q]
image = "ol-shim-test/busybox:latest"
min_idle = 2
max_size = 4
memory = "32M"
scratch_size = "8M"
`)
	ctx := context.Background()
	d.waitIdle("bb", 8)
	d.waitIdle("q", 2)

	// A user's volume, in use by a running container when ol-shim dies.
	user := "it-fault-user"
	mustRun(t, "docker", "volume", "create", "-d", itPluginName, "--opt", "size=8M", "--opt", "backend=fuse", user) // its data directory is looked at below
	cid := strings.TrimSpace(mustRun(t, "docker", "run", "-d", "--network", "none", "-v", user+":/data", busybox,
		"sh", "-c", "echo kept > /data/f && sleep 3600"))
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", cid).Run()
		if out, err := exec.Command("docker", "volume", "rm", user).CombinedOutput(); err != nil {
			t.Errorf("remove the user's volume: %v\n%s", err, out)
		}
	})
	eventually(t, "user container wrote its file", 30*time.Second, func() error {
		_, err := os.Stat(filepath.Join(d.root, "volumes", user, "f"))
		return err
	})

	// The load: 32 clients, three kinds of calls.
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var before []error // errors while the daemon was up: must be none
	var after []string // what clients saw once it was killed
	var killed atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch i % 3 {
				case 0:
					var l api.Lease
					if l, err = d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb", Timeout: "60s"}); err == nil {
						err = d.c.Release(ctx, l.ID)
					}
				case 1:
					var l api.Lease
					if l, err = d.c.Acquire(ctx, api.AcquireRequest{Pool: "q", Timeout: "60s"}); err == nil {
						err = d.c.Destroy(ctx, l.ID, "load")
					}
				case 2:
					_, err = d.c.Run(ctx, api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"true"}, Reuse: true}, Timeout: "60s"})
				}
				mu.Lock()
				switch {
				case err == nil:
					ok.Add(1)
				case killed.Load():
					failed.Add(1)
					after = append(after, err.Error())
				default:
					before = append(before, err)
				}
				mu.Unlock()
				if err != nil && killed.Load() {
					return
				}
			}
		})
	}
	time.Sleep(8 * time.Second)
	killed.Store(true)
	d.stop(syscall.SIGKILL)
	close(stop)
	wg.Wait()
	if len(before) > 0 {
		t.Errorf("%d calls failed before the kill, first: %v", len(before), before[0])
	}
	for _, msg := range after {
		if !strings.Contains(msg, "ol-shim daemon unreachable") && !strings.Contains(msg, "EOF") && !strings.Contains(msg, "connection reset") {
			t.Errorf("a client saw an unclear error when the daemon died: %s", msg)
		}
	}
	t.Logf("load: %d calls done by 32 clients before kill -9, %d cut off by it", ok.Load(), failed.Load())

	d.start()
	// Creates the killed process left in dockerd's hands may finish after
	// the new one reconciled: its orphan sweep (5s after start, then every
	// 30s) removes them.
	var held, quota int
	var containers, vols []string
	var dirs, images []os.DirEntry
	var mounts []*mountinfo.Info
	eventually(t, "everything labelled or kept under the root held by a pool", 70*time.Second, func() error {
		held, quota = 0, 0
		for _, p := range d.settled(t) {
			held += p.Stats.Idle + p.Stats.InUse
			if p.Name == "q" {
				quota += p.Stats.Idle + p.Stats.InUse
			}
		}
		containers, vols = d.containers(false), d.volumes(t)
		// A volume is a directory (plain, or FUSE's backing directory) or,
		// with the kernel backend, an image.
		dirs, _ = os.ReadDir(filepath.Join(d.root, "volumes"))
		images, _ = os.ReadDir(filepath.Join(d.root, "images"))
		var err error
		if mounts, err = mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(d.root, "mnt"))); err != nil {
			return err
		}
		// Mounted: each quota'd sandbox's scratch (its container exists)
		// and the user's volume (its container runs).
		if len(containers) != held || len(vols) != held || len(dirs)+len(images) != held+1 || len(mounts) != quota+1 {
			var names, mnts []string
			for _, e := range append(dirs, images...) {
				names = append(names, e.Name())
			}
			for _, m := range mounts {
				mnts = append(mnts, filepath.Base(m.Mountpoint))
			}
			all, _ := exec.Command("docker", "ps", "-a", "--format", "{{.ID}} {{.Status}} {{.Mounts}}", "--filter", "label="+api.LabelRoot+"="+rootID(d.root)).CombinedOutput()
			var logged []string
			for _, line := range strings.Split(d.log.String(), "\n") {
				for _, n := range names {
					if strings.HasPrefix(n, "q-") && strings.Contains(line, n) {
						logged = append(logged, line)
					}
				}
			}
			return fmt.Errorf("pools hold %d sandboxes (%d quota'd); %d containers, %d scratch volumes %v, %d volume directories and images %v (want one more, the user's), %d mounts %v (want %d); the labelled containers:\n%s\nthe daemon's log of the quota'd ones:\n%s",
				held, quota, len(containers), len(vols), vols, len(dirs)+len(images), names, len(mounts), mnts, quota+1, all, strings.Join(logged, "\n"))
		}
		return nil
	})
	t.Logf("after restart: pools hold %d sandboxes (%d quota'd); %d containers, %d scratch volumes, %d volume directories, %d images, %d mounts",
		held, quota, len(containers), len(vols), len(dirs), len(images), len(mounts))
	// The FUSE server died under the user's container: a new container of
	// the volume reads the data (the old one keeps its dead mount).
	if out := mustRun(t, "docker", "run", "--rm", "--network", "none", "-v", user+":/data", busybox, "cat", "/data/f"); strings.TrimSpace(out) != "kept" {
		t.Errorf("user's volume after kill -9 and restart: %q", out)
	}
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestFaultSandboxDies: a paused sandbox removed behind the pool's back is
// noticed at once (dockerd's events) and replaced, with no acquire needed;
// one killed while leased is reported to its holder on release, removed,
// and the next acquire succeeds.
func TestFaultSandboxDies(t *testing.T) {
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 2
memory = "32M"
`)
	ctx := context.Background()
	d.waitIdle("bb", 2)
	victim := d.containers(true)[0]
	mustRun(t, "docker", "rm", "-f", victim)
	eventually(t, "pool replaced its lost sandbox", time.Minute, func() error {
		p, err := d.c.Pool(ctx, "bb")
		if err != nil {
			return err
		}
		paused := d.containers(true)
		if p.Stats.Destroys["lost"] != 1 || p.Stats.Idle != 2 || len(paused) != 2 || strings.Contains(strings.Join(paused, " "), victim) {
			return fmt.Errorf("stats %+v, paused %v", p.Stats, paused)
		}
		return nil
	})
	if p, _ := d.c.Pool(ctx, "bb"); p.Stats.WarmHits+p.Stats.ColdMisses+p.Stats.HotHits != 0 {
		t.Errorf("an acquire happened: %+v", p.Stats)
	}

	l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "docker", "kill", l.ContainerID)
	// The client's release succeeds: the daemon destroys what died, and
	// its log says so.
	if err := d.c.Release(ctx, l.ID); err != nil {
		t.Errorf("release of a sandbox killed in use: %v; want success", err)
	}
	eventually(t, "dead sandbox removed", 30*time.Second, func() error {
		if exec.Command("docker", "inspect", l.ContainerID).Run() == nil {
			return errors.New("its container is still there")
		}
		return nil
	})
	l2, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"})
	if err != nil {
		t.Fatalf("acquire after a sandbox died in use: %v", err)
	}
	if err := d.c.Release(ctx, l2.ID); err != nil {
		t.Fatal(err)
	}
}

// TestFaultStateRootFull: the state root is a 24M tmpfs and a sandbox's
// scratch quota (64M) is more than it holds. The sandbox's writes get
// ENOSPC; ol-shim keeps serving, says so in status, and recovers once space
// is freed.
func TestFaultStateRootFull(t *testing.T) {
	// The FUSE backend: its volumes take the host's space as they fill. (A
	// kernel backend volume the host cannot cover is refused at create:
	// TestFaultStateRootTooSmallForKernelVolume.)
	d := newDaemonWith(t, `
[scratch]
backend = "fuse"

[pools.q]
image = "ol-shim-test/busybox:latest"
min_idle = 1
max_size = 1
memory = "32M"
scratch_size = "64M"
`, func(d *testDaemon) {
		if err := os.MkdirAll(d.root, 0o711); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "mount", "-t", "tmpfs", "-o", "size=24M,mode=0711", "ol-shim-it-full", d.root)
		t.Cleanup(func() {
			if out, err := exec.Command("umount", d.root).CombinedOutput(); err != nil {
				t.Errorf("umount the state root: %v\n%s", err, out)
				exec.Command("umount", "-l", d.root).Run()
			}
		})
	})
	ctx := context.Background()
	d.waitIdle("q", 1)
	_, stderr, code := d.cli("", "run", "--pool", "q", "--reuse", "dd", "if=/dev/zero", "of=/host/fill", "bs=1M", "count=40")
	if code == 0 || !strings.Contains(stderr, "No space left on device") {
		t.Fatalf("filling the state root: exit %d, stderr %q; want ENOSPC", code, stderr)
	}
	st, err := d.c.Status(ctx)
	if err != nil {
		t.Fatalf("status with the state root full: %v", err)
	}
	if st.StateRoot == nil || !strings.Contains(st.StateRoot.Warning, "full") {
		t.Errorf("status with the state root full: %+v", st.StateRoot)
	}
	table, _, _ := d.cli("", "status")
	if !strings.Contains(table, "WARNING: full") {
		t.Errorf("ol-shim status does not show the full state root:\n%s", table)
	}
	// Still serving: the warm sandbox (the pool's only one: max_size 1)
	// runs, and frees the space.
	if out, stderr, code := d.cli("", "run", "--pool", "q", "--reuse", "sh", "-c", "rm -f /host/fill && echo freed"); code != 0 || out != "freed\n" {
		t.Fatalf("run with the state root full: exit %d, %q %q", code, out, stderr)
	}
	eventually(t, "status says the state root has room again", 30*time.Second, func() error {
		if st, err := d.c.Status(ctx); err != nil || st.StateRoot == nil || st.StateRoot.Warning != "" {
			return fmt.Errorf("state root %+v, %v", st.StateRoot, err)
		}
		return nil
	})
	// And makes sandboxes again: the only one destroyed, a new one made.
	l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "q"})
	if err == nil {
		if err = d.c.Destroy(ctx, l.ID, "make room for a new one"); err == nil {
			l, err = d.c.Acquire(ctx, api.AcquireRequest{Pool: "q", Timeout: "60s"})
		}
	}
	if err != nil {
		t.Errorf("acquire after freeing space: %v", err)
	} else {
		d.c.Release(ctx, l.ID)
	}
}

// TestForkBombContained: a fork bomb in a sandbox of a pool that sets no
// limits stops at the default pids limit; the host keeps its PIDs and the
// daemon keeps serving.
func TestForkBombContained(t *testing.T) {
	d := newDaemonWith(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 1
`, nil)
	d.waitIdle("bb", 1)
	ctx := context.Background()
	l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	// The bomb runs in an attached docker exec, in the container's cgroup.
	bomb := exec.Command("docker", "exec", l.ContainerID, "sh", "-c", "b() { b | b & }; b; sleep 60")
	if err := bomb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		bomb.Process.Kill()
		bomb.Wait()
	}()
	var inside int
	eventually(t, "the bomb reached the sandbox's pids limit", 30*time.Second, func() error {
		n, err := pidsCurrent(l.ContainerID)
		if err != nil {
			return err
		}
		if inside = n; n < spec.DefaultPidsLimit*3/4 {
			return fmt.Errorf("%d processes in the sandbox", n)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the bomb keeps trying
	if n, err := pidsCurrent(l.ContainerID); err != nil || n > spec.DefaultPidsLimit {
		// A container gone says why: its state and its init's last words.
		st, _ := exec.Command("docker", "inspect", "-f", "{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}}", l.ContainerID).CombinedOutput()
		logs, _ := exec.Command("docker", "logs", "--tail", "5", l.ContainerID).CombinedOutput()
		t.Errorf("%d processes in the sandbox (%v); its limit is %d; container: %s%s", n, err, spec.DefaultPidsLimit, st, logs)
	}
	// The host can still start processes, and the daemon answers.
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("the host cannot start a process: %v", err)
	}
	if _, err := d.c.Status(ctx); err != nil {
		t.Errorf("status during the bomb: %v", err)
	}
	if err := d.c.Destroy(ctx, l.ID, "fork bomb"); err != nil {
		t.Errorf("destroy the bombed sandbox: %v", err)
	}
	t.Logf("fork bomb held at %d processes (pids limit %d)", inside, spec.DefaultPidsLimit)
}

// pidsCurrent reads how many processes a container's cgroup holds, from
// the host (an exec inside could not fork at the limit): cgroup v1's pids
// controller or cgroup v2's unified tree, cgroupfs or systemd driver.
func pidsCurrent(id string) (int, error) {
	for _, p := range []string{
		"/sys/fs/cgroup/pids/docker/" + id + "/pids.current",
		"/sys/fs/cgroup/pids/system.slice/docker-" + id + ".scope/pids.current",
		"/sys/fs/cgroup/system.slice/docker-" + id + ".scope/pids.current",
		"/sys/fs/cgroup/docker/" + id + "/pids.current",
	} {
		if b, err := os.ReadFile(p); err == nil {
			return strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	return 0, fmt.Errorf("no pids cgroup found for container %.12s", id)
}

// TestFaultStateRootTooSmallForKernelVolume: with the kernel backend, a
// sandbox whose scratch (64M) the state root (24M) cannot cover is not made:
// the create fails naming the cause, and nothing is left behind.
func TestFaultStateRootTooSmallForKernelVolume(t *testing.T) {
	d := newDaemonWith(t, `
[scratch]
backend = "kernel"

[pools.q]
image = "ol-shim-test/busybox:latest"
memory = "32M"
scratch_size = "64M"
`, func(d *testDaemon) {
		if err := os.MkdirAll(d.root, 0o711); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "mount", "-t", "tmpfs", "-o", "size=24M,mode=0711", "ol-shim-it-small", d.root)
		t.Cleanup(func() {
			if out, err := exec.Command("umount", d.root).CombinedOutput(); err != nil {
				t.Errorf("umount the state root: %v\n%s", err, out)
				exec.Command("umount", "-l", d.root).Run()
			}
		})
	})
	_, err := d.c.Acquire(context.Background(), api.AcquireRequest{Pool: "q", Timeout: "30s"})
	if err == nil || !strings.Contains(err.Error(), "bytes free") {
		t.Fatalf("acquire of a 64M kernel scratch on a 24M state root: %v, want the cause (bytes free)", err)
	}
	if imgs, _ := os.ReadDir(filepath.Join(d.root, "images")); len(imgs) != 0 {
		t.Errorf("images left: %v", imgs)
	}
}
