// Package wire is what a client needs to start a streamed run on the
// daemon's API, and nothing more: the run's request body and the HTTP
// upgrade of POST /v1/run, spoken over the socket by hand. It imports no
// HTTP package, so the CLI's run path (cmd/ol-shim) starts without
// initialising one; shim/api, which the daemon and the Go client use,
// re-exports its types.
package wire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultSocket is the daemon's API socket.
const DefaultSocket = "/run/ol-shim/ol-shim.sock"

// RunUpgrade is the protocol a streamed POST /v1/run upgrades to.
const RunUpgrade = "ol-shim-run/1"

// RunRequest is a run: the command and where to run it.
type RunRequest struct {
	Pool       string   `json:"pool,omitempty"`
	Image      string   `json:"image,omitempty"`
	Cmd        []string `json:"cmd"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	// User runs the command as "user", "uid", "user:group" or "uid:gid"
	// in the container; empty: the container's user.
	User string `json:"user,omitempty"`
	// TTY runs the command on a pseudo-terminal of Rows x Cols (streamed
	// runs only).
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Stdin is the whole stdin of a run that is not streamed.
	Stdin []byte `json:"stdin,omitempty"`
	Reuse bool   `json:"reuse,omitempty"`
}

// RunCall is the body of POST /v1/run: a run and how long it may take.
type RunCall struct {
	RunRequest
	Timeout string `json:"timeout,omitempty"`
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Message string `json:"message"`
}

// StatusError is an error answer of the daemon: its HTTP status and
// message.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// ErrUnreachable: nothing answers on the socket.
var ErrUnreachable = errors.New("ol-shim daemon unreachable")

// Bounds on what DialRun reads before the upgrade: the daemon's answer is
// a status line and a few headers, or a short JSON error.
const (
	maxHeader    = 64 << 10
	maxErrorBody = 1 << 20
	dialTimeout  = 30 * time.Second
)

// DialRun starts a streamed run on the daemon at socket: it sends POST
// /v1/run with call as its body, asking to upgrade, and then early (the
// run protocol's first frames: the daemon reads them once it upgraded,
// which saves the wait for its answer), and returns the connection once
// the daemon switched protocols (it then carries the run protocol of
// shim/agent). An error answer is a *StatusError.
func DialRun(ctx context.Context, socket string, call RunCall, early []byte) (io.ReadWriteCloser, error) {
	body, err := json.Marshal(call)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v (start it with `systemctl start ol-shim` or `ol-shim serve`)", ErrUnreachable, socket, err)
	}
	return upgrade(ctx, c, call, body, "", early)
}

// RouteHeader names the pool (or, for a call that names an image, the
// image) a call is for, on every call that names one: a front end such
// as HAProxy hashes on it to send a function's calls to the host that
// keeps it warm.
const RouteHeader = "X-OL-Shim-Pool"

// Route is the value of RouteHeader for a call naming pool or image, and
// false if it names neither or the name cannot be a header value.
func Route(pool, image string) (string, bool) {
	v := pool
	if v == "" {
		v = image
	}
	if v == "" || len(v) > 512 {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return "", false
		}
	}
	return v, true
}

// RunCallHeader carries a streamed run's call (base64url of its JSON)
// instead of the body: proxies such as HAProxy drop an upgrade whose
// request has a body.
const RunCallHeader = "X-OL-Shim-Run"

// DialRunWith is DialRun on the connection dial makes (TLS to a remote
// daemon, maybe through a proxy): the call goes in RunCallHeader, with no
// body.
func DialRunWith(ctx context.Context, dial func(context.Context) (net.Conn, error), call RunCall, early []byte) (io.ReadWriteCloser, error) {
	body, err := json.Marshal(call)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return upgrade(ctx, c, call, nil, base64.RawURLEncoding.EncodeToString(body), early)
}

// upgrade sends POST /v1/run on c with the call as body or, if inHeader
// is set, in RunCallHeader, and then early; see DialRun.
func upgrade(ctx context.Context, c net.Conn, call RunCall, body []byte, inHeader string, early []byte) (io.ReadWriteCloser, error) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST /v1/run HTTP/1.1\r\nHost: ol-shim\r\nConnection: Upgrade\r\nUpgrade: %s\r\n", RunUpgrade)
	if inHeader != "" {
		fmt.Fprintf(&req, "%s: %s\r\n", RunCallHeader, inHeader)
	} else {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	if v, ok := Route(call.Pool, call.Image); ok {
		fmt.Fprintf(&req, "%s: %s\r\n", RouteHeader, v)
	}
	req.WriteString("\r\n")
	req.Write(body)
	req.Write(early)
	if _, err := c.Write(req.Bytes()); err != nil {
		c.Close()
		return nil, fmt.Errorf("POST /v1/run: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	br := bufio.NewReaderSize(c, 4096)
	status, header, err := readHead(br)
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("POST /v1/run: the daemon's answer: %w", err)
	}
	if status == 101 && strings.EqualFold(header["upgrade"], RunUpgrade) {
		return &conn{Conn: c, r: br}, nil
	}
	defer c.Close()
	if status < 400 {
		return nil, fmt.Errorf("POST /v1/run: the daemon answered %d, not an upgrade to %s (an older daemon?)", status, RunUpgrade)
	}
	n, err := strconv.ParseInt(header["content-length"], 10, 64)
	if err != nil || n < 0 || n > maxErrorBody {
		n = maxErrorBody
	}
	b, _ := io.ReadAll(io.LimitReader(br, n))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Message == "" {
		eb.Message = fmt.Sprintf("POST /v1/run: %d: %s", status, bytes.TrimSpace(b))
	}
	return nil, &StatusError{Status: status, Message: eb.Message}
}

// readHead reads an HTTP/1.1 response's status line and headers (names
// lower-cased; a repeated one keeps its last value), at most maxHeader
// bytes.
func readHead(br *bufio.Reader) (int, map[string]string, error) {
	total := 0
	line := func() (string, error) {
		var b []byte
		for {
			frag, err := br.ReadSlice('\n')
			total += len(frag)
			if total > maxHeader {
				return "", fmt.Errorf("header longer than %d bytes", maxHeader)
			}
			b = append(b, frag...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return "", err
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
	}
	first, err := line()
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(first, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("not an HTTP/1 status line: %.80q", first)
	}
	header := map[string]string{}
	for {
		l, err := line()
		if err != nil {
			return 0, nil, err
		}
		if l == "" {
			return status, header, nil
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return 0, nil, fmt.Errorf("bad header line %.80q", l)
		}
		header[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
}

// conn is the upgraded connection: what the reader of the head already
// took from the socket is read first.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func (c *conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection (the agent protocol's end of stdin).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
