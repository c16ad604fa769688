// Package serve runs ol-shim's HTTP servers on unix sockets with limits that
// come from the host, not from the client: how long a client may take to
// send a request, how big a body may be, how long an idle connection stays,
// and how many connections a socket holds at once. Both sockets use it: the
// API (whose clients are members of the socket's group, and may be
// hostile) and the volume plugin (dockerd, but the socket is group-writable
// too).
//
// Connections of root peers (dockerd, the CLI run by root) are counted
// apart from everyone else's, so that a flood from an unprivileged client
// never locks root out. The peer's credentials (SO_PEERCRED) travel in the
// request's context: see Peer.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound one socket's server.
type Limits struct {
	// HeaderTimeout bounds the reading of a request's headers.
	HeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxBody bounds a request body; a longer one is refused (413).
	MaxBody int64
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxConns bounds the connections of non-root peers held at once;
	// MaxRootConns those of root peers. Past the bound a new connection is
	// closed at once.
	MaxConns, MaxRootConns int
	// HandshakeTimeout bounds a TLS handshake, and MaxHandshakes those in
	// progress at once (TLSListener); zero means DefaultHandshakeTimeout
	// and DefaultMaxHandshakes.
	HandshakeTimeout time.Duration
	MaxHandshakes    int
}

// DefaultLimits are the limits of both of ol-shim's sockets.
var DefaultLimits = Limits{
	HeaderTimeout:  5 * time.Second,
	ReadTimeout:    30 * time.Second,
	IdleTimeout:    60 * time.Second,
	MaxBody:        8 << 20,
	MaxHeaderBytes: 64 << 10,
	MaxConns:       256,
	MaxRootConns:   256,

	HandshakeTimeout: DefaultHandshakeTimeout,
	MaxHandshakes:    DefaultMaxHandshakes,
}

// Server returns an http.Server for h with the limits: timeouts, a body
// bound, and the peer's credentials in every request's context.
func Server(h http.Handler, lim Limits) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, lim.MaxBody)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: lim.HeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cred, ok := c.(*conn); ok && cred.known {
				return context.WithValue(ctx, peerKey{}, Cred{UID: cred.uid, GID: cred.gid, PID: cred.pid})
			}
			return ctx
		},
	}
}

// Serve serves h on l with the limits until the returned server is shut
// down (or l fails): the connection bounds and peer credentials of Listener,
// the rest of Server.
func Serve(l net.Listener, h http.Handler, lim Limits) (*http.Server, <-chan error) {
	srv := Server(h, lim)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(Listener(l, lim)) }()
	return srv, errc
}

// Cred is a peer's credentials: from SO_PEERCRED on a unix socket, or
// the verified client certificate's subject on the TLS listener (Client
// set, UID and GID meaningless: a remote client is never root).
type Cred struct {
	UID, GID uint32
	PID      int32
	// Client is the subject of a TLS client's certificate, which the
	// listener verified against its CA.
	Client string
}

// Owner is the key leases are owned by: "uid:N" for a local peer,
// "tls:SUBJECT" for a remote one.
func (c Cred) Owner() string {
	if c.Client != "" {
		return "tls:" + c.Client
	}
	return fmt.Sprintf("uid:%d", c.UID)
}

// Privileged reports whether the peer may act on everything: a local root
// peer. A remote client never is.
func (c Cred) Privileged() bool { return c.Client == "" && c.UID == 0 }

type peerKey struct{}

// Peer returns the credentials of the peer of the request whose context
// ctx is, and false if they are unknown (not a unix socket, or a request
// made in-process).
func Peer(ctx context.Context) (Cred, bool) {
	c, ok := ctx.Value(peerKey{}).(Cred)
	return c, ok
}

// WithPeer returns ctx carrying c as the peer's credentials (for tests and
// in-process callers that act for someone).
func WithPeer(ctx context.Context, c Cred) context.Context {
	return context.WithValue(ctx, peerKey{}, c)
}

// Listener wraps l: each accepted connection carries its peer's
// credentials, and the connections of root and of other peers are bounded
// apart (lim.MaxRootConns, lim.MaxConns). A connection past its bound is
// closed at once: the client sees a reset, the daemon holds nothing for it.
func Listener(l net.Listener, lim Limits) net.Listener {
	return &listener{Listener: l, lim: lim}
}

type listener struct {
	net.Listener
	lim Limits

	mu          sync.Mutex
	root, other int // guarded by mu: connections open
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		wc := &conn{Conn: c, l: l}
		if uc, ok := c.(*net.UnixConn); ok {
			if cred, err := peerCred(uc); err == nil {
				wc.uid, wc.gid, wc.pid, wc.known = cred.Uid, cred.Gid, cred.Pid, true
			}
		}
		wc.isRoot = wc.known && wc.uid == 0
		if !l.take(wc.isRoot) {
			c.Close()
			continue
		}
		return wc, nil
	}
}

// take counts a new connection, or reports false at the bound.
func (l *listener) take(root bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if root {
		if l.lim.MaxRootConns > 0 && l.root >= l.lim.MaxRootConns {
			return false
		}
		l.root++
		return true
	}
	if l.lim.MaxConns > 0 && l.other >= l.lim.MaxConns {
		return false
	}
	l.other++
	return true
}

func (l *listener) drop(root bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if root {
		l.root--
	} else {
		l.other--
	}
}

// Open returns the connections open now: of root peers, and of others.
func Open(l net.Listener) (root, other int, err error) {
	if tl, ok := l.(*tlsListener); ok {
		l = tl.bound
	}
	sl, ok := l.(*listener)
	if !ok {
		return 0, 0, errors.New("serve: not a listener of this package")
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.root, sl.other, nil
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}

// conn is an accepted connection: its peer, and its slot in the bound.
type conn struct {
	net.Conn
	l      *listener
	known  bool
	isRoot bool
	uid    uint32
	gid    uint32
	pid    int32
	once   sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.l != nil {
		c.once.Do(func() { c.l.drop(c.isRoot) })
	}
	return err
}
