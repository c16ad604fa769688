//go:build integration

package scratch

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
)

const busyboxImage = "ol-shim-test/busybox:latest"

var olShim string // the built binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ol-shim-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	olShim = filepath.Join(dir, "ol-shim")
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/ol-shim", "../cmd/ol-shimd", "../cmd/ol-shim-init") // ol-shim hands serve on to ol-shimd beside it
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: build ol-shim: %v\n%s", err, out)
		os.Exit(1)
	}
	if out, err := exec.Command("docker", "image", "inspect", busyboxImage).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %s: %v\n%s\nrun `make integration`, which starts dockerd and builds the images\n", busyboxImage, err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.Remove(filepath.Join("/etc/docker/plugins", pluginName+".json"))
	os.RemoveAll(dir)
	os.Exit(code)
}

// plugin is an `ol-shim serve` process registered with dockerd as
// pluginName, so tests never touch an installed ol-shim. dockerd remembers
// a legacy plugin's address by name, so every test serves the same socket
// path (each from a state root of its own), one test at a time.
//
// Volume names in these tests are longer than one letter: the docker CLI
// reads "it-quota:/data" as a Windows drive path.
type plugin struct {
	t          *testing.T
	name       string
	root, sock string
	spec       string
	cmd        *exec.Cmd
	log        *os.File
	backend    string // --scratch-backend
}

const (
	pluginName   = "ol-shim-it"
	pluginSocket = "/run/ol-shim-it/plugin.sock"
)

// startPlugin starts the plugin with the FUSE backend as its default.
func startPlugin(t *testing.T) *plugin { t.Helper(); return startPluginBackend(t, BackendFUSE) }

func startPluginBackend(t *testing.T, backend string) *plugin {
	t.Helper()
	p := &plugin{t: t, name: pluginName, root: t.TempDir(), sock: pluginSocket, backend: backend}
	p.spec = filepath.Join("/etc/docker/plugins", p.name+".json")
	must(t, os.MkdirAll(filepath.Dir(p.spec), 0o755))
	spec, _ := json.Marshal(map[string]string{"Name": p.name, "Addr": "unix://" + p.sock})
	must(t, os.WriteFile(p.spec, spec, 0o644))
	t.Cleanup(func() {
		// Remove what the test left, then the plugin itself.
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=ol-shim-test="+p.name).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
		out, _ = exec.Command("docker", "volume", "ls", "-q", "--filter", "driver="+p.name).Output()
		for _, v := range strings.Fields(string(out)) {
			_ = exec.Command("docker", "volume", "rm", "-f", v).Run()
		}
		p.stop()
	})
	p.start()
	return p
}

func (p *plugin) start() {
	p.t.Helper()
	log, err := os.OpenFile(filepath.Join(p.root, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(p.t, err)
	p.log = log
	p.cmd = exec.Command(olShim, "serve", "--plugin-only", "--root", p.root, "--plugin-socket", p.sock, "--socket-group", "", "--log-level", "debug", "--scratch-backend", p.backend)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	must(p.t, p.cmd.Start())
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(p.sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("ol-shim serve did not make %s; log:\n%s", p.sock, p.logText())
		}
	}
}

func (p *plugin) logText() string {
	b, _ := os.ReadFile(filepath.Join(p.root, "serve.log"))
	return string(b)
}

func (p *plugin) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.t.Errorf("ol-shim serve exited with %v; log:\n%s", err, p.logText())
		}
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-done
		p.t.Errorf("ol-shim serve did not stop on SIGTERM")
	}
	p.cmd = nil
	p.log.Close()
}

