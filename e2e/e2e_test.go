//go:build e2e

// Package e2e installs ol-shim on two hosts, exactly as the README tells a
// user, and checks what a user would: volumes with quotas, status, run,
// restarts of ol-shim and of dockerd, and an uninstall that leaves nothing
// behind. The same test code drives both hosts:
//   - dind: Debian 12 with systemd as PID 1 and its own dockerd 20.10, in a
//     Docker-in-Docker container of the image hack/e2e-image.sh builds; it
//     shares this machine's kernel and cgroup v1 hierarchy;
//   - vm: Debian 13 in a QEMU VM (hack/vm-image.sh; E2E_VM_IMAGE names it):
//     its own kernel 6.12, cgroup v2, systemd 257, Docker 26 with the
//     systemd cgroup driver, what most users run.
//
// E2E_HOSTS chooses (default "dind,vm").
//
//	make e2e
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	hostImage = "ol-shim-e2e/bookworm:latest"
	busybox   = "ol-shim-test/busybox:latest"
	runtimeI  = "ol-shim-test/runtime:latest"
	e2eLabel  = "io.ol-shim.e2e"
)

// repo is the repository's root (the package is e2e/).
func repo(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// run runs a command on the test's host and returns its combined output.
func run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// host is a systemd host the test installs ol-shim on: the
// Docker-in-Docker container (id) or the VM (vm).
type host struct {
	t  *testing.T
	id string
	vm *vm
	// slow scales the test's waits: the VM runs on QEMU's software CPU.
	slow time.Duration
}

// sh runs a shell script inside the host and returns its combined output;
// the test fails if it fails.
func (h *host) sh(script string) string {
	h.t.Helper()
	out, err := h.try(script)
	if err != nil {
		h.t.Fatalf("in the host: %s: %v\n%s", script, err, out)
	}
	return out
}

// try runs a shell script inside the host; its error is the caller's to
// judge.
func (h *host) try(script string) (string, error) {
	if h.vm != nil {
		return h.vm.exec(script, 10*time.Minute)
	}
	return run("docker", "exec", h.id, "sh", "-c", script)
}

// background starts a shell script in the host and does not wait for it.
func (h *host) background(script string) {
	h.t.Helper()
	var out string
	var err error
	if h.vm != nil {
		out, err = h.vm.exec("setsid sh -c "+quote(script)+" </dev/null >/dev/null 2>&1 &", time.Minute)
	} else {
		out, err = run("docker", "exec", "-d", h.id, "sh", "-c", script)
	}
	if err != nil {
		h.t.Fatalf("start in the host: %s: %v\n%s", script, err, out)
	}
}

// quote quotes s for sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// eventually retries fn every half second until it succeeds or limit
// passes.
func (h *host) eventually(what string, limit time.Duration, fn func() error) {
	h.t.Helper()
	limit *= h.slow
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			logs, _ := h.try("journalctl --no-pager -n 60 -u ol-shim -u docker")
			h.t.Fatalf("%s: not within %v: %v\njournal:\n%s", what, limit, err, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// runFlags are the flags that let systemd and a dockerd run in a container
// here: --privileged where the host grants every capability, else the
// capabilities this host has (its bounding set lacks CAP_SYS_RESOURCE, and
// --privileged fails with "unable to apply caps").
func runFlags(t *testing.T, network string) []string {
	common := []string{"--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
		"--network", network, "-v", "/var/lib/docker", "--label", e2eLabel + "=1", "--stop-signal", "SIGRTMIN+3"}
	if out, err := run("docker", "run", "--rm", "--privileged", "--network", "none", busybox, "true"); err == nil {
		t.Log("host grants every capability: --privileged")
		return append([]string{"--privileged"}, common...)
	} else {
		t.Logf("--privileged refused here (%s): adding every capability but SYS_RESOURCE", strings.TrimSpace(out))
	}
	// Loop devices for the kernel scratch backend: the control device, and
	// leave to make the nodes of the devices it hands out (block major 7).
	return append([]string{"--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
		"--security-opt", "apparmor=unconfined", "--device", "/dev/fuse",
		"--device", "/dev/loop-control", "--device-cgroup-rule", "b 7:* rwm"}, common...)
}

// boot starts the host of that kind and waits for systemd and its dockerd.
func boot(t *testing.T, kind string) *host {
	t.Helper()
	if kind == "vm" {
		image := os.Getenv("E2E_VM_IMAGE")
		if image == "" {
			t.Fatal("E2E_VM_IMAGE: the VM image's directory, from hack/vm-image.sh (make e2e sets it)")
		}
		h := &host{t: t, vm: bootVM(t, image), slow: 4}
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := h.try("systemctl --no-pager --failed; journalctl --no-pager -n 150")
				t.Logf("VM journal:\n%s", logs)
			}
		})
		h.settle()
		return h
	}
	return bootDind(t, fmt.Sprintf("ol-shim-e2e-%d", os.Getpid()), "none", "--hostname", "ol-shim-e2e")
}

