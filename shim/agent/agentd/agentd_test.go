package agentd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/agent"
)

var reaper = NewReaper()

// serve starts an agent on a socket in a temp dir and returns a dialer.
func serve(t *testing.T) func() *agent.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), agent.SocketName)
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Reaper: reaper, Log: slog.New(slog.DiscardHandler), Env: os.Environ()}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	return func() *agent.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return agent.NewConn(c)
	}
}

func run(t *testing.T, dial func() *agent.Conn, st agent.Start, sio agent.Stdio) (agent.Exit, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return agent.Run(ctx, dial(), st, sio)
}

func TestRunOutputAndExitCode(t *testing.T) {
	dial := serve(t)
	var out, errb bytes.Buffer
	x, err := run(t, dial, agent.Start{Argv: []string{"sh", "-c", "echo a; echo b >&2; exit 3"}}, agent.Stdio{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	if x.Code != 3 || out.String() != "a\n" || errb.String() != "b\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 3, a, b", x.Code, out.String(), errb.String())
	}
}

func TestRunEnvDirUser(t *testing.T) {
	dial := serve(t)
	base, err := os.MkdirTemp("", "agentd-dir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // the user can get in
		t.Fatal(err)
	}
	dir := filepath.Join(base, "made", "here")
	var out bytes.Buffer
	x, err := run(t, dial, agent.Start{Argv: []string{"sh", "-c", `echo "$FOO $(pwd) $(id -u)"`}, Env: []string{"FOO=bar"}, Dir: dir, User: "65534"}, agent.Stdio{Stdout: &out})
	if err != nil || x.Code != 0 {
		t.Fatalf("exit %v, %v", x, err)
	}
	if want := "bar " + dir + " 65534\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestRunStartFailures(t *testing.T) {
	dial := serve(t)
	noexec := filepath.Join(t.TempDir(), "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		argv []string
		user string
		code int
	}{
		{[]string{"no-such-command-here"}, "", agent.CodeNotFound},
		{[]string{"/no/such/file"}, "", agent.CodeNotFound},
		{[]string{noexec}, "", agent.CodeCannotRun},
		{[]string{"true"}, "no-such-user-here", agent.CodeCannotRun},
	} {
		_, err := run(t, dial, agent.Start{Argv: c.argv, User: c.user}, agent.Stdio{})
		var e *agent.Error
		if !errors.As(err, &e) || e.Code != c.code {
			t.Errorf("%q as %q: got %v, want an error of code %d", c.argv, c.user, err, c.code)
		}
	}
}