// docker runs the docker CLI and returns its combined output.
func docker(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	return string(out), err
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(t, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run is `docker run --rm` of busybox with volume vol at /data.
func (p *plugin) run(vol, script string) (string, error) {
	return docker(p.t, "run", "--rm", "--network", "none", "--label", "ol-shim-test="+p.name, "-v", vol+":/data", busyboxImage, "sh", "-c", script)
}

func (p *plugin) status(vol string) map[string]any {
	p.t.Helper()
	out := mustDocker(p.t, "volume", "inspect", vol)
	var vs []struct{ Status map[string]any }
	must(p.t, json.Unmarshal([]byte(out), &vs))
	if len(vs) != 1 {
		p.t.Fatalf("inspect %s: %s", vol, out)
	}
	return vs[0].Status
}

// pattern writes n bytes of a known pattern to stdout.
const pattern = "yes 0123456789abcdef | head -c %d"

func TestPluginQuota(t *testing.T) {
	p := startPlugin(t)
	mustDocker(t, "volume", "create", "-d", p.name, "--opt", "size=8M", "it-quota")
	// dd, as any writer that retries a short write, gets ENOSPC at the limit.
	out, err := p.run("it-quota", fmt.Sprintf(pattern+" > /tmp/p && dd if=/tmp/p of=/data/f bs=1M", 16<<20))
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("writing 16 MiB into 8 MiB: %v\n%s\nserve log:\n%s", err, out, p.logText())
	}
	// The first 8 MiB are there, intact.
	out, err = p.run("it-quota", fmt.Sprintf("wc -c < /data/f; md5sum < /data/f; "+pattern+" | md5sum", 8<<20))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.TrimSpace(lines[0]) != fmt.Sprint(8<<20) || lines[1] != lines[2] {
		t.Errorf("size, checksum, expected checksum:\n%s", out)
	}
	st := p.status("it-quota")
	if st["bytes_used"] != float64(8<<20) || st["size"] != float64(8<<20) {
		t.Errorf("docker volume inspect status: %v", st)
	}
	// Deleting the file frees the quota.
	if out, err := p.run("it-quota", "rm /data/f && "+fmt.Sprintf(pattern+" > /tmp/p && cp /tmp/p /data/g", 6<<20)); err != nil {
		t.Errorf("write after rm: %v\n%s", err, out)
	}
	if st := p.status("it-quota"); st["bytes_used"] != float64(6<<20) {
		t.Errorf("after rm and a 6 MiB write: %v", st)
	}
	out, _ = docker(t, "run", "--rm", "--network", "none", "-v", "it-quota:/data", busyboxImage, "df", "-k", "/data")
	if !strings.Contains(out, "8192") {
		t.Errorf("df in the container does not show the 8 MiB quota:\n%s", out)
	}
}

func TestPluginSharedVolume(t *testing.T) {
	p := startPlugin(t)
	mustDocker(t, "volume", "create", "-d", p.name, "--opt", "size=16M", "it-shared")
	for _, c := range []string{"c1", "c2"} {
		mustDocker(t, "run", "-d", "--name", p.name+"-"+c, "--label", "ol-shim-test="+p.name, "--network", "none", "-v", "it-shared:/data", busyboxImage, "sleep", "3600")
	}
	c1, c2 := p.name+"-c1", p.name+"-c2"
	mustDocker(t, "exec", c1, "sh", "-c", "echo from-c1 > /data/a")
	mustDocker(t, "stop", "-t", "0", c1)
	// c1 stopped: still mounted for c2.
	if out := mustDocker(t, "exec", c2, "cat", "/data/a"); strings.TrimSpace(out) != "from-c1" {
		t.Errorf("c2 reads %q after c1 stopped", out)
	}
	// docker cp mounts the volume again with the same ID and unmounts it.
	src := filepath.Join(t.TempDir(), "copied")
	must(t, os.WriteFile(src, []byte("by docker cp"), 0o644))
	mustDocker(t, "cp", src, c2+":/data/copied")
	if out := mustDocker(t, "exec", c2, "sh", "-c", "cat /data/copied; echo more > /data/b && cat /data/b"); out != "by docker cpmore\n" {
		t.Errorf("after docker cp: %q", out)
	}
	if st := p.status("it-shared"); st["mounts"] != float64(1) {
		t.Errorf("mounts %v, want 1 (c2)", st["mounts"])
	}
	mustDocker(t, "rm", "-f", c1, c2)
	if st := p.status("it-shared"); st["mounts"] != float64(0) {
		t.Errorf("mounts %v after both containers went, want 0", st["mounts"])
	}
}

func TestPluginRestart(t *testing.T) {
	p := startPlugin(t)
	mustDocker(t, "volume", "create", "-d", p.name, "--opt", "size=8M", "--opt", "inodes=100", "it-kept")
	mustDocker(t, "volume", "create", "-d", p.name, "it-plainkept")
	for _, v := range []string{"it-kept", "it-plainkept"} {
		if out, err := p.run(v, "echo survives > /data/f"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	p.stop()
	p.start()
	out := mustDocker(t, "volume", "ls", "-q", "--filter", "driver="+p.name)
	if !strings.Contains(out, "it-kept") || !strings.Contains(out, "it-plainkept") {
		t.Errorf("after restart docker volume ls shows:\n%s", out)
	}
	for _, v := range []string{"it-kept", "it-plainkept"} {
		if out, err := p.run(v, "cat /data/f"); err != nil || strings.TrimSpace(out) != "survives" {
			t.Errorf("volume %s after restart: %q, %v", v, out, err)
		}
	}
	if st := p.status("it-kept"); st["size"] != float64(8<<20) || st["inodes"] != float64(100) {
		t.Errorf("options after restart: %v", st)
	}
}

func TestPluginRefusals(t *testing.T) {
	p := startPlugin(t)
	mustDocker(t, "volume", "create", "-d", p.name, "it-busy")
	c := p.name + "-busy"
	mustDocker(t, "run", "-d", "--name", c, "--label", "ol-shim-test="+p.name, "--network", "none", "-v", "it-busy:/data", busyboxImage, "sleep", "3600")
	if out, err := docker(t, "volume", "rm", "it-busy"); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("rm of a volume in use: %v\n%s", err, out)
	}
	mustDocker(t, "rm", "-f", c)
	mustDocker(t, "volume", "rm", "it-busy")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"../x"}, "../x"},
		{[]string{strings.Repeat("x", 300)}, "volume name"},
		{[]string{"--opt", "size=-1", "it-neg"}, `size="-1"`},
		{[]string{"--opt", "size=lots", "it-lots"}, `size="lots"`},
		{[]string{"--opt", "colour=red", "it-red"}, `option "colour": invalid: unknown (valid options: backend`},
	} {
		args := append([]string{"volume", "create", "-d", p.name}, tc.args...)
		out, err := docker(t, args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("docker %s: %v\n%s\nwant an error with %q", strings.Join(args, " "), err, out, tc.want)
		}
	}
	// The empty name: the docker CLI makes one up, so ask the API.
	out, _ := docker(t, "volume", "ls", "-q", "--filter", "driver="+p.name)
	if strings.TrimSpace(out) != "" {
		t.Errorf("refused creates left volumes: %s", out)
	}
}

