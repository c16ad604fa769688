//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// vm is the second host: a Debian 13 QEMU VM (cgroup v2, systemd 257,
// Docker 26) of the image hack/vm-image.sh builds, whose directory the
// variable E2E_VM_IMAGE names. Each test boots a copy-on-write overlay of
// it, so the cached image never changes. Commands reach it through
// hack/vmexec on a virtio-serial port; files through a 9p share.
type vm struct {
	dir    string // the run's directory: overlay, share/, sockets, logs
	qemu   *exec.Cmd
	exited chan struct{}

	mu   sync.Mutex
	conn net.Conn
	in   *bufio.Reader
	seq  int
}

// vmExit is a command in the VM that exited with a status other than 0.
type vmExit struct{ code int }

func (e *vmExit) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode is the exit status in err, from either host; -1 if none.
func exitCode(err error) int {
	var ee *exec.ExitError
	var ve *vmExit
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	case errors.As(err, &ve):
		return ve.code
	}
	return -1
}

// accel is KVM where the CPU can run a stock kernel under it, else QEMU's
// software CPU (slow, but real: this machine's /dev/kvm cannot).
func accel() []string {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		if strings.Contains(string(cpuinfo), " vmx") || strings.Contains(string(cpuinfo), " svm") {
			return []string{"-enable-kvm", "-cpu", "host"}
		}
	}
	// Without SVM: qemu64 offers it, so the guest would load kvm_amd and
	// set up virtualisation it never uses on an emulated SVM, which only
	// adds to what can go wrong (the guest kernel panicked once in CI).
	return []string{"-accel", "tcg,thread=multi,tb-size=512", "-cpu", "qemu64,-svm"}
}

// bootVM starts the VM and waits for its exec agent.
func bootVM(t *testing.T, image string) *vm {
	t.Helper()
	for _, f := range []string{"disk.img", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(image, f)); err != nil {
			t.Fatalf("the VM image (E2E_VM_IMAGE=%s, from hack/vm-image.sh): %v", image, err)
		}
	}
	dir := t.TempDir()
	v := &vm{dir: dir, exited: make(chan struct{})}
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(share, "vmexec"), "./hack/vmexec")
	build.Dir = repo(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hack/vmexec: %v\n%s", err, out)
	}
	overlay := filepath.Join(dir, "disk.qcow2")
	if out, err := run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", filepath.Join(image, "disk.img"), overlay); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "exec.sock")
	args := append(accel(), "-smp", "2", "-m", "4096", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-kernel", filepath.Join(image, "vmlinuz"), "-initrd", filepath.Join(image, "initrd.img"),
		"-append", "root=/dev/vda rw console=ttyS0 panic=1 quiet mitigations=off systemd.unified_cgroup_hierarchy=1",
		"-drive", "file="+overlay+",format=qcow2,if=virtio,cache=unsafe",
		"-virtfs", "local,path="+share+",mount_tag=share,security_model=none",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=exec,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=exec,name=ol.exec")
	v.qemu = exec.Command("qemu-system-x86_64", args...)
	logf, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	v.qemu.Stdout, v.qemu.Stderr = logf, logf
	if err := v.qemu.Start(); err != nil {
		t.Fatalf("start qemu-system-x86_64 (hack/vm-image.sh installs it): %v", err)
	}
	go func() { v.qemu.Wait(); logf.Close(); close(v.exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			reportConsole(t, filepath.Join(dir, "console.log"))
		}
		v.qemu.Process.Kill()
		<-v.exited
	})
	// Boot to the agent: under the software CPU, about a minute.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		select {
		case <-v.exited:
			q, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
			t.Fatalf("qemu exited while booting: %s", q)
		default:
		}
		if err := v.connect(sock); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the VM's exec agent did not answer within 5 minutes: %v", err)
		}
		time.Sleep(time.Second)
	}
	return v
}

// connect connects to the agent's port and checks that it answers.
func (v *vm) connect(sock string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		v.conn, v.in = c, bufio.NewReader(c)
	}
	_, err := v.execLocked("true", 3*time.Second)
	return err
}

// request and answer are hack/vmexec's protocol; ID matches an answer to
// its request (an answer to a request that timed out comes late).
type request struct {
	ID      int    `json:"id"`
	Script  string `json:"script"`
	Timeout int    `json:"timeout"`
}

type answer struct {
	ID   int    `json:"id"`
	Out  []byte `json:"out"`
	Code int    `json:"code"`
}

// exec runs script with sh in the VM and returns its combined output.
func (v *vm) exec(script string, timeout time.Duration) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.execLocked(script, timeout)
}

func (v *vm) execLocked(script string, timeout time.Duration) (string, error) {
	v.seq++
	req := request{ID: v.seq, Script: script, Timeout: int(timeout / time.Second)}
	b, _ := json.Marshal(req)
	v.conn.SetDeadline(time.Now().Add(timeout + 10*time.Second))
	if _, err := v.conn.Write(append(b, '\n')); err != nil {
		return "", fmt.Errorf("send to the VM: %w", err)
	}
	for {
		line, err := v.in.ReadBytes('\n')
		if err != nil {
			return "", fmt.Errorf("answer from the VM: %w", err)
		}
		var a answer
		if err := json.Unmarshal(line, &a); err != nil {
			return "", fmt.Errorf("answer from the VM: %w: %q", err, line)
		}
		if a.ID != req.ID {
			continue // a late answer to an earlier request
		}
		if a.Code != 0 {
			return string(a.Out), &vmExit{code: a.Code}
		}
		return string(a.Out), nil
	}
}

// share is the host side of the VM's /mnt/share.
func (v *vm) share(name string) string { return filepath.Join(v.dir, "share", name) }

// guestFault is what the guest kernel prints when it dies of its own
// fault (an oops, BUG, or panic) rather than of anything a test did to a
// process; under QEMU's software CPU this happens, rarely, in code no test
// touches.
var guestFault = []string{"Kernel panic - not syncing", "BUG: ", "Oops: ", "general protection fault"}

// reportConsole logs the VM's console after a failure: from the guest
// kernel's first fault when there is one (the lines a bug report needs),
// else its end. When the guest kernel panicked, the test's name goes to
// the file E2E_GUEST_PANIC_FILE names, so hack/e2e.sh can tell a guest
// that died under the emulator from a failure of ol-shim's.
func reportConsole(t *testing.T, path string) {
	raw, _ := os.ReadFile(path)
	console := string(raw)
	first := -1
	for _, sig := range guestFault {
		if i := strings.Index(console, sig); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first < 0 {
		if len(console) > 4000 {
			console = console[len(console)-4000:]
		}
		t.Logf("VM console (end):\n%s", console)
		return
	}
	if i := strings.LastIndex(console[:first], "\n"); i >= 0 {
		first = i + 1
	}
	fault := console[first:]
	if len(fault) > 12000 {
		fault = fault[:6000] + "\n[...]\n" + fault[len(fault)-6000:]
	}
	t.Logf("VM console, from the guest kernel's first fault:\n%s", fault)
	if !strings.Contains(console, "Kernel panic - not syncing") {
		return
	}
	if f := os.Getenv("E2E_GUEST_PANIC_FILE"); f != "" {
		if w, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintln(w, t.Name())
			w.Close()
		}
	}
}
