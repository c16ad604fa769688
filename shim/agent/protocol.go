// Package agent is the run protocol: how a command is started in a sandbox,
// how its stdio, terminal size and signals travel, and how it ends. This
// file is its one description.
//
// # Who speaks it
//
// The agent is `ol-shim init`, PID 1 of every sandbox container. It listens
// on a unix socket, /.ol-shim/ctl/agent.sock in the container, which is
// <state root>/agents/<sandbox id>/agent.sock on the host (a directory only
// root on the host can reach). The daemon dials it, and relays the same
// frames to and from the client of POST /v1/run after an HTTP upgrade (see
// shim/api), so the CLI, the daemon and the agent speak one protocol. Where
// a sandbox's agent does not answer, the daemon speaks it for the agent
// over docker exec (the fallback; it logs that it did).
//
// # Frames
//
// Everything on the connection is a frame: one byte of kind, four bytes of
// payload length (big endian), then the payload, at most [MaxPayload]
// bytes. A peer that sends a longer frame, a kind it may not send, or a
// frame out of order is cut off.
//
// Client (the caller, or the daemon for it) to agent:
//
//	'S' start    JSON [Start]. First and once.
//	'i' stdin    bytes for the process's stdin; an empty payload is EOF.
//	'r' resize   JSON [Resize]: the terminal's new size (with Start.TTY).
//	'k' signal   one byte: the signal number, delivered to the process
//	             group, as a terminal delivers Ctrl-C.
//
// Agent to client:
//
//	'h' hello    JSON [Hello]: from the daemon, not the agent, before
//	             anything else: which pool and sandbox serve the run.
//	'p' started  JSON [Started]: the process runs.
//	'o' stdout   bytes the process wrote (with a terminal, all it wrote).
//	'e' stderr   bytes the process wrote to stderr.
//	'a' ack      four bytes (big endian): this many stdin bytes were
//	             written to the process.
//	'x' exit     JSON [Exit]: the process ended; the last frame.
//	'E' error    JSON [Error]: the run failed (the command could not be
//	             started, or the daemon or Docker failed); the last frame.
//
// # Flow control
//
// Output: the agent writes a frame only as fast as the connection takes it,
// and reads the process's output only as fast as it writes frames, so a
// slow reader slows the process down (a full pipe), and nothing in between
// holds more than a frame.
//
// Input: the client may have at most [Window] bytes of stdin sent and not
// acknowledged. The agent acknowledges what it has written to the process.
// An agent that receives more than a window of unacknowledged stdin cuts the
// connection off.
//
// # How it ends
//
// The process's exit status is Exit.Code: its own exit code, or 128+n when
// signal n killed it. Output the process wrote before it exited comes
// before the exit frame. When the client goes away before the exit frame,
// the agent kills the process's whole process group.
//
// Codes in an error frame follow docker run: 126 when the command cannot be
// invoked, 127 when it is not found, 125 when ol-shim or Docker failed.
package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Frame kinds.
const (
	KindStart   = 'S'
	KindStdin   = 'i'
	KindResize  = 'r'
	KindSignal  = 'k'
	KindHello   = 'h'
	KindStarted = 'p'
	KindStdout  = 'o'
	KindStderr  = 'e'
	KindAck     = 'a'
	KindExit    = 'x'
	KindError   = 'E'
	// KindRecycle, a connection's first frame instead of a start frame,
	// asks init to make the sandbox as it was made (see agentd's
	// Recycler); the answer is an exit frame (code 0) or an error frame.
	KindRecycle = 'C'
)

// MaxPayload bounds a frame's payload.
const MaxPayload = 64 << 10

// Window is how many stdin bytes a client may have sent and not had
// acknowledged.
const Window = 256 << 10

// Exit codes of runs that did not get as far as the command's own, as
// docker run uses them.
const (
	CodeFailed      = 125 // ol-shim, Docker or the sandbox failed
	CodeCannotRun   = 126 // the command cannot be invoked
	CodeNotFound    = 127 // the command was not found
	CodeInterrupted = 130 // 128 + SIGINT
)

// SocketDir is where the per-sandbox control directory is mounted in a
// container, and SocketPath the agent's socket in it.
const (
	SocketDir  = "/.ol-shim/ctl"
	SocketName = "agent.sock"
	SocketPath = SocketDir + "/" + SocketName
)