// TestManagedPlugin installs ol-shim as a managed plugin (docker plugin
// create from the rootfs hack/plugin.sh builds, no registry) and uses it.
func TestManagedPlugin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugin")
	if out, err := exec.Command("../hack/plugin.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("hack/plugin.sh: %v\n%s", err, out)
	}
	const name = "ol-shim-managed-it:latest"
	_, _ = docker(t, "plugin", "rm", "-f", name)
	mustDocker(t, "plugin", "create", name, dir)
	t.Cleanup(func() {
		_, _ = docker(t, "volume", "rm", "-f", "it-managed")
		_, _ = docker(t, "plugin", "disable", "-f", name)
		_, _ = docker(t, "plugin", "rm", "-f", name)
	})
	mustDocker(t, "plugin", "enable", name)
	mustDocker(t, "volume", "create", "-d", name, "--opt", "size=4M", "it-managed")
	out, err := docker(t, "run", "--rm", "--network", "none", "-v", "it-managed:/data", busyboxImage, "sh", "-c",
		"echo kept > /data/small && dd if=/dev/zero of=/data/big bs=1M count=8 2>&1; cat /data/small; df -k /data | tail -1")
	if err != nil || !strings.Contains(out, "No space left on device") || !strings.Contains(out, "kept") || !strings.Contains(out, "4096") {
		t.Errorf("quota through the managed plugin: %v\n%s", err, out)
	}
	var vs []struct{ Status map[string]any }
	if err := json.Unmarshal([]byte(mustDocker(t, "volume", "inspect", "it-managed")), &vs); err != nil || len(vs) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	if used, _ := vs[0].Status["bytes_used"].(float64); used < 3<<20 {
		t.Errorf("status through the managed plugin: %v", vs[0].Status)
	}
}

