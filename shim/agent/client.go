package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Stdio is what a client connects to a run.
type Stdio struct {
	Stdin          io.Reader // nil: no stdin
	Stdout, Stderr io.Writer
	Resize         <-chan Resize // terminal size changes, with Start.TTY
	Signals        <-chan int    // signals to deliver
	Hello          func(Hello)   // called with the daemon's hello, if one comes
}

// Run starts st on c and runs it to its end: stdin is sent within the
// window, output written as it comes, resizes and signals forwarded. It
// returns the exit frame, or an *Error from an error frame, or what broke
// the connection. When ctx ends, the connection is closed (so the process
// group is killed) and ctx's error returned.
func Run(ctx context.Context, c *Conn, st Start, sio Stdio) (Exit, error) {
	st.Stdin = sio.Stdin != nil
	if err := c.WriteJSON(KindStart, st); err != nil {
		return Exit{}, fmt.Errorf("send start: %w", err)
	}
	return RunStarted(ctx, c, sio)
}

// StartFrame is the start frame Run sends for st and sio, for a caller
// that sends it itself, ahead of the connection's upgrade (one round trip
// less), and then calls RunStarted.
func StartFrame(st Start, sio Stdio) ([]byte, error) {
	st.Stdin = sio.Stdin != nil
	if st.emptyButStdin() {
		// A client's usual start, which the daemon completes from the
		// request: what json.Marshal writes, without its first call's
		// cost (a tenth of a millisecond on the run's path).
		payload := `{"argv":null}`
		if st.Stdin {
			payload = `{"argv":null,"stdin":true}`
		}
		var b bytes.Buffer
		if err := NewConn(&b).Write(KindStart, []byte(payload)); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	var b bytes.Buffer
	if err := NewConn(&b).WriteJSON(KindStart, st); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// RunStarted is Run once the start frame is sent (see StartFrame).
func RunStarted(ctx context.Context, c *Conn, sio Stdio) (Exit, error) {
	done := make(chan struct{})
	defer close(done)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	w := &window{free: Window}
	if sio.Stdin != nil {
		go sendStdin(c, sio.Stdin, w, done)
	}
	if sio.Resize != nil || sio.Signals != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case r := <-sio.Resize:
					_ = c.WriteJSON(KindResize, r)
				case s := <-sio.Signals:
					_ = c.Write(KindSignal, []byte{byte(s)})
				}
			}
		}()
	}
	stdout, stderr := orDiscard(sio.Stdout), orDiscard(sio.Stderr)
	for {
		f, err := c.Read()
		if err != nil {
			if ctx.Err() != nil {
				return Exit{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Exit{}, fmt.Errorf("run: connection lost before the command's exit: %w", err)
		}
		switch f.Kind {
		case KindStdout:
			if _, err := stdout.Write(f.Payload); err != nil {
				return Exit{}, fmt.Errorf("run: write stdout: %w", err)
			}
		case KindStderr:
			if _, err := stderr.Write(f.Payload); err != nil {
				return Exit{}, fmt.Errorf("run: write stderr: %w", err)
			}
		case KindAck:
			n, err := ParseAck(f.Payload)
			if err != nil {
				return Exit{}, err
			}
			w.release(n)
		case KindHello:
			if sio.Hello == nil {
				continue // nobody to tell: not decoded
			}
			var h Hello
			if err := Decode(f, &h); err != nil {
				return Exit{}, err
			}
			sio.Hello(h)
		case KindStarted:
		case KindExit:
			if x, ok := parseExit(f.Payload); ok {
				return x, nil
			}
			var x Exit
			return x, Decode(f, &x)
		case KindError:
			e := &Error{}
			if err := Decode(f, e); err != nil {
				return Exit{}, err
			}
			if e.Code == 0 {
				e.Code = CodeFailed
			}
			return Exit{}, e
		default:
			return Exit{}, fmt.Errorf("%w: unexpected frame %q from the agent", ErrProtocol, f.Kind)
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// sendStdin copies in to stdin frames, never more than the window ahead of
// the acknowledgements, and sends EOF at its end.
func sendStdin(c *Conn, in io.Reader, w *window, done <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if !w.take(n, done) {
				return
			}
			if c.Write(KindStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = c.Write(KindStdin, nil)
			return
		}
	}
}

// window counts the stdin bytes a client may still send.
type window struct {
	mu   sync.Mutex
	free int
	wake chan struct{}
}

// take waits until n bytes are free and takes them; false when done
// closes first.
func (w *window) take(n int, done <-chan struct{}) bool {
	for {
		w.mu.Lock()
		if w.free >= n {
			w.free -= n
			w.mu.Unlock()
			return true
		}
		if w.wake == nil {
			w.wake = make(chan struct{})
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-done:
			return false
		}
	}
}

func (w *window) release(n int) {
	w.mu.Lock()
	w.free = min(w.free+n, Window)
	if w.wake != nil {
		close(w.wake)
		w.wake = nil
	}
	w.mu.Unlock()
}

// emptyButStdin reports whether st sets nothing but Stdin.
func (st Start) emptyButStdin() bool {
	return st.Argv == nil && st.Env == nil && st.Dir == "" && st.User == "" && !st.TTY && st.Rows == 0 && st.Cols == 0
}

// parseExit reads an exit frame's payload as the agent writes it,
// {"code":N} or {"code":N,"signal":M}, without encoding/json (whose first
// call costs a tenth of a millisecond at the end of every run); anything
// else is not ok, for Decode.
func parseExit(b []byte) (Exit, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"code":`))
	if !ok {
		return Exit{}, false
	}
	code, rest, ok := cutJSONInt(rest)
	if !ok {
		return Exit{}, false
	}
	if string(rest) == "}" {
		return Exit{Code: code}, true
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"signal":`)); !ok {
		return Exit{}, false
	}
	sig, rest, ok := cutJSONInt(rest)
	if !ok || string(rest) != "}" {
		return Exit{}, false
	}
	return Exit{Code: code, Signal: sig}, true
}

// cutJSONInt cuts a JSON integer (an optional minus, then 0 or digits not
// led by 0) that fits an int off the front of b.
func cutJSONInt(b []byte) (int, []byte, bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start || (b[start] == '0' && i > start+1) {
		return 0, nil, false
	}
	n, err := strconv.Atoi(string(b[:i]))
	if err != nil {
		return 0, nil, false
	}
	return n, b[i:], true
}
