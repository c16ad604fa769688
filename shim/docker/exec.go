package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// Session returns a connection that speaks the run protocol for the
// sandbox: to its agent, or, when the agent does not answer, to a stand-in
// in this process that runs the command through docker exec (via "exec").
func (s *Sandbox) Session(ctx context.Context) (io.ReadWriteCloser, string, error) {
	c, err := s.DialAgent(ctx)
	if err == nil {
		return c, "agent", nil
	}
	if errors.Is(err, ErrImpostor) {
		// Not a way around the check: the sandbox is destroyed, and the
		// run is not served through docker exec either.
		s.d.impostors.Add(1)
		s.d.log.Error("a process of the sandbox poses as its agent; destroying it", "sandbox", s.id, "container", s.container, "error", err)
		return nil, "", err
	}
	if s.d.agentOn() {
		s.d.log.Warn("the sandbox's agent does not answer; running through docker exec", "sandbox", s.id, "error", err)
	}
	mine, theirs, err := agent.Pair()
	if err != nil {
		return nil, "", err
	}
	// The exec lives as long as the session, not as the call that opened
	// it; closing the session ends it.
	go s.serveExec(context.WithoutCancel(ctx), agent.NewConn(theirs))
	return mine, "exec", nil
}

// serveExec answers the run protocol on c by running the start frame's
// command with docker exec. Docker has no kill for an exec: signals, and
// the SIGKILL for a client that goes away, go to the exec's process from
// here (see signalExec).
func (s *Sandbox) serveExec(ctx context.Context, c *agent.Conn) {
	defer c.Close()
	fail := func(err error) {
		_ = c.WriteJSON(agent.KindError, agent.Fail(agent.CodeFailed, "exec in sandbox %s: %v", s.id, err))
	}
	f, err := c.Read()
	if err != nil {
		return
	}
	var st agent.Start
	if f.Kind != agent.KindStart {
		fail(fmt.Errorf("%w: first frame %q, not a start", agent.ErrProtocol, f.Kind))
		return
	}
	if err := agent.Decode(f, &st); err != nil {
		fail(err)
		return
	}
	if len(st.Argv) == 0 || st.Argv[0] == "" {
		_ = c.WriteJSON(agent.KindError, agent.Fail(agent.CodeCannotRun, "no command"))
		return
	}
	size := client.ConsoleSize{Height: uint(st.Rows), Width: uint(st.Cols)}
	var ex client.ExecCreateResult
	err = pauseLag(ctx, "is paused", func() error {
		cctx, cancel := s.d.callCtx(ctx)
		defer cancel()
		var err error
		ex, err = s.d.cli.ExecCreate(cctx, s.container, client.ExecCreateOptions{
			Cmd: st.Argv, Env: st.Env, WorkingDir: st.Dir, User: st.User, TTY: st.TTY, ConsoleSize: size,
			AttachStdin: st.Stdin, AttachStdout: true, AttachStderr: true,
		})
		return err
	})
	if err != nil {
		fail(err)
		return
	}
	att, err := s.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{TTY: st.TTY, ConsoleSize: size})
	if err != nil {
		fail(fmt.Errorf("attach: %w", err))
		return
	}
	defer att.Close()
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	_ = c.WriteJSON(agent.KindStarted, agent.Started{})

	// The client's frames: stdin to the exec, resizes to dockerd.
	var ended atomic.Bool // the command's exit was seen
	defer ended.Store(true)
	go func() {
		for {
			f, err := c.Read()
			if err != nil {
				// The client left before the command's end: the command goes
				// with it, as with the agent. (After the end, the session's
				// close lands here too, with nothing to kill.)
				if ended.Load() {
					att.Close()
					return
				}
				if err := s.signalExec(ctx, ex.ID, syscall.SIGKILL); err != nil {
					s.d.log.Debug("kill a command run through docker exec whose client left", "sandbox", s.id, "error", err)
				}
				att.Close()
				return
			}
			switch f.Kind {
			case agent.KindStdin:
				if len(f.Payload) == 0 {
					_ = att.CloseWrite()
					continue
				}
				if _, err := att.Conn.Write(f.Payload); err != nil {
					continue
				}
				_ = c.Write(agent.KindAck, agent.Ack(len(f.Payload)))
			case agent.KindResize:
				var r agent.Resize
				if agent.Decode(f, &r) == nil {
					_, _ = s.d.cli.ExecResize(ctx, ex.ID, client.ExecResizeOptions{Height: uint(r.Rows), Width: uint(r.Cols)})
				}
			case agent.KindSignal:
				if len(f.Payload) != 1 || f.Payload[0] == 0 || f.Payload[0] > 64 {
					continue
				}
				if err := s.signalExec(ctx, ex.ID, syscall.Signal(f.Payload[0])); err != nil {
					s.d.log.Warn("a signal for a command run through docker exec was not delivered", "sandbox", s.id, "signal", int(f.Payload[0]), "error", err)
				}
			}
		}
	}()
	// The output is held until dockerd shows the process started: a start
	// that fails (no such user, command or directory) writes dockerd's
	// error into the output stream, and that is the run's error.
	gate := &startGate{c: c}
	polled := make(chan struct{})
	streamed := make(chan struct{})
	go func() {
		defer close(polled)
		for deadline := time.Now().Add(startWait); time.Now().Before(deadline); {
			cctx, cancel := s.d.callCtx(ctx)
			insp, err := s.d.cli.ExecInspect(cctx, ex.ID, client.ExecInspectOptions{})
			cancel()
			if err != nil || insp.PID > 0 {
				break
			}
			select {
			case <-streamed:
				return // what the output was is told by its end
			case <-time.After(10 * time.Millisecond):
			}
		}
		gate.release()
	}()
	stdout, stderr := gatedWriter{gate, agent.KindStdout}, gatedWriter{gate, agent.KindStderr}
	if st.TTY {
		_, err = io.Copy(stdout, att.Reader)
	} else {
		_, err = stdcopy.StdCopy(stdout, stderr, att.Reader)
	}
	close(streamed)
	// The output's end is the command's: the client's going from here on
	// (the session's close after the last frame) has nothing to kill.
	ended.Store(true)
	<-polled
	if err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		gate.release()
		fail(fmt.Errorf("read output: %w", err))
		return
	}
	cctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	insp, err := s.d.cli.ExecInspect(cctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		gate.release()
		fail(fmt.Errorf("inspect: %w", err))
		return
	}
	if msg, failed := gate.startError(insp); failed {
		_ = c.WriteJSON(agent.KindError, agent.Fail(startErrorCode(msg), "%s", msg))
		return
	}
	gate.release()
	if insp.Running {
		fail(errors.New("output closed while the command still runs"))
		return
	}
	x := agent.Exit{Code: insp.ExitCode}
	if x.Code > 128 && x.Code < 128+65 {
		x.Signal = x.Code - 128
	}
	_ = c.WriteJSON(agent.KindExit, x)
}