// Start is the payload of a start frame.
type Start struct {
	Argv []string `json:"argv"`
	// Env is added to the container's environment; KEY=VALUE each.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory, absolute; made if missing, as docker
	// run does. Empty: the container's.
	Dir string `json:"dir,omitempty"`
	// User is "user", "uid", "user:group" or "uid:gid" in the container.
	// Empty: the container's.
	User string `json:"user,omitempty"`
	// TTY runs the process on a pseudo-terminal of Rows x Cols.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Stdin: stdin frames follow. Without it the process's stdin is
	// /dev/null (or, with TTY, the terminal, which nobody types into).
	Stdin bool `json:"stdin,omitempty"`
}

// Resize is the payload of a resize frame.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Hello is the payload of the daemon's hello frame.
type Hello struct {
	Pool    string `json:"pool"`
	Sandbox string `json:"sandbox"`
	Outcome string `json:"outcome"`
	// Via is "agent", or "exec" when the daemon fell back to docker exec.
	Via string `json:"via"`
}

// Started is the payload of a started frame.
type Started struct {
	PID int `json:"pid"`
}

// Exit is the payload of an exit frame.
type Exit struct {
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"` // the signal that killed it, if one did
}

// Error is the payload of an error frame.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrProtocol is a peer breaking the protocol.
var ErrProtocol = errors.New("agent protocol")

// Frame is one frame.
type Frame struct {
	Kind    byte
	Payload []byte
}

// Conn reads and writes frames on a connection. Writes are serialized, so
// several goroutines may send; one goroutine reads.
type Conn struct {
	rw   io.ReadWriter
	wmu  sync.Mutex
	hdr  [5]byte
	whdr [5]byte
	buf  []byte
}

// NewConn wraps rw.
func NewConn(rw io.ReadWriter) *Conn { return &Conn{rw: rw} }

// Close closes the connection underneath if it can be closed.
func (c *Conn) Close() error {
	if cl, ok := c.rw.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// CloseWrite half-closes the connection underneath where it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Raw returns the connection underneath.
func (c *Conn) Raw() io.ReadWriter { return c.rw }

// Read reads the next frame. Its payload is valid until the next Read.
func (c *Conn) Read() (Frame, error) {
	if _, err := io.ReadFull(c.rw, c.hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(c.hdr[1:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: frame %q of %d bytes: the bound is %d", ErrProtocol, c.hdr[0], n, MaxPayload)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n, max(n, 4096))
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.rw, c.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Kind: c.hdr[0], Payload: c.buf}, nil
}

// Write writes one frame.
func (c *Conn) Write(kind byte, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: frame %q of %d bytes: the bound is %d", ErrProtocol, kind, len(payload), MaxPayload)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.whdr[0] = kind
	binary.BigEndian.PutUint32(c.whdr[1:], uint32(len(payload)))
	if nb, ok := c.rw.(net.Conn); ok && len(payload) > 0 {
		bufs := net.Buffers{c.whdr[:], payload}
		_, err := bufs.WriteTo(nb)
		return err
	}
	if _, err := c.rw.Write(c.whdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := c.rw.Write(payload)
	return err
}

// WriteJSON writes a frame whose payload is v as JSON.
func (c *Conn) WriteJSON(kind byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Write(kind, b)
}

// WriteData writes p as frames of kind, split at MaxPayload.
func (c *Conn) WriteData(kind byte, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxPayload)
		if err := c.Write(kind, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// Ack returns the payload of an ack frame for n bytes.
func Ack(n int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(n))
}

// ParseAck returns the byte count of an ack frame.
func ParseAck(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("%w: ack of %d bytes, want 4", ErrProtocol, len(p))
	}
	return int(binary.BigEndian.Uint32(p)), nil
}

// Decode unmarshals a JSON payload of kind into v, naming the frame in the
// error.
func Decode(f Frame, v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("%w: frame %q: %v", ErrProtocol, f.Kind, err)
	}
	return nil
}

// Fail returns an error frame's payload.
func Fail(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Pair returns the two ends of an in-process connection with kernel
// buffers (a unix socket pair), for speaking the protocol to oneself: an
// unbuffered net.Pipe would deadlock where both ends send first, as the
// hello and the start frame do.
func Pair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "agent-pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}
