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
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
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
	// Entrypoint replaces the image's ENTRYPOINT, as docker run's
	// --entrypoint: nil (or null) keeps it, an empty list drops it. Either way the
	// run's argv is the entrypoint followed by Cmd, or by the image's CMD
	// when Cmd is empty and the entrypoint is the image's.
	Entrypoint *[]string `json:"entrypoint,omitempty"`
	// Sandbox runs Cmd, as given (no entrypoint), in this sandbox, which
	// a run of the same caller holds now (root: any run), beside that
	// run's command: docker exec into a container ol-shim-runtime serves.
	// Pool, Image, Entrypoint and Reuse are then not asked for.
	Sandbox string `json:"sandbox,omitempty"`
}

// RunCall is the body of POST /v1/run: a run and how long it may take.
type RunCall struct {
	RunRequest
	Timeout string `json:"timeout,omitempty"`
}

// AppendJSON appends c as json.Marshal writes it (the same bytes): the
// run's client writes it by hand, as encoding/json's first call costs a
// tenth of a millisecond of a run's start.
func (c RunCall) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	sep := false
	field := func(name string) {
		if sep {
			b = append(b, ',')
		}
		sep = true
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
	}
	str := func(name, v string) {
		if v != "" {
			field(name)
			b = appendJSONString(b, v)
		}
	}
	list := func(v []string) {
		if v == nil {
			b = append(b, "null"...)
			return
		}
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, x)
		}
		b = append(b, ']')
	}
	flag := func(name string, v bool) {
		if v {
			field(name)
			b = append(b, "true"...)
		}
	}
	num := func(name string, v uint16) {
		if v != 0 {
			field(name)
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	}
	r := c.RunRequest
	str("pool", r.Pool)
	str("image", r.Image)
	field("cmd")
	list(r.Cmd)
	if len(r.Env) > 0 {
		field("env")
		list(r.Env)
	}
	str("working_dir", r.WorkingDir)
	str("user", r.User)
	flag("tty", r.TTY)
	num("rows", r.Rows)
	num("cols", r.Cols)
	if len(r.Stdin) > 0 {
		field("stdin")
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, r.Stdin)
		b = append(b, '"')
	}
	flag("reuse", r.Reuse)
	if r.Entrypoint != nil {
		field("entrypoint")
		list(*r.Entrypoint)
	}
	str("sandbox", r.Sandbox)
	str("timeout", c.Timeout)
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it: HTML's
// <, > and & escaped, invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
	body := call.AppendJSON(nil)
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v%s", ErrUnreachable, socket, err, DialHint(socket, err))
	}
	return upgrade(ctx, c, call, body, "", early)
}

// DialHint says what to do about a failed dial of the daemon's socket: a
// socket this user may not open names the group that may; one that is
// missing or not answered, how to start the daemon.
func DialHint(socket string, err error) string {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		group := "its group"
		if fi, serr := os.Stat(socket); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				group = fmt.Sprintf("group %d", st.Gid)
				if g, gerr := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10)); gerr == nil {
					group = fmt.Sprintf("group %q", g.Name)
				}
			}
		}
		return fmt.Sprintf(" (the socket is open to root and %s: run as root, or as a member of that group)", group)
	}
	return " (start it with `systemctl start ol-shim` or `ol-shim serve`)"
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
	body := call.AppendJSON(nil)
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
