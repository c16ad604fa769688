//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
)

const runConfig = `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 1
memory = "64M"

[pools.rt]
image = "ol-shim-test/runtime:latest"
cmd = ["/runtime"]
min_idle = 1
memory = "32M"
ready = { socket = "ol.sock", timeout = "20s" }
`

// stream runs req through the API's streamed run and returns the hello,
// the exit and what it wrote.
func (d *testDaemon) stream(t *testing.T, req api.RunCall, stdin io.Reader) (agent.Hello, agent.Exit, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := d.c.RunStream(ctx, req)
	if err != nil {
		return agent.Hello{}, agent.Exit{}, "", err
	}
	defer conn.Close()
	var h agent.Hello
	var out bytes.Buffer
	x, err := agent.Run(ctx, agent.NewConn(conn), agent.Start{}, agent.Stdio{Stdin: stdin, Stdout: &out, Stderr: &out, Hello: func(hh agent.Hello) { h = hh }})
	return h, x, out.String(), err
}

// execCreates counts the exec_create events dockerd recorded for this
// daemon's containers between since and until.
func (d *testDaemon) execCreates(t *testing.T, since, until time.Time) int {
	t.Helper()
	out, err := exec.Command("docker", "events", "--since", strconv.FormatInt(since.Unix()-1, 10), "--until", strconv.FormatInt(until.Unix()+1, 10),
		"--filter", "event=exec_create", "--filter", "label="+api.LabelRoot+"="+rootID(d.root), "--format", "{{.Actor.ID}}").Output()
	if err != nil {
		t.Fatalf("docker events: %v", err)
	}
	return len(strings.Fields(string(out)))
}

// Runs are served by the sandbox's agent: dockerd sees no exec, in pools
// that idle in init and in pools with a command of their own.
func TestRunThroughAgentNoExec(t *testing.T) {
	d := newDaemon(t, runConfig)
	d.waitIdle("bb", 1)
	d.waitIdle("rt", 1)
	since := time.Now()
	for _, pool := range []string{"bb", "rt", "bb"} {
		cmd := []string{"sh", "-c", "echo from $0", pool}
		if pool == "rt" {
			cmd = []string{"/.ol-shim/init", "version"} // FROM scratch: no shell
		}
		h, x, out, err := d.stream(t, api.RunCall{RunRequest: api.RunRequest{Pool: pool, Cmd: cmd, Reuse: true}}, nil)
		if err != nil || x.Code != 0 || h.Via != "agent" || out == "" {
			t.Fatalf("run in pool %s: hello %+v, exit %+v, output %q, %v", pool, h, x, out, err)
		}
	}
	if out, _, code := d.cli("", "run", "--pool", "bb", "true"); code != 0 {
		t.Fatalf("ol-shim run: exit %d: %s", code, out)
	}
	// A run that is not streamed (one JSON body) goes through the agent too.
	res, err := d.c.Run(context.Background(), api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"sh", "-c", "cat; echo err >&2; exit 4"}, Stdin: []byte("in\n")}, Timeout: "60s"})
	if err != nil || res.ExitCode != 4 || string(res.Stdout) != "in\n" || string(res.Stderr) != "err\n" {
		t.Fatalf("POST /v1/run without an upgrade: %+v, %v", res, err)
	}
	until := time.Now()
	if n := d.execCreates(t, since, until); n != 0 {
		t.Fatalf("dockerd recorded %d exec_create events for runs served by agents", n)
	}
	// The count sees an exec when there is one: a sandbox whose agent
	// does not answer is served through docker exec. The run takes the
	// pool's idle sandbox (its refill after the runs above done first).
	d.waitIdle("bb", 1)
	socks, _ := filepath.Glob(filepath.Join(d.root, "agents", "*", agent.SocketName))
	for _, s := range socks {
		os.Remove(s)
	}
	since = time.Now()
	if h, x, _, err := d.stream(t, api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"true"}}}, nil); err != nil || x.Code != 0 || h.Via != "exec" {
		t.Fatalf("run with the agent's socket gone: %+v %+v %v", h, x, err)
	}
	if n := d.execCreates(t, since, time.Now()); n == 0 {
		t.Fatal("the exec_create count missed a docker exec: the check above proves nothing")
	}
}

