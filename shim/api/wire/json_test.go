package wire

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
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

// TestRunCallJSONHasEveryField: a RunCall with every field set (found by
// reflection, so a field added to RunRequest and forgotten by AppendJSON
// fails here) is written as json.Marshal writes it.
func TestRunCallJSONHasEveryField(t *testing.T) {
	var c RunCall
	fill(reflect.ValueOf(&c).Elem())
	got := string(c.AppendJSON(nil))
	want, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("AppendJSON of a call with every field set:\n%s\nwant json.Marshal's:\n%s", got, want)
	}
}

// fill sets every field of v, recursively, to a value that is not its
// zero.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.String:
		v.SetString("x" + v.Type().Name())
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem())
		v.Set(p)
	default:
		panic("fill: kind " + v.Kind().String() + " not covered")
	}
}