// TestPluginContainment: what a container plants in its volume stays in it.
// Symlinks pointing out of the volume resolve inside the container that
// follows them, never on the host; removing the volume removes the links,
// not what they point at; the state root's directories are not writable by
// other users; FUSE mounts are nosuid,nodev.
func TestPluginContainment(t *testing.T) {
	p := startPlugin(t)
	outside := t.TempDir()
	canary := filepath.Join(outside, "canary")
	hostData := "host data" + strings.Repeat(".", 1<<20) // 1 MiB: a quota that followed the links would count it
	must(t, os.WriteFile(canary, []byte(hostData), 0o644))
	plant := fmt.Sprintf("ln -s %s /data/out && ln -s %s /data/file && ln -s / /data/root && ln -s ../../../../../../.. /data/up && mkdir /data/d && ln -s %s /data/d/deep",
		outside, canary, outside)
	for _, v := range []struct{ name, opts string }{{"it-contain-quota", "size=8M"}, {"it-contain-plain", ""}} {
		args := []string{"volume", "create", "-d", p.name, v.name}
		if v.opts != "" {
			args = append(args, "--opt", v.opts)
		}
		mustDocker(t, args...)
		if out, err := p.run(v.name, plant); err != nil {
			t.Fatalf("%s: plant links: %v\n%s", v.name, err, out)
		}
		// Followed in a container, the links reach the container's files.
		if out, err := p.run(v.name, "cat /data/out/canary /data/file /data/d/deep"); err == nil || strings.Contains(out, "host data") {
			t.Errorf("%s: a container read the host's file through a planted link: %v\n%s", v.name, err, out)
		}
		if out, err := p.run(v.name, "readlink /data/file; cat /data/root/etc/passwd | head -1"); err != nil || !strings.Contains(out, canary) || !strings.HasPrefix(strings.Split(out, "\n")[1], "root:x:0:0") {
			t.Errorf("%s: links read back: %v\n%s", v.name, err, out)
		}
	}
	// The state root: nothing writable by others, mounts nosuid and nodev.
	mustDocker(t, "run", "-d", "--label", "ol-shim-test="+p.name, "--network", "none", "-v", "it-contain-quota:/data", busyboxImage, "sleep", "3600")
	// The quota counts the links, not their targets.
	if used, ok := p.status("it-contain-quota")["bytes_used"].(float64); !ok || used >= 1<<20 {
		t.Errorf("usage of the volume with links: %v, want the links only, not the 1 MiB they point at", p.status("it-contain-quota"))
	}
	must(t, filepath.WalkDir(p.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == filepath.Join(p.root, "mnt", "it-contain-quota") {
			return filepath.SkipDir // the mount: its contents are the container's
		}
		if strings.HasPrefix(path, filepath.Join(p.root, "volumes")+"/") && strings.Count(strings.TrimPrefix(path, p.root), "/") > 2 {
			return filepath.SkipDir // inside a volume: the container's files
		}
		fi, err := d.Info()
		if err == nil && d.IsDir() && fi.Mode().Perm()&0o002 != 0 {
			t.Errorf("%s is world-writable (%v)", path, fi.Mode().Perm())
		}
		return nil
	}))
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(filepath.Join(p.root, "mnt", "it-contain-quota")))
	must(t, err)
	if len(infos) != 1 || !strings.Contains(","+infos[0].Options+",", ",nosuid,") || !strings.Contains(","+infos[0].Options+",", ",nodev,") {
		t.Errorf("FUSE mount of a volume in use: %+v, want one, nosuid and nodev", infos)
	}
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=ol-shim-test="+p.name).Output()
	mustDocker(t, append([]string{"rm", "-f"}, strings.Fields(string(out))...)...)

	// Removing the volumes removes the links only.
	mustDocker(t, "volume", "rm", "it-contain-quota", "it-contain-plain")
	if b, err := os.ReadFile(canary); err != nil || string(b) != hostData {
		t.Errorf("after removing the volumes, the links' target: %q, %v", b, err)
	}
}