// silenceAgent removes the agent socket of the daemon's one sandbox: its
// runs then go through docker exec.
func (d *testDaemon) silenceAgent(t *testing.T) {
	t.Helper()
	socks, _ := filepath.Glob(filepath.Join(d.root, "agents", "*", agent.SocketName))
	if len(socks) != 1 {
		t.Fatalf("agent sockets: %v, want one for the one sandbox", socks)
	}
	if err := os.Remove(socks[0]); err != nil {
		t.Fatal(err)
	}
}

// A sandbox whose agent does not answer is served through docker exec,
// and the log says so.
func TestRunFallsBackToExec(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	d.silenceAgent(t)
	h, x, out, err := d.stream(t, api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"sh", "-c", "echo via exec; exit 4"}}}, nil)
	if err != nil || x.Code != 4 || out != "via exec\n" || h.Via != "exec" {
		t.Fatalf("run with no agent: hello %+v exit %+v output %q %v", h, x, out, err)
	}
	if !strings.Contains(d.log.String(), "running through docker exec") {
		t.Fatalf("the fallback was not logged:\n%s", d.log.String())
	}
}

// Through docker exec too, Ctrl-C reaches the command as SIGINT (dockerd
// has no kill for an exec: the daemon signals its process), and a client
// that goes away takes its command with it.
func TestRunExecFallbackSignals(t *testing.T) {
	d := newDaemon(t, bbConfig+"max_size = 1\n") // one sandbox: every run gets the one without an agent
	d.waitIdle("bb", 1)
	d.silenceAgent(t)
	start := func(script string) (*exec.Cmd, *bufio.Reader) {
		t.Helper()
		cmd := exec.Command(bin, "--socket", d.socket, "run", "--pool", "bb", "--reuse", "sh", "-c", script)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(stdout)
		if l, err := r.ReadString('\n'); err != nil || l != "ready\n" {
			cmd.Process.Kill()
			t.Fatalf("first line %q %v; log:\n%s", l, err, d.log.String())
		}
		return cmd, r
	}
	// interrupt sends SIGINT to the CLI and returns its output from then
	// and how it ended; a signal that was dropped would leave it running,
	// so it is killed after 30 s, which fails the test.
	interrupt := func(cmd *exec.Cmd, r *bufio.Reader) (string, error) {
		t.Helper()
		late := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
		cmd.Process.Signal(syscall.SIGINT)
		rest, _ := io.ReadAll(r)
		err := cmd.Wait()
		if !late.Stop() {
			t.Fatalf("the command still ran 30 s after SIGINT; log:\n%s", d.log.String())
		}
		return string(rest), err
	}
	var ee *exec.ExitError
	if _, err := interrupt(start("echo ready; exec sleep 1013")); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("sleep through docker exec after SIGINT: %v, want exit 130; log:\n%s", err, d.log.String())
	}
	if rest, err := interrupt(start("trap 'echo got INT; exit 42' INT; echo ready; while :; do sleep 0.1; done")); !errors.As(err, &ee) || ee.ExitCode() != 42 || !strings.Contains(rest, "got INT") {
		t.Fatalf("trap through docker exec after SIGINT: %v, output %q; want exit 42; log:\n%s", err, rest, d.log.String())
	}
	if !strings.Contains(d.log.String(), "running through docker exec") {
		t.Fatalf("the runs did not go through docker exec:\n%s", d.log.String())
	}
	// The client killed: its command ends too.
	cmd, _ := start("echo ready; exec sleep 1019")
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command("pgrep", "-f", "^sleep 1019$").Run() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command of a client killed 15 s ago still runs through docker exec; log:\n%s", d.log.String())
		}
	}
}

// A sandbox that swaps its agent's socket for a symlink to a host socket
// does not get the daemon (root on the host) to connect there: the run
// goes through docker exec.
func TestRunAgentSocketSymlinkNotFollowed(t *testing.T) {
	d := newDaemon(t, bbConfig+"max_size = 1\n") // one sandbox: the next run gets the one attacked
	d.waitIdle("bb", 1)
	// A host socket that counts connections, as a stand-in for
	// /var/run/docker.sock.
	bait := filepath.Join(t.TempDir(), "bait.sock")
	l, err := net.Listen("unix", bait)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hits := make(chan struct{}, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hits <- struct{}{}
			c.Close()
		}
	}()
	script := fmt.Sprintf("rm -f %[1]s && ln -s %[2]s %[1]s && ls -l %[1]s", agent.SocketPath, bait)
	h, x, out, err := d.stream(t, api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"sh", "-c", script}, Reuse: true}}, nil)
	if err != nil || x.Code != 0 || h.Via != "agent" {
		t.Fatalf("plant the symlink: %+v %+v %q %v", h, x, out, err)
	}
	h, x, out, err = d.stream(t, api.RunCall{RunRequest: api.RunRequest{Pool: "bb", Cmd: []string{"echo", "still served"}}}, nil)
	if err != nil || x.Code != 0 || out != "still served\n" {
		t.Fatalf("run after the swap: %+v %+v %q %v", h, x, out, err)
	}
	if h.Via != "exec" {
		t.Errorf("the run after the swap went via %q, want exec", h.Via)
	}
	select {
	case <-hits:
		t.Fatal("the daemon connected to the host socket the sandbox's symlink named")
	default:
	}
}

