package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// MaxRun bounds a run that names no timeout, whatever its client does.
const MaxRun = 24 * time.Hour

// RunSession is a run whose sandbox is taken and whose process runner
// answers; Relay runs it for a client.
type RunSession struct {
	r     *Registry
	p     *Pool
	ref   *sandboxset.Ref
	agent *agent.Conn
	start agent.Start
	hello agent.Hello
	reuse bool
	ended sync.Once // the registry's count of sessions (Close waits for them)
	key   string    // its caller's (caller(ctx)); "" the administrator

	// exec: a command beside another session's (main), in its sandbox;
	// it neither holds nor gives back the sandbox.
	exec bool
	main *RunSession
	// Of a session that is not exec, guarded by r.mu: its exec sessions,
	// and done once its sandbox is on its way back (no exec may start).
	execs map[*RunSession]bool
	done  bool
}

// end counts the session out of the registry's sessions.
func (s *RunSession) end() { s.ended.Do(s.r.bg.Done) }

// Hello returns what the session tells its client first.
func (s *RunSession) Hello() agent.Hello { return s.hello }

// OpenRun takes a sandbox for req from its pool (or its image's) and
// connects to what runs commands in it. The caller must Relay or Abort the
// session.
func (r *Registry) OpenRun(ctx context.Context, req api.RunRequest) (*RunSession, error) {
	rn, ok := r.cfg.Provider.(Runner)
	if !ok {
		return nil, ErrNoExec
	}
	if err := spec.ValidateEnv(req.Env); err != nil {
		return nil, err
	}
	if req.Sandbox != "" {
		return r.openExec(ctx, rn, req)
	}
	p, err := r.poolFor(ctx, req.Pool, req.Image, req.User)
	if err != nil {
		return nil, err
	}
	argv, err := runArgv(ctx, p, req)
	if err != nil {
		return nil, err
	}
	ref, err := r.takeFrom(ctx, p)
	if err != nil {
		return nil, err
	}
	// Close waits for sessions: count this one in unless it is closing.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.finish(p, ref, false)
		return nil, fmt.Errorf("pool %q: %w", p.Name, sandboxset.ErrClosed)
	}
	r.bg.Add(1)
	r.mu.Unlock()
	conn, via, err := rn.Session(ctx, ref.Sandbox())
	if err != nil {
		// Counted apart (ol_shim_destroys_total{reason="no trusted
		// runner"}): a sandbox whose process posed as its agent lands here.
		id := ref.Sandbox().ID()
		if derr := ref.Destroy(ReasonNoRunner); derr != nil {
			r.log.Warn("destroy a sandbox with no runner", "pool", p.Name, "sandbox", id, "error", derr)
		}
		r.bg.Done()
		return nil, fmt.Errorf("run in sandbox %s: %w", id, err)
	}
	key, _ := caller(ctx)
	s := &RunSession{
		r: r, p: p, ref: ref, agent: agent.NewConn(conn), reuse: req.Reuse, key: key,
		start: agent.Start{Argv: argv, Env: req.Env, Dir: req.WorkingDir, User: req.User, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols},
		hello: agent.Hello{Pool: p.Name, Sandbox: ref.Sandbox().ID(), Outcome: ref.Outcome().String(), Via: via},
	}
	r.mu.Lock()
	if r.running == nil {
		r.running = map[string]*RunSession{}
	}
	r.running[s.hello.Sandbox] = s
	r.mu.Unlock()
	return s, nil
}

// openExec opens a session that runs req.Cmd in req.Sandbox beside the
// run that holds it, for that run's caller or the administrator. Another
// caller is told no run holds it, as if none did.
func (r *Registry) openExec(ctx context.Context, rn Runner, req api.RunRequest) (*RunSession, error) {
	if len(req.Cmd) == 0 || req.Cmd[0] == "" {
		return nil, fmt.Errorf("%w: exec in sandbox %q: no command", spec.ErrInvalidSpec, req.Sandbox)
	}
	key, limited := caller(ctx)
	r.mu.Lock()
	main := r.running[req.Sandbox]
	if main == nil || main.done || (limited && main.key != key) || r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("exec in sandbox %q: %w: no run of yours holds it", req.Sandbox, errdefs.ErrNotFound)
	}
	r.bg.Add(1)
	r.mu.Unlock()
	conn, via, err := rn.Session(ctx, main.ref.Sandbox())
	if err != nil {
		r.bg.Done()
		return nil, fmt.Errorf("exec in sandbox %s: %w", req.Sandbox, err)
	}
	s := &RunSession{
		r: r, p: main.p, ref: main.ref, agent: agent.NewConn(conn), key: key, exec: true, main: main,
		start: agent.Start{Argv: req.Cmd, Env: req.Env, Dir: req.WorkingDir, User: req.User, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols},
		hello: agent.Hello{Pool: main.p.Name, Sandbox: req.Sandbox, Outcome: "exec", Via: via},
	}
	r.mu.Lock()
	if main.done {
		r.mu.Unlock()
		s.agent.Close()
		s.end()
		return nil, fmt.Errorf("exec in sandbox %q: %w: its run has ended", req.Sandbox, errdefs.ErrNotFound)
	}
	if main.execs == nil {
		main.execs = map[*RunSession]bool{}
	}
	main.execs[s] = true
	r.mu.Unlock()
	return s, nil
}

