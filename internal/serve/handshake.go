package serve

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handshake bounds of TLSListener, used where Limits leaves them zero.
const (
	DefaultHandshakeTimeout = 3 * time.Second
	DefaultMaxHandshakes    = 128
)

// TLSListener serves TLS on l, a TCP listener, so that peers who never
// finish a handshake cannot keep others out.
//
// Handshakes run before a connection counts against lim.MaxConns, apart
// from the connections served: at most lim.MaxHandshakes at once, each
// given lim.HandshakeTimeout. A new peer past that bound takes the place of
// the oldest handshake in progress whose peer has sent nothing yet, or, if
// every one has, of the oldest: a silent peer holds its place only until
// newer peers come, and never against a client that has sent its hello
// (which a client does as it connects), so silent connections cannot keep
// a client out however many there are; peers that send a hello and stall
// must open connections faster than a client completes its handshake (a
// few milliseconds) to. Accept returns only connections
// whose handshake succeeded (*tls.Conn, so that net/http sees their TLS
// state); a failed handshake is closed and never seen by the server.
//
// It does not bound what a client with a valid certificate does once
// served: lim.MaxConns and the server's timeouts do.
func TLSListener(l net.Listener, cfg *tls.Config, lim Limits) net.Listener {
	if lim.HandshakeTimeout <= 0 {
		lim.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if lim.MaxHandshakes <= 0 {
		lim.MaxHandshakes = DefaultMaxHandshakes
	}
	tl := &tlsListener{
		bound:   &listener{Listener: l, lim: lim},
		cfg:     cfg,
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		pending: list.New(),
	}
	go tl.acceptLoop()
	return tl
}

type tlsListener struct {
	bound *listener // counts the connections served (MaxConns)
	cfg   *tls.Config
	ready chan net.Conn // handshaken and counted, for Accept
	done  chan struct{} // closed when the listener is

	mu      sync.Mutex
	pending *list.List // guarded by mu: raw connections in handshake, oldest first
	err     error      // guarded by mu: why accepting stopped
	closed  bool       // guarded by mu
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

func (l *tlsListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.err == nil {
		l.err = net.ErrClosed
	}
	for e := l.pending.Front(); e != nil; e = e.Next() {
		e.Value.(net.Conn).Close()
	}
	l.pending.Init()
	close(l.done)
	l.mu.Unlock()
	return l.bound.Listener.Close()
}

func (l *tlsListener) Addr() net.Addr { return l.bound.Listener.Addr() }

// Handshakes returns the handshakes in progress now.
func (l *tlsListener) Handshakes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending.Len()
}

func (l *tlsListener) acceptLoop() {
	for wait := time.Duration(0); ; {
		c, err := l.bound.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.stop(err)
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http does, rather than spin or stop serving.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(wait):
			case <-l.done:
				return
			}
			continue
		}
		wait = 0
		tc := &talker{Conn: c}
		e, ok := l.admit(tc)
		if !ok {
			c.Close()
			continue
		}
		go l.handshake(tc, e)
	}
}

// admit puts c among the handshakes in progress, closing the oldest if
// they are at their bound. It reports false once the listener is closed.
func (l *tlsListener) admit(c net.Conn) (*list.Element, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, false
	}
	for l.pending.Len() >= l.bound.lim.MaxHandshakes {
		victim := l.pending.Front()
		for e := victim; e != nil; e = e.Next() {
			if !e.Value.(*talker).spoke.Load() {
				victim = e
				break
			}
		}
		victim.Value.(*talker).Close()
		l.pending.Remove(victim)
	}
	return l.pending.PushBack(c), true
}

// talker is a connection in handshake that records whether its peer has
// sent anything.
type talker struct {
	net.Conn
	spoke atomic.Bool
}

func (t *talker) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if n > 0 && !t.spoke.Load() {
		t.spoke.Store(true)
	}
	return n, err
}

// finish takes e off the handshakes in progress; false if it was closed
// meanwhile (given up for a newer peer, or the listener closed).
func (l *tlsListener) finish(e *list.Element) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for x := l.pending.Front(); x != nil; x = x.Next() {
		if x == e {
			l.pending.Remove(e)
			return true
		}
	}
	return false
}

func (l *tlsListener) handshake(raw net.Conn, e *list.Element) {
	wc := &conn{Conn: raw}
	tc := tls.Server(wc, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.bound.lim.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if !l.finish(e) || err != nil {
		raw.Close()
		return
	}
	if !l.bound.take(false) {
		raw.Close()
		return
	}
	wc.l = l.bound // from here its Close gives its slot back
	raw.SetDeadline(time.Time{})
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

func (l *tlsListener) stop(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.err = err
		l.closed = true
		for e := l.pending.Front(); e != nil; e = e.Next() {
			e.Value.(net.Conn).Close()
		}
		l.pending.Init()
		close(l.done)
	}
}