// The first line of output reaches the CLI as it is written, not at the
// command's end: the sandbox stamps the line with the host kernel's
// uptime (not namespaced), the test reads the uptime as the line arrives.
func TestRunStreamsOutput(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "--pool", "bb", "sh", "-c", "cut -d' ' -f1 /proc/uptime; sleep 3; echo b")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	first, err := r.ReadString('\n')
	arrived := uptime(t)
	if err != nil {
		t.Fatal(err)
	}
	written, err := strconv.ParseFloat(strings.TrimSpace(first), 64)
	if err != nil {
		t.Fatalf("first line %q: %v", first, err)
	}
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil || string(rest) != "b\n" {
		t.Fatalf("the rest: %q, %v", rest, err)
	}
	// /proc/uptime has centiseconds: allow for them.
	if lag := arrived - written; lag > 0.2+0.01 {
		t.Fatalf("the first line reached the CLI %.2fs after it was written; want <= 200ms", lag)
	}
}

func uptime(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return v
}

// Exit codes as docker run gives them.
func TestRunExitCodes(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"--pool", "bb", "true"}, 0},
		{[]string{"--pool", "bb", "sh", "-c", "exit 3"}, 3},
		{[]string{"--pool", "no-such-pool", "true"}, 125},
		{[]string{"no-such-image:here", "true"}, 125},
		{[]string{"--pool", "bb", "/etc"}, 126},
		{[]string{"--pool", "bb", "-u", "no-such-user", "true"}, 126},
		{[]string{"--pool", "bb", "no-such-command"}, 127},
		{[]string{"--pool", "bb", "sh", "-c", "kill -INT $$"}, 130},
	} {
		_, stderr, code := d.cli("", append([]string{"run"}, c.args...)...)
		if code != c.code {
			t.Errorf("ol-shim run %q: exit %d, want %d; stderr %q", c.args, code, c.code, stderr)
		}
		if c.code >= 125 && c.code <= 127 && !strings.HasPrefix(stderr, "ol-shim: ") {
			t.Errorf("ol-shim run %q: stderr %q does not say what failed", c.args, stderr)
		}
	}
}

// Through docker exec, a command that cannot start gives docker run's
// exit code and dockerd's reason on stderr, not on stdout: dockerd writes
// a failed start's error into the exec's output stream.
func TestRunExecFallbackExitCodes(t *testing.T) {
	// One sandbox at most: every run takes the one whose agent is silenced.
	d := newDaemon(t, bbConfig+"max_size = 1\n")
	d.waitIdle("bb", 1)
	d.silenceAgent(t)
	for _, c := range []struct {
		args   []string
		code   int
		reason string
	}{
		{[]string{"-u", "no-such-user", "true"}, 126, "no-such-user"},
		{[]string{"no-such-command"}, 127, "no-such-command"},
		{[]string{"/etc"}, 126, "/etc"},
		{[]string{"sh", "-c", "echo out; echo err >&2; exit 126"}, 126, ""},
		{[]string{"sh", "-c", "echo out; exit 3"}, 3, ""},
	} {
		stdout, stderr, code := d.cli("", append([]string{"run", "--reuse", "--pool", "bb"}, c.args...)...)
		if code != c.code {
			t.Errorf("ol-shim run %q through docker exec: exit %d, want %d; stdout %q stderr %q", c.args, code, c.code, stdout, stderr)
		}
		if c.reason != "" && (stdout != "" || !strings.HasPrefix(stderr, "ol-shim: ") || !strings.Contains(stderr, c.reason)) {
			t.Errorf("ol-shim run %q through docker exec: stdout %q, stderr %q; want nothing on stdout and the reason on stderr", c.args, stdout, stderr)
		}
		if c.reason == "" && stdout != "out\n" {
			t.Errorf("ol-shim run %q through docker exec: stdout %q, want the command's", c.args, stdout)
		}
	}
	if n := strings.Count(d.log.String(), "running through docker exec"); n < 5 {
		t.Fatalf("%d of 5 runs went through docker exec; log:\n%s", n, d.log.String())
	}
}