// release marks a session's sandbox as on its way back: no exec starts in
// it any more, and those running are cut off (their process groups are
// killed as their connections close) before it goes. An exec session
// takes itself off its run's list.
func (s *RunSession) release() {
	s.r.mu.Lock()
	if s.exec {
		delete(s.main.execs, s)
		s.r.mu.Unlock()
		return
	}
	if s.done {
		s.r.mu.Unlock()
		return
	}
	s.done = true
	if s.r.running[s.hello.Sandbox] == s {
		delete(s.r.running, s.hello.Sandbox)
	}
	execs := s.execs
	s.execs = nil
	s.r.mu.Unlock()
	for e := range execs {
		e.agent.Close()
	}
}

// Abort ends a session that will not be relayed; its sandbox is destroyed.
func (s *RunSession) Abort() {
	s.agent.Close()
	s.release()
	if !s.exec {
		s.r.finish(s.p, s.ref, false)
	}
	s.end()
}

// Relay runs the session for client, which speaks the run protocol: the
// hello, then the client's start (its argv, env, dir, user and terminal are
// the session's, from the request; only whether stdin follows is the
// client's), then frames both ways until the process exits. The sandbox
// goes back to its pool if the request asked and the run ended cleanly,
// and is destroyed otherwise. The result is the exit, or why the run
// failed (also sent to the client as an error frame where it can be).
func (s *RunSession) Relay(ctx context.Context, client *agent.Conn) (agent.Exit, error) {
	clean, finished := false, s.exec // an exec's sandbox is its run's
	defer func() {
		s.agent.Close()
		s.release()
		if !finished {
			s.r.finish(s.p, s.ref, clean && s.reuse)
		}
		s.end()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.r.stopCtx, cancel)
	defer stop()
	fail := func(code int, err error) (agent.Exit, error) {
		_ = client.WriteJSON(agent.KindError, agent.Fail(code, "%v", err))
		return agent.Exit{}, err
	}
	if err := client.WriteJSON(agent.KindHello, s.hello); err != nil {
		return agent.Exit{}, fmt.Errorf("run: client: %w", err)
	}
	f, err := client.Read()
	if err != nil {
		return agent.Exit{}, fmt.Errorf("run: client: %w", err)
	}
	var st agent.Start
	if f.Kind != agent.KindStart {
		return fail(agent.CodeFailed, fmt.Errorf("%w: the client's first frame is %q, not a start", agent.ErrProtocol, f.Kind))
	}
	if err := agent.Decode(f, &st); err != nil {
		return fail(agent.CodeFailed, err)
	}
	start := s.start
	start.Stdin = st.Stdin
	if err := s.agent.WriteJSON(agent.KindStart, start); err != nil {
		return fail(agent.CodeFailed, fmt.Errorf("sandbox %s: send start: %w", s.hello.Sandbox, err))
	}

	// Either side going away, or ctx ending, ends the run: closing the
	// agent's connection kills the process group.
	clientGone := make(chan error, 1)
	go func() {
		if err := relayClient(client, s.agent); err != nil {
			clientGone <- err
			s.agent.Close()
		}
	}()
	done := context.AfterFunc(ctx, func() { s.agent.Close() })
	defer done()
	for {
		f, err := s.agent.Read()
		if err != nil {
			select {
			case cerr := <-clientGone:
				return agent.Exit{}, fmt.Errorf("run: client left: %w", cerr)
			default:
			}
			if ctx.Err() != nil {
				if s.r.stopCtx.Err() != nil {
					return fail(agent.CodeFailed, errors.New("the daemon is stopping"))
				}
				return fail(agent.CodeFailed, fmt.Errorf("run timed out: %w", context.DeadlineExceeded))
			}
			// The socket's addresses say nothing to the user (and the
			// agent's is the name it was bound under, not the one it has).
			var op *net.OpError
			if errors.As(err, &op) {
				err = op.Err
			}
			return fail(agent.CodeFailed, fmt.Errorf("sandbox %s: lost its process runner: %w", s.hello.Sandbox, err))
		}
		switch f.Kind {
		case agent.KindStdout, agent.KindStderr, agent.KindAck, agent.KindStarted:
			if err := client.Write(f.Kind, f.Payload); err != nil {
				return agent.Exit{}, fmt.Errorf("run: client: %w", err)
			}
		case agent.KindExit:
			var x agent.Exit
			if err := agent.Decode(f, &x); err != nil {
				return fail(agent.CodeFailed, err)
			}
			clean = true
			if !s.exec && (s.reuse || s.p.Config.Recycle) {
				// The sandbox is on its way back before the client hears
				// of the exit, so a client's next run finds it hot (or
				// waits for it). Closing the agent's connection kills what
				// the command left behind.
				s.agent.Close()
				s.release()
				s.r.finish(s.p, s.ref, s.reuse)
				finished = true
			}
			return x, client.WriteJSON(agent.KindExit, x)
		case agent.KindError:
			var e agent.Error
			if err := agent.Decode(f, &e); err != nil {
				return fail(agent.CodeFailed, err)
			}
			if e.Code != agent.CodeCannotRun && e.Code != agent.CodeNotFound {
				e.Code = agent.CodeFailed
			}
			clean = e.Code != agent.CodeFailed // nothing ran: the sandbox is as it was
			_ = client.WriteJSON(agent.KindError, e)
			return agent.Exit{}, &e
		default:
			return fail(agent.CodeFailed, fmt.Errorf("sandbox %s: %w: unexpected frame %q", s.hello.Sandbox, agent.ErrProtocol, f.Kind))
		}
	}
}

