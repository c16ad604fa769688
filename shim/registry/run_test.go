package registry

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// runProvider is testProvider whose sandboxes run commands through session.
type runProvider struct {
	testProvider
	session func() io.ReadWriteCloser
}

func (p runProvider) Session(context.Context, sandboxset.Sandbox) (io.ReadWriteCloser, string, error) {
	return p.session(), "agent", nil
}

// dyingAgent takes the start frame, then refuses every write (its sandbox
// is gone) and reports EOF on read a little later.
type dyingAgent struct {
	writes int
	closed chan struct{}
}

func (a *dyingAgent) Write(p []byte) (int, error) {
	if a.writes++; a.writes <= 2 { // the start frame: its header, its payload
		return len(p), nil
	}
	return 0, errors.New("broken pipe")
}

func (a *dyingAgent) Read([]byte) (int, error) {
	select {
	case <-time.After(100 * time.Millisecond):
	case <-a.closed:
	}
	return 0, io.EOF
}

func (a *dyingAgent) Close() error {
	select {
	case <-a.closed:
	default:
		close(a.closed)
	}
	return nil
}

// A sandbox that dies while the client sends stdin: the client gets an
// error frame that names the sandbox, not a connection closed on it.
func TestRelayAgentDiesWhileClientSends(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	p := runProvider{testProvider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}}
	p.session = func() io.ReadWriteCloser { return &dyingAgent{closed: make(chan struct{})} }
	r, err := New(Config{Provider: p, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := r.OpenRun(ctx, api.RunRequest{Pool: "fn", Cmd: []string{"cat"}})
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs, err := agent.Pair()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		s.Relay(ctx, agent.NewConn(theirs))
		theirs.Close()
	}()
	_, err = agent.Run(ctx, agent.NewConn(mine), agent.Start{}, agent.Stdio{Stdin: strings.NewReader("some input\n")})
	var e *agent.Error
	if !errors.As(err, &e) || e.Code != agent.CodeFailed || !strings.Contains(e.Message, "sandbox") {
		t.Fatalf("run whose agent died: %#v; want an error frame of code 125 naming the sandbox", err)
	}
}

// A hostile API client that, mid-run, sends a frame header claiming 4 GiB
// (or a kind only the agent may send) is cut off at once: the relay ends
// with a protocol error without reading or holding the payload, and the
// agent's connection closes, so the process group is killed.
func TestRelayCutsOffHostileClient(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"4 GiB header", []byte{agent.KindStdin, 0xff, 0xff, 0xff, 0xff}},
		{"an exit frame", append([]byte{agent.KindExit, 0, 0, 0, 2}, "{}"...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			agentEnd, daemonEnd, err := agent.Pair()
			if err != nil {
				t.Fatal(err)
			}
			defer agentEnd.Close()
			mb := sandboxset.NewMockBackend()
			p := runProvider{testProvider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}}
			p.session = func() io.ReadWriteCloser { return daemonEnd }
			r, err := New(Config{Provider: p, Root: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(context.Background(), true)
			if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20}); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s, err := r.OpenRun(ctx, api.RunRequest{Pool: "fn", Cmd: []string{"sleep", "30"}})
			if err != nil {
				t.Fatal(err)
			}
			mine, theirs, err := agent.Pair()
			if err != nil {
				t.Fatal(err)
			}
			defer mine.Close()
			relayed := make(chan error, 1)
			go func() {
				_, err := s.Relay(ctx, agent.NewConn(theirs))
				relayed <- err
			}()
			cl := agent.NewConn(mine)
			if f, err := cl.Read(); err != nil || f.Kind != agent.KindHello {
				t.Fatalf("hello: %v %v", f, err)
			}
			if err := cl.WriteJSON(agent.KindStart, agent.Start{}); err != nil {
				t.Fatal(err)
			}
			if _, err := mine.Write(c.frame); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-relayed:
				if !errors.Is(err, agent.ErrProtocol) {
					t.Fatalf("relay ended with %v; want a protocol error", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the relay kept a hostile client")
			}
			// The agent's side sees its connection closed: the agent would
			// kill the process group.
			ac := agent.NewConn(agentEnd)
			agentEnd.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, err := ac.Read(); err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal("the agent's connection stayed open after the client was cut off")
					}
					return
				}
			}
		})
	}
}

// sweepingBackend makes mock sandboxes that are Cleaners whose sweep takes
// 300 ms.
type sweepingBackend struct {
	*sandboxset.MockBackend
}

type sweepingSandbox struct{ sandboxset.Sandbox }

func (b sweepingBackend) Create(ctx context.Context, sp sandboxset.Spec) (sandboxset.Sandbox, error) {
	sb, err := b.MockBackend.Create(ctx, sp)
	if err != nil {
		return nil, err
	}
	return sweepingSandbox{sb}, nil
}

func (sweepingSandbox) Mark(context.Context) error { return nil }

func (sweepingSandbox) Sweep(context.Context) (int, error) {
	time.Sleep(300 * time.Millisecond)
	return 0, nil
}

// sweepingProvider is runProvider whose pools' sandboxes sweep slowly.
type sweepingProvider struct{ runProvider }

func (p sweepingProvider) Pool(string, spec.PoolConfig) (sandboxset.Backend, sandboxset.ScratchMaker, error) {
	return sweepingBackend{MockBackend: p.b}, p.scratch, nil
}