// Ctrl-C on the CLI reaches the command as SIGINT.
func TestRunCtrlC(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "--pool", "bb", "sh", "-c", "trap 'echo got INT; exit 42' INT; echo ready; while :; do sleep 0.1; done")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if l, err := r.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("%q %v", l, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(r)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 || !strings.Contains(string(rest), "got INT") {
		t.Fatalf("after SIGINT: %v, output %q; want the trap's exit 42", err, rest)
	}
	// With no trap, the command dies of it: 130.
	cmd = exec.Command(bin, "--socket", d.socket, "run", "--pool", "bb", "sh", "-c", "echo ready; exec sleep 30")
	stdout, _ = cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(stdout).ReadString('\n')
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("sleep after SIGINT: %v, want exit 130", err)
	}
}

// -i: stdin is streamed, answered line by line before it ends.
func TestRunInteractive(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "-i", "--pool", "bb", "sh", "-c", "while read l; do echo got $l; done; echo bye")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	for _, w := range []string{"one", "two"} {
		fmt.Fprintln(stdin, w)
		l, err := r.ReadString('\n')
		if err != nil || l != "got "+w+"\n" {
			t.Fatalf("after writing %q: read %q, %v", w, l, err)
		}
	}
	stdin.Close()
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil || string(rest) != "bye\n" {
		t.Fatalf("after EOF: %q %v", rest, err)
	}
}

// -t: a terminal in the sandbox, sized as the CLI's and following its
// resizes; Ctrl-C typed reaches the remote terminal.
func TestRunTTY(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "-it", "--pool", "bb", "sh")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	out := &syncBuffer{}
	go io.Copy(out, ptmx)
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the terminal's output:\n%s", what, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	io.WriteString(ptmx, "tty; stty size | sed 's/ /x/'\n")
	waitFor("/dev/pts/")
	waitFor("40x100")
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // SIGWINCH to the CLI, a resize frame on
	io.WriteString(ptmx, "stty size | sed 's/ /y/'\n")
	waitFor("50y120")
	io.WriteString(ptmx, "sleep 30\n")
	time.Sleep(500 * time.Millisecond)
	io.WriteString(ptmx, "\x03")
	time.Sleep(200 * time.Millisecond)
	io.WriteString(ptmx, "echo after-$?\n")
	waitFor("after-130")
	io.WriteString(ptmx, "exit 7\n")
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit 7 in the terminal: CLI ended with %v\n%s", err, out.String())
	}
}

// 1 GiB through stdout: the daemon relays it a frame at a time, its RSS
// stays flat.
func TestRunLargeOutputBoundedMemory(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	pid := d.cmd.Process.Pid
	before := rss(t, pid)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "--pool", "bb", "head", "-c", "1073741824", "/dev/zero")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peak := before
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, stdout)
		done <- n
	}()
	var n int64
	for waiting := true; waiting; {
		select {
		case n = <-done:
			waiting = false
		case <-time.After(50 * time.Millisecond):
			peak = max(peak, rss(t, pid))
		}
	}
	if err := cmd.Wait(); err != nil || n != 1<<30 {
		t.Fatalf("read %d bytes of 1 GiB, %v", n, err)
	}
	t.Logf("daemon RSS %d MiB before, %d MiB at most during 1 GiB of output", before>>20, peak>>20)
	if grew := peak - before; grew > 32<<20 {
		t.Fatalf("the daemon's RSS grew by %d MiB relaying 1 GiB; want <= 32 MiB", grew>>20)
	}
}

