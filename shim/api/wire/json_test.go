package wire

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The run's body, written by hand, is json.Marshal's, byte for byte.
func TestRunCallJSONIsMarshal(t *testing.T) {
	for _, c := range []RunCall{
		{},
		{RunRequest: RunRequest{Image: "busybox", Cmd: []string{"true"}, Reuse: true}},
		{RunRequest: RunRequest{Pool: "p", Cmd: []string{}, Env: []string{"A=<b>&c", "Z=\u2028\u2029"}, WorkingDir: "/w\"d", User: "1:2", TTY: true, Rows: 24, Cols: 80, Stdin: []byte{0, 1, 2, 0xff}}, Timeout: "3s"},
		{RunRequest: RunRequest{Cmd: []string{"sh", "-c", "printf '\\b\\f\\n\\r\\t\x01\x1f\x7f' \xff\xfe é 😀"}}},
		{RunRequest: RunRequest{Image: "i", Entrypoint: &[]string{}}},
		{RunRequest: RunRequest{Sandbox: "fn-0123456789abcdef", Cmd: []string{"sh"}, User: "0:0"}},
		{RunRequest: RunRequest{Image: "i", Cmd: []string{"x"}, Entrypoint: &[]string{"/bin/sh", "-c"}}},
		{RunRequest: RunRequest{Image: "i", Entrypoint: new([]string)}},
	} {
		checkRunCallJSON(t, c)
	}
}

func FuzzRunCallJSON(f *testing.F) {
	f.Add("pool", "image", "cmd", "env=1", "/dir", "user", "1s", []byte("in"), true, true, uint16(3), uint16(4), "")
	f.Add("", "", "\xff<\u2028>&\"\\\x00", "", "", "", "", []byte(nil), false, false, uint16(0), uint16(0), "/bin/<ep>")
	f.Fuzz(func(t *testing.T, pool, image, cmd, env, dir, user, timeout string, stdin []byte, tty, reuse bool, rows, cols uint16, entrypoint string) {
		c := RunCall{RunRequest: RunRequest{Pool: pool, Image: image, Cmd: []string{cmd, cmd + env}, WorkingDir: dir, User: user, TTY: tty, Rows: rows, Cols: cols, Stdin: stdin, Reuse: reuse}, Timeout: timeout}
		if env != "" {
			c.Env = []string{env}
		}
		switch {
		case entrypoint == "-":
			c.Entrypoint = &[]string{}
		case entrypoint != "":
			c.Entrypoint = &[]string{entrypoint}
		}
		checkRunCallJSON(t, c)
	})
}

func checkRunCallJSON(t *testing.T, c RunCall) {
	t.Helper()
	want, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.AppendJSON(nil); string(got) != string(want) {
		t.Fatalf("AppendJSON(%#v)\n got %s\nwant %s", c, got, want)
	}
}

// TestDialHint: a socket this user may not open names the group that may
// (not "start the daemon", which is running); a missing one says how to
// start it.
func TestDialHint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skip("this process's group has no name here")
	}
	if h := DialHint(sock, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}); !strings.Contains(h, fmt.Sprintf("group %q", g.Name)) || strings.Contains(h, "systemctl") {
		t.Errorf("permission denied: hint %q; want the socket's group, %q", h, g.Name)
	}
	if h := DialHint(sock+".missing", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}); !strings.Contains(h, "systemctl start ol-shim") {
		t.Errorf("no socket: hint %q; want how to start the daemon", h)
	}
}
