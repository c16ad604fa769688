package runcli

import (
	"errors"
	"reflect"
	"testing"

	"github.com/open-lambda/ol-shim/shim/api/wire"
)

func TestParse(t *testing.T) {
	t.Setenv("OL_SHIM_SOCKET", "")
	yes, no := true, false
	for _, c := range []struct {
		args    []string
		want    Options
		version bool
		err     string // "" ok; "handover"; else the message
	}{
		{args: []string{"--version"}, version: true},
		{args: []string{"version"}, err: "handover"}, // client and server: ol-shimd's
		{args: []string{"run", "--pool", "p", "true"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Pool: "p", Cmd: []string{"true"}}}}},
		{args: []string{"--socket", "/s", "run", "-it", "-e", "A=1", "--env=B=2", "-w", "/tmp", "-u=1000", "--reuse", "--timeout", "5s", "img", "sh", "-c", "x"},
			want: Options{Socket: "/s", Interactive: &yes, Call: wire.RunCall{Timeout: "5s", RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"sh", "-c", "x"}, Env: []string{"A=1", "B=2"}, WorkingDir: "/tmp", User: "1000", TTY: true, Reuse: true}}}},
		{args: []string{"--socket=/s", "run", "-i=false", "--rm", "img", "--", "-x"}, want: Options{Socket: "/s", Interactive: &no, Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"--", "-x"}}}}},
		{args: []string{"run", "--", "img", "cmd", "-i"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"cmd", "-i"}}}}},
		{args: []string{"run", "--reuse", "--rm", "img", "true"}, err: "run: --rm and --reuse: choose one"},
		{args: []string{"run", "--rm=false", "img", "true"}, err: "run: --rm=false: a run's sandbox is destroyed after it unless --reuse gives it back to its pool; say --reuse"},
		{args: []string{"run", "--rm=false", "--reuse", "img", "true"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"true"}, Reuse: true}}}},
		{args: []string{"run", "img"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{}}}}}, // the image's CMD
		{args: []string{"run", "--entrypoint", "/bin/sh", "img", "-c", "x"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"-c", "x"}, Entrypoint: &[]string{"/bin/sh"}}}}},
		{args: []string{"run", "--entrypoint=", "--pool", "p", "true"}, want: Options{Call: wire.RunCall{RunRequest: wire.RunRequest{Pool: "p", Cmd: []string{"true"}, Entrypoint: &[]string{}}}}},
		{args: []string{"run"}, err: "run: name an IMAGE (or --pool)"},
		{args: []string{"run", "--timeout", "0s", "img", "true"}, err: "--timeout 0s: want a positive duration like 30s"},
		{args: []string{"run", "--timeout", "soon", "img", "true"}, err: "handover"},
		{args: []string{"run", "--help"}, err: "handover"},
		{args: []string{"run", "-x", "img", "true"}, err: "handover"},
		{args: []string{"run", "--pool"}, err: "handover"},
		{args: []string{"status"}, err: "handover"},
		{args: nil, err: "handover"},
		{args: []string{"--help"}, err: "handover"},
		{args: []string{"--socket", "/s"}, err: "handover"},
		// A remote daemon (TLS) is ol-shimd's to reach.
		{args: []string{"--host", "tcp://h:1", "run", "img", "true"}, err: "handover"},
		{args: []string{"-H", "tcp://h:1", "run", "img", "true"}, err: "handover"},
		{args: []string{"--host=nonsense", "run", "img", "true"}, err: "handover"},
		{args: []string{"-H", "unix://", "run", "img", "true"}, err: "handover"},
		// A unix:// host is a local socket, and wins over --socket.
		{args: []string{"-H", "unix:///h.sock", "run", "img", "true"}, want: Options{Socket: "/h.sock", Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"true"}}}}},
		{args: []string{"--host=unix:///h.sock", "--socket", "/s", "run", "img", "true"}, want: Options{Socket: "/h.sock", Call: wire.RunCall{RunRequest: wire.RunRequest{Image: "img", Cmd: []string{"true"}}}}},
		{args: []string{"-H", "unix:///h.sock", "--version"}, version: true},
	} {
		o, v, err := Parse(c.args)
		switch {
		case c.err == "handover":
			if !errors.Is(err, errHandOver) {
				t.Errorf("Parse(%q): %v; want it handed over", c.args, err)
			}
			continue
		case c.err != "":
			if err == nil || err.Error() != c.err {
				t.Errorf("Parse(%q): %v; want %q", c.args, err, c.err)
			}
			continue
		case err != nil:
			t.Errorf("Parse(%q): %v", c.args, err)
			continue
		}
		if v != c.version {
			t.Errorf("Parse(%q): version %v", c.args, v)
			continue
		}
		if c.version {
			continue
		}
		if c.want.Socket == "" {
			c.want.Socket = wire.DefaultSocket
		}
		if !reflect.DeepEqual(o, c.want) {
			t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", c.args, o, c.want)
		}
	}
	t.Setenv("OL_SHIM_HOST", "tcp://h:1")
	if _, _, err := Parse([]string{"run", "img", "true"}); !errors.Is(err, errHandOver) {
		t.Errorf("run with OL_SHIM_HOST set: %v; want it handed over", err)
	}
	// OL_SHIM_HOST=unix://PATH stays on the lean path; a --host given
	// overrides it.
	t.Setenv("OL_SHIM_HOST", "unix:///env.sock")
	if o, _, err := Parse([]string{"--socket", "/s", "run", "img", "true"}); err != nil || o.Socket != "/env.sock" {
		t.Errorf("run with OL_SHIM_HOST=unix:///env.sock: socket %q, %v; want /env.sock", o.Socket, err)
	}
	if _, _, err := Parse([]string{"-H", "tcp://h:1", "run", "img", "true"}); !errors.Is(err, errHandOver) {
		t.Errorf("-H tcp://h:1 over OL_SHIM_HOST=unix://: %v; want it handed over", err)
	}
}