func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// docker ol run: the binary as a Docker CLI plugin, as make install puts
// it in a cli-plugins directory.
func TestDockerCLIPlugin(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cfg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cfg, "cli-plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(cfg, "cli-plugins", "docker-ol")); err != nil {
		t.Fatal(err)
	}
	docker := func(stdin string, args ...string) (string, int) {
		cmd := exec.Command("docker", args...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfg, "OL_SHIM_SOCKET="+d.socket)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, _ := docker("", "--help"); !strings.Contains(out, "ol*") && !strings.Contains(out, "ol ") {
		t.Fatalf("docker --help does not list the ol plugin:\n%s", out)
	}
	if out, code := docker("", "ol", "run", "--pool", "bb", "sh", "-c", "echo from docker ol; exit 5"); code != 5 || out != "from docker ol\n" {
		t.Fatalf("docker ol run: exit %d, output %q; want 5 and the line", code, out)
	}
	if out, code := docker("piped\n", "ol", "run", "-i", busybox, "cat"); code != 0 || out != "piped\n" {
		t.Fatalf("docker ol run -i IMAGE cat: exit %d, output %q", code, out)
	}
	// Docker's global options before ol are Docker's (the CLI plugin
	// spec: docker-ol [GLOBAL OPTIONS] ol ARGS), never ol-shim's.
	for _, global := range [][]string{{"-D"}, {"--context", "default"}, {"-H", "unix:///var/run/docker.sock"}, {"--log-level", "info"}, {"--context=default"}} {
		args := append(slices.Clone(global), "ol", "run", "--pool", "bb", "sh", "-c", "echo ok")
		if out, code := docker("", args...); code != 0 || out != "ok\n" {
			t.Errorf("docker %s: exit %d, output %q", strings.Join(args, " "), code, out)
		}
	}
	if out, code := docker("", "-D", "ol", "status"); code != 0 || !strings.Contains(out, "bb") {
		t.Errorf("docker -D ol status: exit %d, output %q", code, out)
	}
	if out, code := docker("", "ol", "--help"); code != 0 || !strings.Contains(out, "docker ol [global options]") || strings.Contains(out, "   serve ") {
		t.Errorf("docker ol --help: exit %d; want usage as docker ol, without the daemon's commands:\n%s", code, out)
	}
}

// A sandbox killed in the middle of a run: the CLI says what happened and
// exits 125, also when it was sending stdin as the sandbox went.
func TestRunSandboxKilledMidRun(t *testing.T) {
	d := newDaemon(t, bbConfig)
	d.waitIdle("bb", 1)
	cmd := exec.Command(bin, "--socket", d.socket, "run", "-i", "--pool", "bb", "sh", "-c", "echo ready; while read l; do :; done")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("%q %v", l, err)
	}
	out, err := exec.Command("docker", "ps", "-q", "--filter", "label="+api.LabelRoot+"="+rootID(d.root), "--filter", "status=running").Output()
	if err != nil || len(strings.Fields(string(out))) == 0 {
		t.Fatalf("the running sandbox: %q %v", out, err)
	}
	for _, id := range strings.Fields(string(out)) {
		exec.Command("docker", "kill", id).Run()
	}
	go func() {
		for range 100 {
			if _, err := io.WriteString(stdin, "more\n"); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(stderr.String(), "sandbox") {
		t.Fatalf("run whose sandbox was killed: %v, stderr %q; want exit 125 and a message naming the sandbox", err, stderr.String())
	}
}

// plantConfig is a pool whose command, as a hostile image's may, waits
// for a program to appear in /host and execs it in its own place: a
// process the pool started, which every sweep keeps alive.
const plantConfig = `
[pools.bb]
image = "ol-shim-test/busybox:latest"
cmd = ["sh", "-c", "while :; do if [ -x /host/evil ]; then exec /host/evil $(cat /host/mode) /.ol-shim/ctl/agent.sock; fi; sleep 0.1; done"]
min_idle = 1
max_size = 1
memory = "64M"
`

// plant has the pool's command exec the hostile agent in mode: a run
// writes it into /host, and the command takes its socket's place.
func (d *testDaemon) plant(t *testing.T, evil, mode string) {
	t.Helper()
	payload, err := os.Open(evil)
	if err != nil {
		t.Fatal(err)
	}
	defer payload.Close()
	cmd := exec.Command(bin, "--socket", d.socket, "run", "-i", "--reuse", "--pool", "bb", "sh", "-c",
		"cat > /host/evil.new && echo "+mode+" > /host/mode && chmod +x /host/evil.new && mv /host/evil.new /host/evil && sleep 1")
	cmd.Stdin = payload
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: plant the hostile agent: %v\n%s", mode, err, out)
	}
}

func buildEvil(t *testing.T) string {
	t.Helper()
	evil := filepath.Join(t.TempDir(), "evilagent")
	build := exec.Command("go", "build", "-o", evil, "../hack/evilagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile agent: %v\n%s", err, out)
	}
	return evil
}