// relayClient forwards the client's stdin, resizes and signals to the
// agent until the client goes away or sends what it may not; that is its
// error. A write to the agent that fails ends the forwarding with no error:
// the agent's side reports its own failure.
func relayClient(client, to *agent.Conn) error {
	for {
		f, err := client.Read()
		if err != nil {
			return err
		}
		switch f.Kind {
		case agent.KindStdin, agent.KindResize, agent.KindSignal:
			if to.Write(f.Kind, f.Payload) != nil {
				return nil
			}
		default:
			return fmt.Errorf("%w: frame %q from a client", agent.ErrProtocol, f.Kind)
		}
	}
}

// finish puts a run's sandbox back (reuse), recycles it and puts it back
// as fresh (a recycle pool), or destroys it off the caller's path; the pool
// refills to its target as the destroy frees the slot.
func (r *Registry) finish(p *Pool, ref *sandboxset.Ref, reuse bool) {
	id := ref.Sandbox().ID()
	if reuse {
		// Off the caller's path: the run's client hears of its exit while
		// the sandbox is swept, and a Get meanwhile waits for it.
		// Counted in r.bg (the session's own count holds it above zero):
		// a daemon that stops without closing its pools waits for the
		// sweep and the pause, or the sandbox would be left half put back.
		r.bg.Add(1)
		ref.PutAsync(func(err error) {
			defer r.bg.Done()
			if err != nil {
				r.log.Warn("return sandbox after run", "pool", p.Name, "sandbox", id, "error", err)
			}
		})
		return
	}
	if rc, ok := Innermost(ref.Sandbox()).(Recycler); ok && p.Config.Recycle {
		err := rc.Recycle(r.stopCtx)
		if err == nil {
			p.recycled.Add(1)
			p.unhold(id)
			if err := ref.Put(); err != nil {
				r.log.Warn("return sandbox after recycle", "pool", p.Name, "sandbox", id, "error", err)
			}
			return
		}
		r.log.Warn("recycle failed; destroying the sandbox", "pool", p.Name, "sandbox", id, "error", err)
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			if err := ref.Destroy(ReasonRecycleFailed); err != nil {
				r.log.Warn("destroy after a failed recycle", "pool", p.Name, "sandbox", id, "error", err)
			}
		}()
		return
	}
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		if err := ref.DestroyDeferred(ReasonRunDone); err != nil {
			r.log.Warn("destroy after run", "pool", p.Name, "sandbox", id, "error", err)
		}
	}()
}