func TestRunStdinRoundTrip(t *testing.T) {
	dial := serve(t)
	in := make([]byte, 3<<20) // many windows
	rand.Read(in)
	var out bytes.Buffer
	x, err := run(t, dial, agent.Start{Argv: []string{"cat"}}, agent.Stdio{Stdin: bytes.NewReader(in), Stdout: &out})
	if err != nil || x.Code != 0 {
		t.Fatalf("exit %v, %v", x, err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("cat gave back %d bytes, not the %d sent", out.Len(), len(in))
	}
}

func TestSignalIsDelivered(t *testing.T) {
	dial := serve(t)
	sigs := make(chan int, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		<-started
		sigs <- int(syscall.SIGINT)
	}()
	x, err := run(t, dial, agent.Start{Argv: []string{"sh", "-c", "echo go; exec sleep 30"}}, agent.Stdio{Stdout: writerFunc(func(p []byte) { once.Do(func() { close(started) }) }), Signals: sigs})
	if err != nil || x.Code != agent.CodeInterrupted || x.Signal != int(syscall.SIGINT) {
		t.Fatalf("got %+v, %v; want code 130 by SIGINT", x, err)
	}
}

func TestTTYAndResize(t *testing.T) {
	dial := serve(t)
	var out bytes.Buffer
	resize := make(chan agent.Resize, 1)
	resize <- agent.Resize{Rows: 50, Cols: 132}
	x, err := run(t, dial, agent.Start{Argv: []string{"sh", "-c", "tty; stty size; sleep 0.5; stty size"}, TTY: true, Rows: 24, Cols: 80}, agent.Stdio{Stdout: &out, Resize: resize})
	if err != nil || x.Code != 0 {
		t.Fatalf("exit %v, %v; output %q", x, err, out.String())
	}
	lines := strings.Fields(strings.ReplaceAll(out.String(), "\r", ""))
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[3]+" "+lines[4] != "50 132" {
		t.Fatalf("got %q: want a /dev/pts device, then a size, then 50 132", out.String())
	}
}

// The client going away kills the process's group, background jobs
// included.
func TestDisconnectKillsGroup(t *testing.T) {
	dial := serve(t)
	c := dial()
	if err := c.WriteJSON(agent.KindStart, agent.Start{Argv: []string{"sh", "-c", "sleep 60 & echo $!; wait"}}); err != nil {
		t.Fatal(err)
	}
	var pid int
	for pid == 0 {
		f, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == agent.KindStdout {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(f.Payload)))
		}
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("background sleep %d not running: %v", pid, err)
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("background sleep %d still runs after its client left", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A client that ignores the window is cut off rather than buffered for.
func TestStdinBeyondWindowCutsOff(t *testing.T) {
	dial := serve(t)
	c := dial()
	// sleep never reads its stdin: nothing is acknowledged... but the
	// pipe takes 64 KiB, so send well past the window.
	if err := c.WriteJSON(agent.KindStart, agent.Start{Argv: []string{"sleep", "30"}, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, agent.MaxPayload)
	for i := 0; i < 2*agent.Window/agent.MaxPayload+8; i++ {
		if err := c.Write(agent.KindStdin, chunk); err != nil {
			break // cut off: what we want
		}
	}
	_ = c.Raw().(net.Conn).SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		f, err := c.Read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the agent kept the connection of a client past its window")
			}
			return
		}
		if f.Kind == agent.KindExit {
			return // killed as its client was cut off
		}
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

var _ io.Writer = writerFunc(nil)

// The daemon takes the socket's existence as the agent's readiness: the
// name must not appear before the socket listens, or a run that comes in
// that window is refused and falls back to docker exec.
func TestListenNameAppearsListening(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, agent.SocketName)
	var refused int
	for i := 0; i < 300 && refused == 0; i++ {
		found := make(chan error, 1)
		go func() {
			for {
				if _, err := os.Lstat(sock); err == nil {
					c, err := net.Dial("unix", sock)
					if err == nil {
						c.Close()
					}
					found <- err
					return
				}
			}
		}()
		l, err := Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-found; err != nil {
			refused++
			t.Errorf("round %d: the socket's name was there and the connect failed: %v", i, err)
		}
		l.Close()
		os.Remove(sock)
	}
}

func TestInitArgs(t *testing.T) {
	for _, c := range []struct {
		args  []string
		agent string
		cmd   []string
		bad   bool
	}{
		{args: nil},
		{args: []string{"--agent", "/s", "--", "sleep", "1"}, agent: "/s", cmd: []string{"sleep", "1"}},
		{args: []string{"--agent=/s", "--"}, agent: "/s", cmd: []string{}},
		{args: []string{"--", "--agent", "x"}, cmd: []string{"--agent", "x"}},
		{args: []string{"sh", "-c", "x"}, cmd: []string{"sh", "-c", "x"}},
		{args: []string{"--agent"}, bad: true},
		{args: []string{"--frobnicate", "--", "x"}, bad: true},
	} {
		agent, cmd, err := InitArgs(c.args)
		if (err != nil) != c.bad || agent != c.agent || len(cmd) != len(c.cmd) {
			t.Errorf("InitArgs(%q) = %q, %q, %v", c.args, agent, cmd, err)
			continue
		}
		for i := range cmd {
			if cmd[i] != c.cmd[i] {
				t.Errorf("InitArgs(%q) cmd = %q", c.args, cmd)
			}
		}
	}
}

// A sandbox that makes /etc/passwd a named pipe must not hang the runs that
// look a user up in it, nor, through them, every other run: the lookup does
// not wait for a writer, and says what is wrong.
func TestUserLookupInFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "passwd")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, agent.SocketName)
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Reaper: reaper, Log: slog.New(slog.DiscardHandler), Env: os.Environ(), passwd: fifo}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	runCtx := func(ctx context.Context, st agent.Start) (agent.Exit, error) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return agent.Run(ctx, agent.NewConn(c), st, agent.Stdio{})
	}
	for range 2 * startSlots {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := runCtx(ctx, agent.Start{Argv: []string{"true"}, User: "nobody"})
		cancel()
		var e *agent.Error
		if !errors.As(err, &e) || !strings.Contains(e.Message, "not a regular file") {
			t.Fatalf("a run as nobody with /etc/passwd a pipe: %v; want an error saying it is not a regular file", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if x, err := runCtx(ctx, agent.Start{Argv: []string{"true"}}); err != nil || x.Code != 0 {
		t.Fatalf("a plain run after them: %v %v", x, err)
	}
}

// Nor may a sandbox that makes /dev/null a named pipe hang its runs (a run
// without stdin gets /dev/null): it is refused, naming the file.
func TestDevNullFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "null")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, agent.SocketName)
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Reaper: reaper, Log: slog.New(slog.DiscardHandler), Env: os.Environ(), devNull: fifo}
	go s.Serve(l)
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = agent.Run(ctx, agent.NewConn(c), agent.Start{Argv: []string{"true"}}, agent.Stdio{})
	var e *agent.Error
	if !errors.As(err, &e) || !strings.Contains(e.Message, fifo+": not a device") {
		t.Fatalf("a run with /dev/null a pipe: %v; want an error naming it, not a device", err)
	}
}