// TestRunHostileSandboxAgent: a process of the sandbox (here the pool's
// own command, which no sweep kills) removes the agent's socket and
// listens there itself. The daemon sees that the peer is not the
// sandbox's init: the run fails with a message (exit 125), the command
// never runs, the sandbox is destroyed, and no docker exec is tried.
func TestRunHostileSandboxAgent(t *testing.T) {
	evil := buildEvil(t)
	d := newDaemon(t, plantConfig)
	d.waitIdle("bb", 1)
	pid := d.cmd.Process.Pid
	before := rss(t, pid)
	for _, mode := range []string{"bigframe", "garbage", "flood", "hello", "capture"} {
		d.plant(t, evil, mode)
		before0, _ := d.c.Pool(context.Background(), "bb")
		since := time.Now()
		cmd := exec.Command(bin, "--socket", d.socket, "run", "--timeout", "5s", "--pool", "bb", "-e", "SECRET=hunter2", "echo", "never")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.HasPrefix(stderr.String(), "ol-shim: ") || !strings.Contains(stderr.String(), "not the sandbox's init") {
			t.Errorf("%s: run against a hostile agent: %v, stderr %q; want exit 125 naming the impostor", mode, err, stderr.String())
		}
		if strings.Contains(stdout.String(), "never") || strings.Contains(stdout.String()+stderr.String(), "hunter2") {
			t.Errorf("%s: the run reached something: stdout %q", mode, stdout.String())
		}
		t.Logf("%s: exit %v, %d bytes of stdout, stderr %q", mode, err, stdout.Len(), strings.TrimSpace(stderr.String()))
		if n := d.execCreates(t, since, time.Now()); n != 0 {
			t.Errorf("%s: a sandbox with an impostor agent was run through docker exec (%d exec_create)", mode, n)
		}
		if _, err := d.c.Status(context.Background()); err != nil {
			t.Fatalf("%s: the daemon stopped answering: %v", mode, err)
		}
		eventually(t, mode+": the sandbox is destroyed, not reused", 30*time.Second, func() error {
			p, err := d.c.Pool(context.Background(), "bb")
			if err != nil {
				return err
			}
			if p.Stats.Destroys["no trusted runner"] <= before0.Stats.Destroys["no trusted runner"] {
				return fmt.Errorf("destroyed for no trusted runner: %d, before %d", p.Stats.Destroys["no trusted runner"], before0.Stats.Destroys["no trusted runner"])
			}
			return nil
		})
		d.waitIdle("bb", 1)
	}
	if !strings.Contains(d.log.String(), "poses as its agent") {
		t.Error("the daemon's log does not say a sandbox's process posed as its agent")
	}
	if grew := rss(t, pid) - before; grew > 32<<20 {
		t.Errorf("the daemon's RSS grew by %d MiB through the hostile agents", grew>>20)
	}
}