// A --reuse run's client hears the exit before its sandbox is put back
// (swept, then paused in a pool with no pause grace): a daemon that stops
// then without closing its pools (Close without destroy) still waits for
// that put, or the sandbox is left half put back for the next start.
// Before the put was counted, Close returned during the sweep.
func TestCloseWaitsForRunsPutBack(t *testing.T) {
	mb := sandboxset.NewMockBackend()
	p := sweepingProvider{runProvider{testProvider: testProvider{b: mb, scratch: sandboxset.DirScratch{Root: t.TempDir()}}}}
	p.session = func() io.ReadWriteCloser {
		mine, theirs, err := agent.Pair()
		if err != nil {
			t.Error(err)
			return nil
		}
		go func() { // an agent whose command exits at once
			defer theirs.Close()
			c := agent.NewConn(theirs)
			if _, err := c.Read(); err != nil {
				return
			}
			_ = c.WriteJSON(agent.KindExit, agent.Exit{})
			_, _ = c.Read() // until the daemon closes its side
		}()
		return mine
	}
	r, err := New(Config{Provider: p, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutPool(context.Background(), "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := r.OpenRun(ctx, api.RunRequest{Pool: "fn", Cmd: []string{"true"}, Reuse: true})
	if err != nil {
		t.Fatal(err)
	}
	id := s.Hello().Sandbox
	mine, theirs, err := agent.Pair()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		s.Relay(ctx, agent.NewConn(theirs))
		theirs.Close()
	}()
	if x, err := agent.Run(ctx, agent.NewConn(mine), agent.Start{}, agent.Stdio{}); err != nil || x.Code != 0 {
		t.Fatalf("run: %+v, %v", x, err)
	}
	if err := r.Close(ctx, false); err != nil {
		t.Fatal(err)
	}
	if sb := mb.Lookup(id); sb == nil || !sb.Paused() {
		t.Fatalf("sandbox %s after Close: %v; want it there and paused, its put finished", id, sb)
	}
}

// imageBackend is a mock whose image has an ENTRYPOINT and a CMD.
type imageBackend struct {
	*sandboxset.MockBackend
	entrypoint, cmd []string
}

func (b imageBackend) ImageCommand(context.Context) ([]string, []string, error) {
	return b.entrypoint, b.cmd, nil
}

// A run starts what docker run would: the image's ENTRYPOINT, then the
// run's command or else the image's CMD; --entrypoint replaces the
// ENTRYPOINT and drops the CMD; nothing at all is refused, naming the image.
// In a pool with its own cmd, what docker exec would.
func TestRunArgvAsDockerRun(t *testing.T) {
	ep := func(v ...string) *[]string { return &v }
	for _, c := range []struct {
		entrypoint, cmd []string // the image's
		poolCmd         []string
		req             api.RunRequest
		want            []string
		err             string
	}{
		// A pool with its own cmd: runs as docker exec would.
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, poolCmd: []string{"/srv"}, req: api.RunRequest{Cmd: []string{"x"}}, want: []string{"x"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, poolCmd: []string{"/srv"}, req: api.RunRequest{Cmd: []string{"-c", "y"}, Entrypoint: ep("sh")}, want: []string{"sh", "-c", "y"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, poolCmd: []string{"/srv"}, err: `pool "p" runs its own cmd`},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, want: []string{"/bin/echo", "ep", "dflt"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, req: api.RunRequest{Cmd: []string{"x", "y"}}, want: []string{"/bin/echo", "ep", "x", "y"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, req: api.RunRequest{Cmd: []string{"-c", "z"}, Entrypoint: ep("sh")}, want: []string{"sh", "-c", "z"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, req: api.RunRequest{Entrypoint: ep("env")}, want: []string{"env"}},
		{entrypoint: []string{"/bin/echo", "ep"}, cmd: []string{"dflt"}, req: api.RunRequest{Cmd: []string{"true"}, Entrypoint: ep()}, want: []string{"true"}},
		{cmd: []string{"/runtime"}, want: []string{"/runtime"}},
		{cmd: []string{"/runtime"}, req: api.RunRequest{Cmd: []string{"true"}}, want: []string{"true"}},
		{req: api.RunRequest{}, err: `no command: name one (image "img" of pool "p" has no ENTRYPOINT or CMD)`},
		{entrypoint: []string{"/bin/echo"}, req: api.RunRequest{Entrypoint: ep()}, err: "no command"},
		{req: api.RunRequest{Cmd: []string{""}}, err: "no command"},
	} {
		p := &Pool{Name: "p", Config: spec.PoolConfig{Image: "img"}, backend: imageBackend{entrypoint: c.entrypoint, cmd: c.cmd}}
		p.Config.Cmd = c.poolCmd
		got, err := runArgv(context.Background(), p, c.req)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, spec.ErrInvalidSpec) {
				t.Errorf("image %q %q, run %+v: %q, %v; want an invalid-spec error containing %q", c.entrypoint, c.cmd, c.req, got, err, c.err)
			}
		case err != nil || !slices.Equal(got, c.want):
			t.Errorf("image %q %q, run %+v: %q, %v; want %q", c.entrypoint, c.cmd, c.req, got, err, c.want)
		}
	}
	// The image's lists are its own: a run's arguments never land in them.
	ib := imageBackend{entrypoint: make([]string, 1, 8), cmd: []string{"c"}}
	ib.entrypoint[0] = "e"
	p := &Pool{Name: "p", backend: ib}
	if _, err := runArgv(context.Background(), p, api.RunRequest{Cmd: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if got := ib.entrypoint[:2]; got[1] != "" {
		t.Errorf("a run wrote into the image's ENTRYPOINT's array: %q", got)
	}
}