// bootDind starts a Docker-in-Docker systemd host named name on network
// (none, or container:NAME to share another's network namespace).
func bootDind(t *testing.T, name, network string, extra ...string) *host {
	t.Helper()
	args := append(append([]string{"run", "-d", "--name", name}, extra...), runFlags(t, network)...)
	out, err := run("docker", append(args, hostImage)...)
	if err != nil {
		t.Fatalf("start the systemd host (build its image with hack/e2e-image.sh): %v\n%s", err, out)
	}
	h := &host{t: t, id: strings.TrimSpace(out), slow: 1}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := h.try("systemctl --no-pager --failed; journalctl --no-pager -n 100")
			t.Logf("host journal:\n%s", logs)
		}
		// A clean shutdown first (systemd stops dockerd, which stops its
		// containers), then the container and its /var/lib/docker volume.
		run("docker", "kill", "--signal", "SIGRTMIN+3", h.id)
		done := make(chan struct{})
		go func() { run("docker", "wait", h.id); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Log("host did not shut down within 60s; removing it by force")
		}
		if out, err := run("docker", "rm", "-f", "-v", h.id); err != nil {
			t.Errorf("remove the host: %v\n%s", err, out)
		}
	})
	h.settle()
	return h
}

// settle waits for systemd and dockerd in the host.
func (h *host) settle() {
	t := h.t
	t.Helper()
	h.eventually("systemd up", 90*time.Second, func() error {
		out, err := h.try("systemctl is-system-running")
		switch s := strings.TrimSpace(out); s {
		case "running":
			return nil
		case "degraded":
			failed, _ := h.try("systemctl --no-pager --failed")
			t.Logf("systemd is degraded:\n%s", failed)
			return nil
		default:
			return fmt.Errorf("state %q (%v)", s, err)
		}
	})
	h.eventually("dockerd in the host", 60*time.Second, func() error {
		_, err := h.try("docker info")
		return err
	})
	info, _ := h.try("docker version --format 'Docker {{.Server.Version}} (API {{.Server.APIVersion}})'; docker info --format 'cgroup v{{.CgroupVersion}}, driver {{.CgroupDriver}}'; uname -r; systemctl --version | head -1")
	t.Logf("host: %s", strings.Join(strings.Fields(strings.ReplaceAll(info, "\n", "; ")), " "))
}

// pipe runs from | to and fails the test, with to's output, if either
// fails.
func (h *host) pipe(what string, from, to *exec.Cmd) {
	h.t.Helper()
	out, err := from.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	to.Stdin = out
	var log bytes.Buffer
	to.Stdout, to.Stderr = &log, &log
	if err := from.Start(); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
	if err := to.Run(); err != nil {
		h.t.Fatalf("%s: %v\n%s", what, err, log.String())
	}
	if err := from.Wait(); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
}

// load copies the test images into the host's dockerd (no registry).
func (h *host) load(images ...string) {
	h.t.Helper()
	if h.vm != nil {
		if out, err := run("docker", append([]string{"save", "-o", h.vm.share("images.tar")}, images...)...); err != nil {
			h.t.Fatalf("docker save: %v\n%s", err, out)
		}
		h.sh("docker load -i /mnt/share/images.tar")
		return
	}
	h.pipe("docker save | docker load in the host", exec.Command("docker", append([]string{"save"}, images...)...),
		exec.Command("docker", "exec", "-i", h.id, "docker", "load"))
}

// copyIn copies local files into /tmp/e2e of the host, by their base
// names.
func (h *host) copyIn(files ...string) {
	h.t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			h.t.Fatal(err)
		}
	}
	h.sh("mkdir -p /tmp/e2e")
	if h.vm != nil {
		for _, f := range files {
			if out, err := run("cp", f, h.vm.share(filepath.Base(f))); err != nil {
				h.t.Fatalf("copy %s into the VM's share: %v\n%s", f, err, out)
			}
			h.sh("cp /mnt/share/" + quote(filepath.Base(f)) + " /tmp/e2e/")
		}
		return
	}
	for _, f := range files {
		if out, err := run("docker", "cp", f, h.id+":/tmp/e2e/"+filepath.Base(f)); err != nil {
			h.t.Fatalf("docker cp %s: %v\n%s", f, err, out)
		}
	}
}

// packages are the two Debian packages the suite installs: an earlier
// version's, then this commit's as its upgrade (hack/e2e.sh builds both).
type packages struct{ old, new, oldVersion, newVersion string }

func debs(t *testing.T) packages {
	t.Helper()
	var p packages
	p.old, p.new = os.Getenv("E2E_DEB_OLD"), os.Getenv("E2E_DEB")
	if p.old == "" || p.new == "" {
		t.Fatal("E2E_DEB and E2E_DEB_OLD: this commit's package and an earlier version's (hack/e2e.sh builds them with hack/deb.sh)")
	}
	for _, f := range []*string{&p.old, &p.new} {
		out, err := run("dpkg-deb", "-f", *f, "Version")
		if err != nil {
			t.Fatalf("dpkg-deb -f %s Version: %v: %s", *f, err, out)
		}
		if f == &p.old {
			p.oldVersion = strings.TrimSpace(out)
		} else {
			p.newVersion = strings.TrimSpace(out)
		}
	}
	if out, err := run("dpkg", "--compare-versions", p.oldVersion, "lt", p.newVersion); err != nil {
		t.Fatalf("the earlier package's version %s is not below this commit's %s: %v %s", p.oldVersion, p.newVersion, err, out)
	}
	return p
}