// TestRunNoSurvivors: what a run leaves running (in the background, in a
// session of its own) is killed before the sandbox goes back to its pool,
// so a later run in it sees none of it; what the pool's command runs stays.
func TestRunNoSurvivors(t *testing.T) {
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
cmd = ["sh", "-c", "sleep 2222 & wait"]
min_idle = 1
max_size = 1
memory = "64M"
`)
	d.waitIdle("bb", 1)
	if out, _, code := d.cli("", "run", "--reuse", "--pool", "bb", "sh", "-c", "setsid sleep 1111 </dev/null >/dev/null 2>&1 & (sleep 1112 &) ; echo $$ > /host/ran"); code != 0 {
		t.Fatalf("the run that leaves processes behind: exit %d %s", code, out)
	}
	for i := 0; i < 2; i++ {
		out, _, code := d.cli("", "run", "--reuse", "--pool", "bb", "ps", "-o", "args")
		if code != 0 || !strings.Contains(out, "sleep 2222") {
			t.Fatalf("ps in the sandbox: exit %d\n%s\n(the pool's own sleep 2222 must be there)", code, out)
		}
		if strings.Contains(out, "sleep 1111") || strings.Contains(out, "sleep 1112") {
			t.Errorf("run %d after: a process of an earlier run is still running:\n%s", i+1, out)
		}
	}
	if out, _, _ := d.cli("", "run", "--reuse", "--pool", "bb", "cat", "/host/ran"); strings.TrimSpace(out) == "" {
		t.Error("the runs were not in the same sandbox: the test proves nothing")
	}
}

// TestRunNoZombieSurvivors: a process of a run whose main thread exits
// while another of its threads runs on looks like a zombie (state Z) in
// /proc, yet it runs, and reads /proc of every later run in the sandbox.
// The sweep after the run kills it all the same: the next run, with a
// secret in its environment, finds its counter stopped and its secret
// unread.
func TestRunNoZombieSurvivors(t *testing.T) {
	evil := buildEvil(t)
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 1
max_size = 1
memory = "64M"
`)
	d.waitIdle("bb", 1)
	payload, err := os.ReadFile(evil)
	if err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := d.cli(string(payload), "run", "-i", "--reuse", "--pool", "bb", "sh", "-c",
		"cat > /tmp/evil && chmod +x /tmp/evil || exit 1; setsid /tmp/evil hide /tmp/hidden </dev/null >/dev/null 2>&1 & sleep 0.3; echo $$ > /tmp/ran; cat /tmp/hidden"); code != 0 || out == "" {
		t.Fatalf("the run that leaves a zombie-leader behind: exit %d %q %s", code, out, stderr)
	}
	out, stderr, code := d.cli("", "run", "--reuse", "--pool", "bb", "-e", "SECRET=hunter2", "sh", "-c",
		"cat /tmp/ran; cat /tmp/hidden; sleep 0.5; cat /tmp/hidden; ps -o stat,args")
	t.Logf("the next run: exit %d\n%s%s", code, out, stderr)
	lines := strings.Split(out, "\n")
	if code != 0 || len(lines) < 3 || strings.TrimSpace(lines[0]) == "" {
		t.Fatalf("the next run did not find the first run's marks: the runs were not in the same sandbox, the test proves nothing")
	}
	if lines[1] != lines[2] {
		t.Errorf("a process of the first run still runs in the sandbox (its counter went on: %q, then %q)", lines[1], lines[2])
	}
	if strings.Contains(out, "hunter2") {
		t.Error("a process of the first run read the next run's environment")
	}
}

// TestRunControlDirectoryBounded: the sandbox's control directory (where
// its agent's socket is, a directory of the host's) takes at most 1 MiB,
// and nothing in it can be run, read-only root file system or not.
func TestRunControlDirectoryBounded(t *testing.T) {
	d := newDaemon(t, bbConfig+"read_only_rootfs = true\n")
	d.waitIdle("bb", 1)
	out, stderr, code := d.cli("", "run", "--pool", "bb", "sh", "-c",
		"dd if=/dev/zero of=/.ol-shim/ctl/fill bs=1M count=200 2>&1; ls -l /.ol-shim/ctl/fill; rm -f /.ol-shim/ctl/fill; cp /bin/busybox /.ol-shim/ctl/true 2>&1; /.ol-shim/ctl/true 2>&1 && echo RAN")
	t.Logf("exit %d:\n%s\n%s", code, out, stderr)
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("200 MiB into the control directory: no ENOSPC")
	}
	if strings.Contains(out, "RAN") {
		t.Error("a program copied into the control directory ran")
	}
	var st syscall.Statfs_t
	dirs, _ := filepath.Glob(filepath.Join(d.root, "agents", "*"))
	for _, dir := range dirs {
		if err := syscall.Statfs(dir, &st); err == nil && int64(st.Blocks)*int64(st.Bsize) > 1<<20 {
			t.Errorf("%s: a file system of %d bytes", dir, int64(st.Blocks)*int64(st.Bsize))
		}
	}
}

// TestRunOutputFloodBoundedMemory: 64 sandboxes at once each print 16 MiB
// through runs that are not streamed (one JSON body each). The daemon holds
// that output off its heap (RunOutput): its RSS stays within a fixed bound
// whatever the number of such runs.
func TestRunOutputFloodBoundedMemory(t *testing.T) {
	const n = 64
	d := newDaemon(t, `
[daemon]
max_pool_size = 64

[pools.flood]
image = "ol-shim-test/busybox:latest"
max_size = 64
memory = "16M"
`)
	pid := d.cmd.Process.Pid
	before := rss(t, pid)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	peak := before
	stop := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		p := before
		for {
			select {
			case <-stop:
				sampled <- p
				return
			case <-time.After(20 * time.Millisecond):
				p = max(p, rss(t, pid))
			}
		}
	}()
	// The bodies are read raw (decoding 64 x 22 MB of base64 under the
	// race detector would take minutes): size and head, checked.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	body := `{"pool":"flood","cmd":["head","-c","16777216","/dev/zero"],"timeout":"300s"}`
	want := int64(base64.StdEncoding.EncodedLen(16 << 20))
	for range n {
		wg.Go(func() {
			resp, err := hc.Post("http://ol-shim/v1/run", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			head := make([]byte, 200)
			k, _ := io.ReadFull(resp.Body, head)
			rest, _ := io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 || !bytes.Contains(head[:k], []byte(`"exit_code":0`)) || int64(k)+rest < want {
				errs <- fmt.Errorf("run: %s, %d bytes, starting %q", resp.Status, int64(k)+rest, head[:k])
			}
		})
	}
	wg.Wait()
	close(stop)
	peak = <-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("daemon RSS %d MiB before, %d MiB at most while %d runs each printed 16 MiB in one JSON body", before>>20, peak>>20, n)
	if grew := peak - before; grew > 128<<20 {
		t.Errorf("the daemon's RSS grew by %d MiB; want at most 128 MiB", grew>>20)
	}
}