// TestPluginKernelBackend: a volume of the kernel backend through dockerd:
// the size is enforced at the write, inspect shows the backend and usage,
// a kill -9 of ol-shim while containers write costs them not one write,
// and removal leaves no image, mount or loop device.
func TestPluginKernelBackend(t *testing.T) {
	p := startPluginBackend(t, BackendKernel)
	mustDocker(t, "volume", "create", "-d", p.name, "--opt", "size=8M", "it-kernel")
	out, err := p.run("it-kernel", fmt.Sprintf(pattern+" > /tmp/p && dd if=/tmp/p of=/data/f bs=1M", 16<<20))
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("writing 16 MiB into 8 MiB: %v\n%s\nserve log:\n%s", err, out, p.logText())
	}
	st := p.status("it-kernel")
	if st["backend"] != BackendKernel || st["bytes_used"] != float64(8<<20) || st["size"] != float64(8<<20) {
		t.Errorf("docker volume inspect status of a full 8M kernel volume: %v", st)
	}
	if out, err := p.run("it-kernel", "rm /data/f && df -k /data | tail -1"); err != nil || !strings.Contains(out, " 8192 ") {
		t.Errorf("df in the container: %v\n%s", err, out)
	}

	// Writers through a kill -9 and a restart of ol-shim.
	var ids []string
	for i := range 3 {
		vol := fmt.Sprintf("it-kw%d", i)
		mustDocker(t, "volume", "create", "-d", p.name, "--opt", "size=8M", vol)
		id := strings.TrimSpace(mustDocker(t, "run", "-d", "--network", "none", "--label", "ol-shim-test="+p.name, "-v", vol+":/data", busyboxImage,
			"sh", "-c", "i=0; while :; do echo $i >> /data/log || echo FAIL $i; i=$((i+1)); usleep 20000; done"))
		ids = append(ids, id)
	}
	time.Sleep(time.Second)
	must(t, p.cmd.Process.Kill())
	p.cmd.Wait()
	p.cmd = nil
	p.log.Close()
	time.Sleep(2 * time.Second) // writing with no ol-shim at all
	p.start()
	time.Sleep(time.Second)
	for i, id := range ids {
		logs, _ := docker(t, "logs", id)
		mustDocker(t, "rm", "-f", id)
		n, _ := p.run(fmt.Sprintf("it-kw%d", i), "wc -l < /data/log")
		if strings.Contains(logs, "FAIL") {
			t.Errorf("writer %d: writes failed through kill -9 of ol-shim:\n%s", i, logs)
		}
		t.Logf("writer %d: %s lines, no failed write", i, strings.TrimSpace(n))
	}

	// Removal leaves nothing.
	image := filepath.Join(p.root, "images", "it-kernel.img")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the image is not where expected: %v", err)
	}
	mustDocker(t, "volume", "rm", "it-kernel", "it-kw0", "it-kw1", "it-kw2")
	ents, _ := os.ReadDir(filepath.Join(p.root, "images"))
	mnts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(p.root))
	loops, _ := exec.Command("losetup", "-j", image).Output()
	if len(ents) != 0 || len(mnts) != 0 || len(loops) != 0 {
		t.Errorf("after volume rm: images %v, mounts %d, loop devices %q", ents, len(mnts), loops)
	}
}