// Run runs a command in a sandbox of a pool (or of an image's pool) with
// req.Stdin as its stdin, and returns what it wrote, up to api.MaxOutput of
// each stream. By default the sandbox is destroyed afterwards and the pool
// refills in the background; with Reuse it goes back to the pool.
func (r *Registry) Run(ctx context.Context, req api.RunRequest) (*api.RunResult, error) {
	o, err := r.RunHeld(ctx, req)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return o.Result(), nil
}

// RunHeld is Run with the output held as RunOutput says (bounded memory),
// for a caller that writes it out; the caller closes it.
func (r *Registry) RunHeld(ctx context.Context, req api.RunRequest) (*RunOutput, error) {
	dir := filepath.Join(r.Root(), "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("run output: %w", err)
	}
	s, err := r.OpenRun(ctx, req)
	if err != nil {
		return nil, err
	}
	mine, theirs, err := agent.Pair()
	if err != nil {
		s.Abort()
		return nil, err
	}
	relayed := make(chan error, 1)
	go func() {
		_, err := s.Relay(ctx, agent.NewConn(theirs))
		theirs.Close()
		relayed <- err
	}()
	o := &RunOutput{
		stdout: &spilled{dir: dir, budget: &r.spill, max: api.MaxOutput},
		stderr: &spilled{dir: dir, budget: &r.spill, max: api.MaxOutput},
	}
	sio := agent.Stdio{Stdout: o.stdout, Stderr: o.stderr}
	if req.Stdin != nil {
		sio.Stdin = bytes.NewReader(req.Stdin)
	}
	x, err := agent.Run(ctx, agent.NewConn(mine), agent.Start{}, sio)
	mine.Close()
	rerr := <-relayed
	o.RunResult = api.RunResult{Pool: s.hello.Pool, Sandbox: s.hello.Sandbox, Outcome: s.hello.Outcome,
		ExitCode: x.Code, Truncated: o.stdout.cut || o.stderr.cut}
	var e *agent.Error
	switch {
	case errors.As(err, &e) && e.Code != agent.CodeFailed:
		// The command could not be started: that is its exit code, as in
		// a shell.
		o.ExitCode = e.Code
		o.extra = []byte("ol-shim: " + e.Message + "\n")
		return o, nil
	case errors.As(err, &e) && rerr != nil && !errors.As(rerr, &e):
		err = rerr // the daemon's own reason, with its class
	case errors.As(err, &e):
		err = errdefs.ErrUnavailable.WithMessage(e.Message)
	}
	if err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// ImageCommander is a Backend that knows its image's ENTRYPOINT and CMD
// (the Docker backend); a run in its sandboxes starts as docker run would.
type ImageCommander interface {
	ImageCommand(ctx context.Context) (entrypoint, cmd []string, err error)
}

// runArgv is what a run of req in pool p starts, as docker run has it: the
// entrypoint (the image's, or req's), then req's command or, with neither
// a command nor an entrypoint of req's, the image's CMD. In a pool with its
// own cmd (the sandbox's long-running process, which replaced the image's
// ENTRYPOINT and CMD) a run is what docker exec would start: req's
// entrypoint, if any, and command.
func runArgv(ctx context.Context, p *Pool, req api.RunRequest) ([]string, error) {
	var entrypoint, cmd []string
	if ic, ok := p.backend.(ImageCommander); ok && len(p.Config.Cmd) == 0 {
		var err error
		if entrypoint, cmd, err = ic.ImageCommand(ctx); err != nil {
			return nil, fmt.Errorf("run in pool %q: %w", p.Name, err)
		}
	}
	if req.Entrypoint != nil {
		entrypoint, cmd = *req.Entrypoint, nil // docker run drops the image's CMD too
	}
	args := req.Cmd
	if len(args) == 0 {
		args = cmd
	}
	argv := append(slices.Clip(entrypoint), args...)
	if len(argv) == 0 || argv[0] == "" {
		if len(p.Config.Cmd) > 0 {
			return nil, fmt.Errorf("%w: run: no command: name one (pool %q runs its own cmd; a run starts another)", spec.ErrInvalidSpec, p.Name)
		}
		return nil, fmt.Errorf("%w: run: no command: name one (image %q of pool %q has no ENTRYPOINT or CMD)", spec.ErrInvalidSpec, p.Config.Image, p.Name)
	}
	return argv, nil
}