// TestSandboxInitIsLean: a sandbox's PID 1 is ol-shim-init (found next to
// ol-shimd), not the daemon's own binary: the file at /.ol-shim/init is it,
// byte for byte in size, and PID 1 runs it.
func TestSandboxInitIsLean(t *testing.T) {
	d := newDaemon(t, `
[pools.bb]
image = "ol-shim-test/busybox:latest"
min_idle = 1
memory = "64M"
`)
	d.waitIdle("bb", 1)
	lean, err := os.Stat(filepath.Join(filepath.Dir(bin), "ol-shim-init"))
	if err != nil {
		t.Fatal(err)
	}
	daemon, err := os.Stat(filepath.Join(filepath.Dir(bin), "ol-shimd"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, code := d.cli("", "run", "--pool", "bb", "sh", "-c", "wc -c < /.ol-shim/init; cat /proc/1/cmdline | tr '\\0' ' '")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	lines := strings.SplitN(strings.TrimSpace(out), "\n", 2)
	if len(lines) != 2 || strings.TrimSpace(lines[0]) != strconv.FormatInt(lean.Size(), 10) {
		t.Fatalf("/.ol-shim/init is %q bytes; ol-shim-init is %d, ol-shimd %d", lines[0], lean.Size(), daemon.Size())
	}
	if !strings.HasPrefix(lines[1], "/.ol-shim/init init ") {
		t.Errorf("PID 1 runs %q", lines[1])
	}
}

// A sandbox of a pool with no network is made with networking disabled
// (dockerd sets up nothing for it): it has a network namespace of its own
// with only loopback, up, and the daemon's /etc/hosts naming localhost,
// read-only; docker inspect says so.
func TestSandboxNetworkNone(t *testing.T) {
	d := newDaemon(t, runConfig)
	d.waitIdle("bb", 1)
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := d.cli("", "run", "--pool", "bb", "--reuse", "sh", "-c",
		`readlink /proc/self/ns/net; ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; grep -c "^127.0.0.1[[:space:]]localhost$" /etc/hosts; echo x >> /etc/hosts || echo hosts-read-only`)
	if code != 0 {
		t.Fatalf("run: exit %d: %s %s", code, out, errOut)
	}
	f := strings.Fields(out)
	if len(f) != 6 {
		t.Fatalf("run printed %q (stderr %q); want the namespace, the interfaces, lo's state and flags, the localhost line count, and hosts-read-only", out, errOut)
	}
	if f[0] == hostNS || !strings.HasPrefix(f[0], "net:[") {
		t.Errorf("sandbox network namespace %s; want its own, not the host's %s", f[0], hostNS)
	}
	if f[1] != "lo" {
		t.Errorf("interfaces %q; want lo alone", f[1])
	}
	if flags, err := strconv.ParseUint(strings.TrimPrefix(f[3], "0x"), 16, 32); err != nil || flags&1 == 0 {
		t.Errorf("lo flags %s (operstate %s); want it up", f[3], f[2])
	}
	if f[4] != "1" || f[5] != "hosts-read-only" {
		t.Errorf("/etc/hosts: %q lines for localhost, write: %q; want 1 and read-only", f[4], f[5])
	}
	ids := d.containers(false)
	if len(ids) == 0 {
		t.Fatal("no container of the daemon")
	}
	b, err := exec.Command("docker", "inspect", "-f", "{{.Config.NetworkDisabled}} {{.HostConfig.NetworkMode}}", ids[0]).Output()
	if err != nil || strings.TrimSpace(string(b)) != "true none" {
		t.Errorf("docker inspect: %q, %v; want networking disabled, network mode none", b, err)
	}
}
