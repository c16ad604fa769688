package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// serve answers every connection on a new socket with answer (after
// reading the request), or streams junk forever when answer is empty.
func serve(t *testing.T, answer string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.Read(buf)
				if answer == "" {
					line := []byte("X-Junk: " + strings.Repeat("a", 1000) + "\r\n")
					c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n"))
					for {
						if _, err := c.Write(line); err != nil {
							return
						}
					}
				}
				c.Write([]byte(answer))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return sock
}

// What answers on the socket may be anything: a header without end is cut
// at its bound, a status line that is not HTTP is refused, an error answer
// becomes a StatusError with its message, and an upgrade hands over what
// came after its head.
func TestDialRunAnswers(t *testing.T) {
	ctx := context.Background()
	call := RunCall{RunRequest: RunRequest{Pool: "p", Cmd: []string{"true"}}}

	if _, err := DialRun(ctx, serve(t, ""), call, nil); err == nil || !strings.Contains(err.Error(), "header longer than") {
		t.Errorf("endless header: %v", err)
	}
	if _, err := DialRun(ctx, serve(t, "SSH-2.0-x\r\n\r\n"), call, nil); err == nil || !strings.Contains(err.Error(), "not an HTTP/1 status line") {
		t.Errorf("not HTTP: %v", err)
	}
	_, err := DialRun(ctx, serve(t, "HTTP/1.1 404 Not Found\r\nContent-Length: 30\r\n\r\n{\"message\":\"pool \\\"p\\\": gone\"}"), call, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 404 || se.Message != `pool "p": gone` {
		t.Errorf("error answer: %v", err)
	}
	if _, err := DialRun(ctx, serve(t, "HTTP/1.1 200 OK\r\n\r\n"), call, nil); err == nil || !strings.Contains(err.Error(), "not an upgrade") {
		t.Errorf("200 without an upgrade: %v", err)
	}
	c, err := DialRun(ctx, serve(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+RunUpgrade+"\r\n\r\nhello"), call, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
		t.Errorf("after the upgrade: %q, %v", b, err)
	}
	if _, err := DialRun(ctx, filepath.Join(t.TempDir(), "none.sock"), call, nil); !errors.Is(err, ErrUnreachable) {
		t.Errorf("no daemon: %v", err)
	}
}
