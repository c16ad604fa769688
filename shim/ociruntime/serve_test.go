package ociruntime

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeDaemon answers every runtime check with serve (the worst case: a
// daemon that would serve anything), counting the checks.
func fakeDaemon(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				n.Add(1)
				body := `{"serve":true,"image":"img","pool":"p"}`
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	return sock, &n
}

// TestTryCreateRefusesBadBundles (issue 34, bad input): a bundle whose
// config.json is malformed, huge, not a file, or a FIFO that never ends,
// and a container id with odd characters, are not served: TryCreate says
// why (the runtime hands them to runc, which reports its own error),
// promptly, without asking the daemon where it need not, and leaves
// nothing under its root or beside it.
func TestTryCreateRefusesBadBundles(t *testing.T) {
	sock, checks := fakeDaemon(t)
	good := `{"process":{"args":["true"],"user":{"uid":0,"gid":0}},"mounts":[{"destination":"/proc"}]}`
	cases := []struct {
		name, id string
		config   func(path string) error
	}{
		{"malformed", "c1", func(p string) error { return os.WriteFile(p, []byte(`{"process":{"args":[`), 0o600) }},
		{"wrong types", "c2", func(p string) error { return os.WriteFile(p, []byte(`{"process":{"args":"true"}}`), 0o600) }},
		{"huge", "c3", func(p string) error {
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(1 << 40) // sparse: 1 TiB of nothing
		}},
		{"a directory", "c4", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"a FIFO", "c5", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
		{"no process", "c6", func(p string) error { return os.WriteFile(p, []byte(`{}`), 0o600) }},
		{"an extra mount", "c7", func(p string) error {
			return os.WriteFile(p, []byte(`{"process":{"args":["true"]},"mounts":[{"destination":"/data"}]}`), 0o600)
		}},
		{"id ..", "..", nil},
		{"id .", ".", nil},
		{"id with a slash", "a/../../x", nil},
		{"id with a NUL", "a\x00b", nil},
		{"id that is a flag", "--bundle", nil},
		{"long id", strings.Repeat("a", 300), nil},
		{"id with a newline", "a\nb", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "root")
			bundle := filepath.Join(dir, "bundle")
			if err := os.Mkdir(bundle, 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(bundle, "config.json")
			var err error
			if c.config != nil {
				err = c.config(cfg)
			} else {
				err = os.WriteFile(cfg, []byte(good), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			before := checks.Load()
			type result struct {
				served bool
				why    string
				err    error
			}
			done := make(chan result, 1)
			go func() {
				served, why, err := TryCreate(Args{Root: root, Socket: sock, Command: "create", Rest: []string{"--bundle", bundle, c.id}})
				done <- result{served, why, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("TryCreate did not return within 10 s")
			}
			t.Logf("served %v, why %q, err %v", r.served, r.why, r.err)
			if r.served || r.err != nil || r.why == "" {
				t.Errorf("served %v, err %v, why %q: want not served, and why", r.served, r.err, r.why)
			}
			if c.config != nil && checks.Load() != before {
				t.Errorf("the daemon was asked about a bundle the runtime cannot read")
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != "bundle" && e.Name() != "root" {
					t.Errorf("left %s beside the root", e.Name())
				}
			}
			if ents, _ := os.ReadDir(root); len(ents) > 0 {
				t.Errorf("left %d entries under the root", len(ents))
			}
		})
	}
}