// signalExec sends sig to the process of a running exec. dockerd reports
// the process's pid in its own pid namespace, which is the daemon's where
// it runs beside dockerd (as installed); the process is signalled only if
// a pidfd taken on that pid names a process of this sandbox's container
// (its cgroup path holds the container's ID) that was still alive after
// the check, so neither a reused pid nor another pid namespace's process
// gets it.
func (s *Sandbox) signalExec(ctx context.Context, execID string, sig syscall.Signal) error {
	cctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	// dockerd records the exec's pid only once its start returns, which
	// can be after the command's first output (it says running before).
	var insp client.ExecInspectResult
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if insp, err = s.d.cli.ExecInspect(cctx, execID, client.ExecInspectOptions{}); err != nil {
			return err
		}
		if insp.PID > 0 || time.Now().After(deadline) {
			break
		}
	}
	if !insp.Running || insp.PID <= 0 {
		return fmt.Errorf("the command is not running (dockerd: running %v, pid %d, exit code %d)", insp.Running, insp.PID, insp.ExitCode)
	}
	fd, err := unix.PidfdOpen(insp.PID, 0)
	if err != nil {
		return fmt.Errorf("pidfd of pid %d: %w", insp.PID, err)
	}
	defer unix.Close(fd)
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", insp.PID))
	if err != nil {
		return err
	}
	if !strings.Contains(string(cg), s.container) {
		return fmt.Errorf("pid %d is not in container %.12s here (another pid namespace than dockerd's?)", insp.PID, s.container)
	}
	// Alive now, so alive when its cgroup was read: that was this process.
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
		return fmt.Errorf("pid %d: %w", insp.PID, err)
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

// startWait bounds how long output is held for dockerd to show that an
// exec's process started; after it the output flows as it comes.
const startWait = 2 * time.Second

// maxHeld bounds the output held before a start is known: dockerd's error
// for a failed start is one short line.
const maxHeld = 64 << 10

// startGate holds an exec's output frames until it is released, then
// passes them on in order.
type startGate struct {
	c    *agent.Conn
	mu   sync.Mutex
	open bool
	held []heldFrame
	size int
}

type heldFrame struct {
	kind byte
	p    []byte
}

func (g *startGate) write(kind byte, p []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		return g.c.WriteData(kind, p)
	}
	g.held = append(g.held, heldFrame{kind, bytes.Clone(p)})
	if g.size += len(p); g.size > maxHeld {
		return g.releaseLocked()
	}
	return nil
}

func (g *startGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = g.releaseLocked()
}

func (g *startGate) releaseLocked() error {
	if g.open {
		return nil
	}
	g.open = true
	held := g.held
	g.held = nil
	for _, f := range held {
		if err := g.c.WriteData(f.kind, f.p); err != nil {
			return err
		}
	}
	return nil
}

// startError tells, once the output ended, whether the exec's process
// never started (dockerd recorded no pid and gave a failing code: 126 in
// Docker 20.10 whatever the cause) and, if so, the error dockerd wrote in
// its place; the held output is then dropped.
func (g *startGate) startError(insp client.ExecInspectResult) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open || insp.Running || insp.PID > 0 || insp.ExitCode == 0 {
		return "", false
	}
	var b strings.Builder
	for _, f := range g.held {
		b.Write(f.p)
	}
	g.held, g.open = nil, true
	msg := strings.TrimSpace(strings.ToValidUTF8(b.String(), "?"))
	if msg == "" {
		msg = fmt.Sprintf("the command did not start (docker exec gave %d and no reason)", insp.ExitCode)
	}
	return msg, true
}

// startErrorCode gives docker run's exit code for a start that failed:
// 127 for a command not found, 126 for one that cannot be invoked.
func startErrorCode(msg string) int {
	for _, s := range []string{"executable file not found", "no such file or directory"} {
		if strings.Contains(msg, s) {
			return agent.CodeNotFound
		}
	}
	return agent.CodeCannotRun
}

// gatedWriter writes what it is given as frames of one kind, through a
// gate.
type gatedWriter struct {
	g    *startGate
	kind byte
}

func (w gatedWriter) Write(p []byte) (int, error) {
	if err := w.g.write(w.kind, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