// poolStats is what the test reads of `ol-shim status --json`.
type poolStats struct {
	Name  string `json:"name"`
	Stats struct {
		Idle     int `json:"idle"`
		InUse    int `json:"in_use"`
		Creates  int `json:"creates"`
		Creating int `json:"creating"`
		Pausing  int `json:"pausing"`
		Deferred int `json:"deferred"`
	} `json:"stats"`
}

func (h *host) pools() (map[string]poolStats, error) {
	out, err := h.try("ol-shim status --json")
	if err != nil {
		return nil, fmt.Errorf("ol-shim status --json: %v: %s", err, out)
	}
	var st struct {
		Pools []poolStats `json:"pools"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("ol-shim status --json: %v: %s", err, out)
	}
	m := map[string]poolStats{}
	for _, p := range st.Pools {
		m[p.Name] = p
	}
	return m, nil
}

// warm waits until each named pool holds at least n idle sandboxes whose
// containers are paused, and returns those containers' IDs.
func (h *host) warm(pool string, n int) []string {
	h.t.Helper()
	var ids []string
	h.eventually(fmt.Sprintf("pool %s warm with %d paused sandboxes", pool, n), 3*time.Minute, func() error {
		p, err := h.pools()
		if err != nil {
			return err
		}
		if got := p[pool].Stats.Idle; got < n {
			return fmt.Errorf("%d idle", got)
		}
		out, err := h.try("docker ps -q --no-trunc --filter label=io.ol-shim.pool=" + pool + " --filter status=paused")
		if err != nil {
			return err
		}
		if ids = strings.Fields(out); len(ids) < n {
			return fmt.Errorf("%d paused containers", len(ids))
		}
		return nil
	})
	return ids
}

// sample is the distinct lines of a list, for a log.
func sample(lines []string) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		if !seen[l] && len(out) < 5 {
			seen[l] = true
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " | ")
}

// hosts are the hosts to test on: E2E_HOSTS, default both.
func hosts() []string {
	if s := os.Getenv("E2E_HOSTS"); s != "" {
		return strings.Split(s, ",")
	}
	return []string{"dind", "vm"}
}

func TestInstalledService(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (Docker-in-Docker, QEMU)")
	}
	for _, kind := range hosts() {
		t.Run(kind, func(t *testing.T) { installedService(t, boot(t, kind)) })
	}
}

func installedService(t *testing.T, h *host) {
	pkgs := debs(t)
	h.load(busybox, runtimeI)
	h.copyIn(pkgs.old, pkgs.new, filepath.Join(repo(t), "examples", "config.toml"))
	const apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 "

	t.Logf("install the package (version %s), as the README says: apt install ./ol-shim_*.deb", pkgs.oldVersion)
	h.sh(apt + "install /tmp/e2e/" + filepath.Base(pkgs.old))
	// Enabled and started by the package itself.
	h.eventually("ol-shim status answers", 2*time.Minute, func() error {
		_, err := h.try("ol-shim status")
		return err
	})
	if out := h.sh("systemctl is-active ol-shim.socket ol-shim.service; systemctl is-enabled ol-shim.socket ol-shim.service"); strings.Count(out, "active") != 2 || strings.Count(out, "enabled") != 2 {
		t.Fatalf("units not enabled and active after install: %s", out)
	}
	if out := h.sh("ol-shim version"); !slices.Contains(strings.Fields(out), pkgs.oldVersion) {
		t.Errorf("ol-shim version after installing %s: %s", pkgs.oldVersion, out)
	}
	// Man pages and completion, from the package.
	if out, err := h.try("command -v man >/dev/null && MANWIDTH=80 man ol-shim-run 2>&1 | col -b | head -8 || zcat /usr/share/man/man1/ol-shim-run.1.gz | head -3"); err != nil ||
		!(strings.Contains(strings.Join(strings.Fields(out), " "), "ol-shim run [OPTIONS] IMAGE") || strings.HasPrefix(out, ".TH \"OL-SHIM-RUN\" 1")) { // man justifies lines: any run of blanks
		t.Errorf("man ol-shim-run: %v: %s", err, out)
	} else {
		t.Logf("man ol-shim-run:\n%s", out)
	}
	if out := h.sh("bash -c '. /usr/share/bash-completion/completions/ol-shim; COMP_WORDS=(ol-shim pool cr); COMP_CWORD=2; _ol_shim; echo ${COMPREPLY[*]}'"); strings.TrimSpace(out) != "create" {
		t.Errorf("bash completion of 'ol-shim pool cr': %q", out)
	}
	// The package's config names no pools (their images are the
	// administrator's); the suite's are the example config's, which an
	// administrator would write into the conffile and reload.
	h.sh("cp /tmp/e2e/config.toml /etc/ol-shim/config.toml && systemctl reload ol-shim")
	h.eventually("the example config's pools", time.Minute, func() error {
		p, err := h.pools()
		if err != nil {
			return err
		}
		if _, ok := p["hello"]; !ok {
			return fmt.Errorf("pools %v", p)
		}
		return nil
	})
	if out := h.sh("stat -c '%U:%G %a' /run/ol-shim/ol-shim.sock /run/ol-shim/plugin.sock"); strings.Count(out, "root:docker 660") != 2 {
		t.Errorf("sockets are not root:docker 0660: %s", out)
	}

	// What auto picked here (said by status; the README quotes it per host).
	if out := h.sh("ol-shim status"); !strings.Contains(out, "scratch volumes: ") {
		t.Errorf("status does not say the scratch backend:\n%s", out)
	} else {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "scratch volumes: ") {
				t.Log(l)
			}
		}
	}

	t.Log("a quota'd volume: a write past 8M fails with ENOSPC, the data below it stays")
	h.sh("docker volume create -d ol-shim --opt size=8M --opt backend=fuse e2evol") // FUSE: its server is checked below
	out, err := h.try("docker run --rm --network none -v e2evol:/data " + busybox + " dd if=/dev/zero of=/data/fill bs=1M count=16")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("a 16M write into an 8M volume: want ENOSPC, got %v: %s", err, out)
	}
	h.sh("docker run --rm --network none -v e2evol:/data " + busybox + " sh -c 'rm /data/fill && echo kept > /data/marker'")
	// While a container holds it, its server sees nothing of the host: its
	// root holds only dev/ and proc/ (its /dev/null and /proc/self/fd), and
	// it has four capabilities.
	h.sh("docker run -d --name e2e-holder --network none -v e2evol:/data " + busybox + " sleep 600")
	out = h.sh(`pid=$(pgrep -f '[v]olume-server --name e2evol ') && echo root: $(ls -A /proc/$pid/root/) && grep -E '^CapEff' /proc/$pid/status`)
	if !strings.Contains(out, "root: dev proc") || !strings.Contains(out, "CapEff:\t000000000000001b") {
		t.Errorf("the volume server is not confined (want its root to hold dev and proc only, and CapEff 1b):\n%s", out)
	}
	h.sh("docker rm -f e2e-holder")
	var st struct {
		Size      int64 `json:"size"`
		BytesUsed int64 `json:"bytes_used"`
	}
	if out := h.sh("docker volume inspect -f '{{json .Status}}' e2evol"); json.Unmarshal([]byte(out), &st) != nil ||
		st.Size != 8<<20 || st.BytesUsed <= 0 || st.BytesUsed > 1<<20 {
		t.Errorf("docker volume inspect: status %s, want size 8388608 and the few KiB the marker takes", out)
	}

	t.Log("a volume of the default backend grows while no container has it; its new limit is exact")
	h.sh("docker volume create -d ol-shim --opt size=8M e2egrow")
	fill := "docker run --rm --network none -v e2egrow:/data " + busybox + " sh -c 'dd if=/dev/zero of=/data/f bs=4096 2>/dev/null; sync; dd if=/dev/zero of=/data/g bs=4096 2>/dev/null; sync; rm -f /data/g'"
	h.sh("docker run --rm --network none -v e2egrow:/data " + busybox + " sh -c 'echo kept > /data/kept'")
	h.sh(fill)
	if out, err := h.try("ol-shim volume grow e2egrow --size 24M"); err != nil || !strings.Contains(out, "25165824") {
		t.Errorf("ol-shim volume grow: %v: %s", err, out)
	}
	h.sh(fill)
	if out := h.sh("docker volume inspect -f '{{json .Status}}' e2egrow"); json.Unmarshal([]byte(out), &st) != nil ||
		st.Size != 24<<20 || st.BytesUsed < 23<<20 || st.BytesUsed > 24<<20 {
		t.Errorf("after the grow and a fill: status %s, want size 25165824 and nearly all of it used", out)
	}
	if out := h.sh("docker run --rm --network none -v e2egrow:/data " + busybox + " cat /data/kept"); strings.TrimSpace(out) != "kept" {
		t.Errorf("data after the grow: %q", out)
	}
	h.sh("docker volume rm e2egrow")

	t.Log("status and run")
	if out := h.sh("ol-shim status"); !strings.Contains(out, "hello") || !strings.Contains(out, "shell") {
		t.Errorf("status does not list the example pools:\n%s", out)
	}
	out, err = h.try("ol-shim run " + busybox + " sh -c 'echo hi from a sandbox; exit 3'")
	if exitCode(err) != 3 || !strings.Contains(out, "hi from a sandbox") {
		t.Fatalf("ol-shim run: want exit 3 and its output, got %v: %s", err, out)
	}
	// Output streams: the first line reaches the caller seconds before the
	// second is written (each line stamped with the host's uptime as it
	// arrives).
	out = h.sh("ol-shim run " + busybox + " sh -c 'echo a; sleep 3; echo b' | while read l; do echo \"$(cut -d' ' -f1 /proc/uptime) $l\"; done")
	var ta, tb float64
	var la, lb string
	if n, _ := fmt.Sscan(out, &ta, &la, &tb, &lb); n != 4 || la != "a" || lb != "b" || tb-ta < 2 {
		t.Errorf("ol-shim run does not stream: lines as they arrived: %q", out)
	}
	// As Docker's CLI plugin, which make install linked, with stdin.
	out, err = h.try("echo through docker ol | docker ol run -i " + busybox + " sh -c 'cat; exit 5'")
	if exitCode(err) != 5 || !strings.Contains(out, "through docker ol") {
		t.Fatalf("docker ol run: want exit 5 and stdin echoed, got %v: %s", err, out)
	}
	if out := h.sh("ol-shim run --pool shell sh -c 'echo $PPID'"); strings.TrimSpace(out) != "1" {
		t.Errorf("a run's command should be the child of the sandbox's init (PID 1), got: %q", out)
	}

	t.Log("pause and resume through containerd's task API; dockerd's view (inspect, ps) true at every step")
	if out := h.sh("ol-shim status"); !strings.Contains(out, "pause and resume: containerd task API (") {
		t.Errorf("status does not say pauses go through containerd:\n%s", out)
	} else {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "pause and resume: ") {
				t.Log(l)
			}
		}
	}
	const view = `docker inspect -f '{{.State.Paused}} {{.State.Running}}' $(docker ps -q --filter label=io.ol-shim.pool=shell) | sort | uniq -c | tr -s ' ' | tr '\n' ';';` +
		` echo; docker ps --filter label=io.ol-shim.pool=shell --format '{{.Status}}' | grep -c Paused || true`
	idleView := func(when string) {
		// Nothing of the pool on its way in or out (a refill, a held
		// destroy), so that every container listed is an idle one.
		h.eventually("pool shell settled", 2*time.Minute, func() error {
			p, err := h.pools()
			if err != nil {
				return err
			}
			st := p["shell"].Stats
			if st.Creating+st.Pausing+st.Deferred+st.InUse > 0 || st.Idle == 0 {
				return fmt.Errorf("%+v", st)
			}
			// A destroy under way (a used sandbox's) leaves its
			// container listed a moment longer than the pool counts it.
			if n := len(strings.Fields(h.sh("docker ps -aq --filter label=io.ol-shim.pool=shell"))); n != st.Idle {
				return fmt.Errorf("%d containers, %d idle", n, st.Idle)
			}
			// An idle sandbox given back a moment ago stays unpaused
			// for the pool's pause_grace (hot): dockerd's view is
			// compared once every one is paused in the pool's.
			out := strings.Fields(h.sh(view))
			// "N true true;" and the count of "(Paused)" in docker ps: all N.
			if len(out) != 4 || out[1] != "true" || out[2] != "true;" || out[3] != out[0] {
				return fmt.Errorf("%s: dockerd's view of pool shell's idle sandboxes (count paused running; then ps's Paused count): %q; want all paused and running", when, out)
			}
			return nil
		})
	}
	idleView("before a run")
	h.background("ol-shim run --pool shell --reuse sleep 4 >/dev/null 2>&1; touch /tmp/e2e-viewrun-done")
	h.eventually("the run's sandbox is resumed in dockerd's view", 30*time.Second, func() error {
		if out := h.sh(view); !strings.Contains(out, "false true") {
			return fmt.Errorf("view %q", out)
		}
		return nil
	})
	h.eventually("the run ends", time.Minute, func() error {
		_, err := h.try("test -e /tmp/e2e-viewrun-done")
		return err
	})
	idleView("after the run (paused again)")

	t.Log("systemctl restart ol-shim and kill -9 of it, with three containers writing to quota'd volumes: not one write fails")
	for i := range 3 {
		h.sh(fmt.Sprintf("docker volume create -d ol-shim --opt size=8M e2ew%d", i))
		h.sh(fmt.Sprintf("docker run -d --name e2ew%d --network none -v e2ew%d:/data %s sh -c 'i=0; while :; do echo $i >> /data/log || echo FAIL $i; i=$((i+1)); usleep 50000; done'", i, i, busybox))
	}
	before := h.warm("shell", 1)
	h.sh("systemctl restart ol-shim")
	h.eventually("ol-shim status answers after restart", 2*time.Minute, func() error {
		_, err := h.try("ol-shim status")
		return err
	})
	h.sh("systemctl kill -s KILL ol-shim.service --kill-whom=main")
	h.eventually("systemd restarted ol-shim after kill -9", 2*time.Minute, func() error {
		_, err := h.try("ol-shim status")
		return err
	})
	time.Sleep(time.Second)
	for i := range 3 {
		logs := h.sh(fmt.Sprintf("docker logs e2ew%d 2>&1", i))
		n := h.sh(fmt.Sprintf("docker run --rm --network none -v e2ew%d:/data %s wc -l /data/log", i, busybox))
		if strings.Contains(logs, "FAIL") {
			t.Errorf("writer %d: writes failed through the restarts: %s", i, logs)
		}
		t.Logf("writer %d: %s lines, no failed write", i, strings.Fields(n)[0])
		h.sh(fmt.Sprintf("docker rm -f e2ew%d && docker volume rm e2ew%d", i, i))
	}
	// Adopted, not remade: every paused container of the pool after the
	// restarts was there before them. (Fewer may remain: a target that
	// grew with the earlier runs shrinks back 30 s after them, which on
	// the slow VM can fall in the restarts.)
	after := h.warm("shell", 1)
	for _, id := range after {
		if !slices.Contains(before, id) {
			t.Errorf("pool shell: paused containers %v before the restart, %v after: %s is new, not adopted", before, after, id)
		}
	}
	if p, err := h.pools(); err != nil || p["shell"].Stats.Creates != 0 {
		t.Errorf("pool shell made sandboxes after the restart (%+v, %v): it should have adopted its paused one", p["shell"], err)
	}
	if out := h.sh("docker run --rm --network none -v e2evol:/data " + busybox + " cat /data/marker"); strings.TrimSpace(out) != "kept" {
		t.Errorf("volume data after restart: %q", out)
	}

	t.Log("systemctl restart docker under load: the plugin is found again, ol-shim recovers by itself")
	pid := h.sh("systemctl show -p MainPID --value ol-shim")
	// Four clients run in a loop through the restart; each logs its
	// successes and the errors it saw.
	h.sh("rm -rf /tmp/load && mkdir /tmp/load")
	for w := range 4 {
		h.background(fmt.Sprintf(
			"while [ ! -e /tmp/load/stop ]; do if ol-shim run --pool shell --reuse true >/dev/null 2>>/tmp/load/err-%d; then echo ok >>/tmp/load/ok-%d; fi; done; touch /tmp/load/done-%d", w, w, w))
	}
	countOK := func() int { return strings.Count(h.sh("cat /tmp/load/ok-* 2>/dev/null || true"), "ok") }
	h.eventually("load running", time.Minute, func() error {
		if n := countOK(); n < 20 {
			return fmt.Errorf("%d runs", n)
		}
		return nil
	})
	h.sh("systemctl restart docker")
	h.eventually("dockerd back", time.Minute, func() error { _, err := h.try("docker info"); return err })
	atRestart := countOK()
	h.eventually("runs succeed again after the dockerd restart", 2*time.Minute, func() error {
		if n := countOK(); n < atRestart+20 {
			return fmt.Errorf("%d runs since dockerd came back", n-atRestart)
		}
		return nil
	})
	h.sh("touch /tmp/load/stop")
	h.eventually("load clients done", time.Minute, func() error {
		if n := strings.Count(h.sh("ls /tmp/load"), "done-"); n < 4 {
			return fmt.Errorf("%d of 4 done", n)
		}
		return nil
	})
	errs := strings.TrimSpace(h.sh("cat /tmp/load/err-* 2>/dev/null || true"))
	var failed []string
	for _, line := range strings.Split(errs, "\n") {
		if line == "" {
			continue
		}
		failed = append(failed, line)
		if l := strings.ToLower(line); strings.Contains(l, "panic") || !(strings.Contains(l, "docker") || strings.Contains(l, "sandbox")) {
			t.Errorf("a run failed during the dockerd restart with an unclear error: %s", line)
		}
	}
	t.Logf("load through the dockerd restart: %d runs succeeded, %d failed; errors seen: %s", countOK(), len(failed), sample(failed))
	if out := h.sh("docker volume ls --format '{{.Driver}} {{.Name}}'"); !strings.Contains(out, "ol-shim e2evol") {
		t.Errorf("after a dockerd restart, docker volume ls: %s", out)
	}
	if out := h.sh("docker run --rm --network none -v e2evol:/data " + busybox + " cat /data/marker"); strings.TrimSpace(out) != "kept" {
		t.Errorf("volume data after a dockerd restart: %q", out)
	}
	h.warm("hello", 2)
	h.warm("shell", 1)
	if out := h.sh("ol-shim run --pool shell echo back"); strings.TrimSpace(out) != "back" {
		t.Errorf("run after a dockerd restart: %q", out)
	}
	if now := h.sh("systemctl show -p MainPID --value ol-shim"); now != pid {
		t.Errorf("ol-shim restarted (pid %s, now %s): it should reconnect by itself", strings.TrimSpace(pid), strings.TrimSpace(now))
	}
	// Nothing leaked through the restart: every container ol-shim made is
	// held by a pool (the orphan sweep runs every 30s).
	h.eventually("every sandbox container held by a pool", 2*time.Minute, func() error {
		p, err := h.pools()
		if err != nil {
			return err
		}
		held := 0
		for _, ps := range p {
			held += ps.Stats.Idle + ps.Stats.InUse
		}
		n := len(strings.Fields(h.sh("docker ps -aq --filter label=io.ol-shim.managed")))
		if n != held {
			return fmt.Errorf("%d containers, the pools hold %d", n, held)
		}
		return nil
	})

	t.Logf("upgrade %s -> %s with pools warm (one made through the API) and a container writing to a quota'd volume", pkgs.oldVersion, pkgs.newVersion)
	h.sh("ol-shim pool create --min-idle 1 --memory 64M e2eapi " + busybox)
	minIdle := map[string]int{"hello": 2, "shell": 1, "e2eapi": 1}
	warmBefore := map[string][]string{}
	for pool, n := range minIdle {
		warmBefore[pool] = h.warm(pool, n)
	}
	h.eventually("every pool settled (nothing being created, paused, held or used)", 2*time.Minute, func() error {
		p, err := h.pools()
		if err != nil {
			return err
		}
		for name, ps := range p {
			if st := ps.Stats; st.Creating+st.Pausing+st.Deferred+st.InUse > 0 {
				return fmt.Errorf("pool %s: %+v", name, st)
			}
		}
		return nil
	})
	for pool, n := range minIdle {
		warmBefore[pool] = h.warm(pool, n)
	}
	h.sh("docker volume create -d ol-shim --opt size=8M e2eup")
	h.sh("docker run -d --name e2eup --network none -v e2eup:/data " + busybox + " sh -c 'i=0; while :; do echo $i >> /data/log || echo FAIL $i; i=$((i+1)); usleep 20000; done'")
	time.Sleep(time.Second)
	pid = h.sh("systemctl show -p MainPID --value ol-shim")
	out = h.sh(apt + "install /tmp/e2e/" + filepath.Base(pkgs.new) + " 2>&1")
	t.Logf("apt install of the upgrade:\n%s", out)
	if v := strings.TrimSpace(h.sh("dpkg-query -W -f '${Version} ${db:Status-Abbrev}' ol-shim")); v != pkgs.newVersion+" ii" {
		t.Errorf("after the upgrade, dpkg says %q; want %s installed", v, pkgs.newVersion)
	}
	h.eventually("ol-shim status answers after the upgrade", 2*time.Minute, func() error {
		_, err := h.try("ol-shim status")
		return err
	})
	if now := h.sh("systemctl show -p MainPID --value ol-shim"); now == pid {
		t.Errorf("the upgrade did not restart ol-shim (pid %s)", strings.TrimSpace(pid))
	}
	if out := h.sh("ol-shim version"); !slices.Contains(strings.Fields(out), pkgs.newVersion) {
		t.Errorf("ol-shim version after the upgrade: %s", out)
	}
	time.Sleep(time.Second)
	h.sh("docker rm -f e2eup")
	// Every line the writer wrote is there, in order: no write failed and
	// none was lost.
	lines := strings.Fields(h.sh("docker run --rm --network none -v e2eup:/data " + busybox + " awk 'NR - 1 != $1 { bad++ } END { print NR, bad + 0 }' /data/log"))
	failedWrites := strings.Count(h.sh("docker logs e2eup 2>&1 || true"), "FAIL")
	if len(lines) != 2 || lines[1] != "0" || failedWrites != 0 || lines[0] == "0" {
		t.Errorf("the volume written through the upgrade: lines and lines out of place %v, failed writes %d", lines, failedWrites)
		lines = []string{"?", "?"}
	}
	h.sh("docker volume rm e2eup")
	adopted, created := 0, 0
	for pool, n := range minIdle {
		after := h.warm(pool, n)
		for _, id := range after {
			if slices.Contains(warmBefore[pool], id) {
				adopted++
			} else {
				t.Errorf("pool %s: paused containers %v before the upgrade, %v after: %s is new, not adopted", pool, warmBefore[pool], after, id)
			}
		}
	}
	p, err := h.pools()
	if err != nil {
		t.Fatal(err)
	}
	for pool := range minIdle {
		created += p[pool].Stats.Creates
	}
	if created != 0 {
		t.Errorf("after the upgrade the pools created %d sandboxes (%+v); they should have adopted their paused ones", created, p)
	}
	t.Logf("upgrade: %d sandboxes adopted, %d created anew; the volume written through it: %s lines, %s out of place, %d writes failed", adopted, created, lines[0], lines[1], failedWrites)
	if out := h.sh("grep -c '^\\[pools' /etc/ol-shim/config.toml"); strings.TrimSpace(out) != "2" {
		t.Errorf("the upgrade did not keep the administrator's config (pool tables: %s)", out)
	}

	t.Log("through the docker exec fallback, a command that cannot start exits 126 or 127 with dockerd's reason on stderr")
	// The agent sockets of the pool's sandboxes are removed (here, at the
	// end: those sandboxes stay without agents), so its next run goes
	// through docker exec. A refill done in between has an agent: a run
	// that went through one (the journal says) is tried again.
	viaExec := false
	for try := 0; try < 3 && !viaExec; try++ {
		h.warm("shell", 1)
		count := func() int {
			n, _ := strconv.Atoi(strings.TrimSpace(h.sh("journalctl --no-pager -o cat -u ol-shim | grep -c 'running through docker exec' || true")))
			return n
		}
		before := count()
		h.sh("rm -f /var/lib/ol-shim/agents/*/agent.sock")
		for _, c := range []struct {
			args, reason string
			code         int
		}{
			{"-u no-such-user --reuse true", "no-such-user", 126},
			{"--reuse no-such-command", "no-such-command", 127},
		} {
			out := h.sh("ol-shim run --pool shell " + c.args + " >/tmp/exec-out 2>/tmp/exec-err; echo $?; wc -c </tmp/exec-out; cat /tmp/exec-err")
			var code, stdout int
			var stderr string
			if n, _ := fmt.Sscan(out, &code, &stdout); n == 2 {
				_, stderr, _ = strings.Cut(strings.TrimSpace(out), "\n")
				_, stderr, _ = strings.Cut(stderr, "\n")
			}
			if code != c.code || stdout != 0 || !strings.HasPrefix(stderr, "ol-shim: ") || !strings.Contains(stderr, c.reason) {
				t.Errorf("ol-shim run %s: exit %d, %d bytes on stdout, stderr %q; want %d, nothing on stdout, the reason on stderr", c.args, code, stdout, stderr, c.code)
			}
		}
		viaExec = count() > before
	}
	if !viaExec {
		t.Errorf("in 3 tries no run went through docker exec after the agent sockets were removed")
	}

	t.Log("ol-shim runtime install: docker run --runtime=ol-shim served from a pool, docker pause through ol-shim-runtime")
	h.sh("ol-shim runtime install")
	h.eventually("dockerd lists the ol-shim runtime", time.Minute, func() error {
		if out := h.sh("docker info -f '{{json .Runtimes}}'"); !strings.Contains(out, `"ol-shim"`) {
			return fmt.Errorf("runtimes: %s", out)
		}
		return nil
	})
	if out := h.sh("ol-shim runtime status"); !strings.Contains(out, "/usr/lib/ol-shim/ol-shim-runtime") {
		t.Errorf("ol-shim runtime status: %q", out)
	}
	out = h.sh("docker run --rm --network none --runtime ol-shim " + busybox + ` sh -c 'tr "\\000" " " </proc/1/cmdline; exit 3'; echo code=$?`)
	if !strings.Contains(out, "ol-shim") || !strings.Contains(out, "code=3") {
		t.Errorf("docker run --runtime ol-shim: %q; want the sandbox's init as PID 1 and exit 3", out)
	} else {
		t.Logf("served: %s", strings.TrimSpace(out))
	}
	h.sh("docker run -d --name e2e-rt --network none --runtime ol-shim -v /tmp:/t " + busybox + " sleep 600")
	for _, step := range []struct{ cmd, want string }{{"pause", "true"}, {"unpause", "false"}} {
		h.sh("docker " + step.cmd + " e2e-rt")
		if got := strings.TrimSpace(h.sh("docker inspect -f '{{.State.Paused}}' e2e-rt")); got != step.want {
			t.Errorf("after docker %s of a container of runtime ol-shim: State.Paused %s", step.cmd, got)
		}
	}
	h.sh("docker rm -f e2e-rt")
	h.sh("ol-shim runtime uninstall")

	t.Log("apt remove while a user's volume remains: refused, and ol-shim serves again")
	files := strings.Fields(h.sh(`dpkg -L ol-shim | while read -r f; do if [ -f "$f" ] || { [ -L "$f" ] && [ ! -d "$f" ]; }; then echo "$f"; fi; done`))
	if len(files) < 10 {
		t.Fatalf("dpkg -L ol-shim lists %d files: %v", len(files), files)
	}
	out, err = h.try(apt + "remove ol-shim 2>&1")
	if err == nil || !strings.Contains(out, "e2evol") {
		t.Errorf("apt remove with volume e2evol left: want a refusal naming it, got %v:\n%s", err, out)
	}
	if v := strings.TrimSpace(h.sh("dpkg-query -W -f '${db:Status-Abbrev}' ol-shim")); v != "ii" {
		t.Errorf("after the refused removal dpkg says %q, want ii", v)
	}
	h.eventually("ol-shim serves again after the refused removal", 2*time.Minute, func() error {
		_, err := h.try("ol-shim status")
		return err
	})
	if out := h.sh("docker run --rm --network none -v e2evol:/data " + busybox + " cat /data/marker"); strings.TrimSpace(out) != "kept" {
		t.Errorf("volume data after the refused removal: %q", out)
	}

	t.Log("apt purge leaves nothing behind")
	h.sh("docker volume rm e2evol")
	h.sh(apt + "purge ol-shim")
	checks := map[string]string{
		"package files": "ls -d " + strings.Join(files, " ") + " 2>/dev/null || true",
		"other files":   "ls -d /etc/ol-shim /var/lib/ol-shim /run/ol-shim/ol-shim.sock /run/ol-shim/plugin.sock /etc/docker/plugins/ol-shim.json /var/lib/dpkg/info/ol-shim.* 2>/dev/null || true",
		"unit links":    "find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name '*ol-shim*' 2>/dev/null || true",
		"units":         "systemctl list-units --all --no-legend 'ol-shim*'; systemctl list-unit-files --no-legend 'ol-shim*' || true",
		"package":       "dpkg-query -W -f '${db:Status-Abbrev}' ol-shim 2>/dev/null | grep -v '^un' || true",
		"containers":    "docker ps -aq --filter label=io.ol-shim.managed",
		"volumes":       "docker volume ls -q",
		"mounts":        "grep -E ' fuse(\\.[^ ]*)? |/var/lib/ol-shim' /proc/mounts || true",
		"loop devices":  "losetup -l -n -O NAME,BACK-FILE 2>/dev/null | grep ol-shim || true",
		"processes":     "pgrep -a -f '[o]l-shim' || true",
	}
	for what, script := range checks {
		if out := strings.TrimSpace(h.sh(script)); out != "" {
			t.Errorf("after apt purge, %s left: %s", what, out)
		} else {
			t.Logf("after apt purge: no %s left", what)
		}
	}
}
