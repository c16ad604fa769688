package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// RouteHeader names the pool (or image) of every call that names one, for
// a front end to hash on (HAProxy: balance hdr(X-OL-Shim-Pool)).
const RouteHeader = wire.RouteHeader

// LeaseHeader is set on an acquire's answer to the lease's ID: a front end
// keeps the host that answered for the lease's later calls, which carry
// the ID in their path (/v1/leases/ID/...).
const LeaseHeader = "X-OL-Shim-Lease"

// Remote is how to reach a daemon over the network: its address and the
// client's side of mutual TLS (the daemon's --tls-listen).
type Remote struct {
	// Host is tcp://HOST:PORT.
	Host string
	// CACert verifies the daemon's certificate; Cert and Key are the
	// client's, which the daemon verifies against its CA.
	CACert, Cert, Key string
}

// ParseHost checks a daemon address: tcp://HOST:PORT, or unix://PATH
// (returned as the socket's path, with tcp false).
func ParseHost(host string) (addr string, tcp bool, err error) {
	switch {
	case strings.HasPrefix(host, "unix://"):
		if p := strings.TrimPrefix(host, "unix://"); p != "" {
			return p, false, nil
		}
	case strings.HasPrefix(host, "tcp://"):
		a := strings.TrimSuffix(strings.TrimPrefix(host, "tcp://"), "/")
		if h, p, err := net.SplitHostPort(a); err == nil && h != "" && p != "" {
			return a, true, nil
		}
	}
	return "", false, fmt.Errorf("host %q: want tcp://HOST:PORT (mutual TLS) or unix://PATH", host)
}

// TLSConfig is the client's TLS configuration: TLS 1.3, the daemon's
// certificate verified against CACert for the host's name, the client's
// certificate presented.
func (r Remote) TLSConfig() (*tls.Config, error) {
	addr, tcp, err := ParseHost(r.Host)
	if err != nil {
		return nil, err
	}
	if !tcp {
		return nil, fmt.Errorf("host %q: not a tcp:// address", r.Host)
	}
	if r.CACert == "" || r.Cert == "" || r.Key == "" {
		return nil, fmt.Errorf("host %s: the daemon is reached with mutual TLS only: give --tlscacert, --tlscert and --tlskey (or OL_SHIM_TLSCACERT, OL_SHIM_TLSCERT, OL_SHIM_TLSKEY)", r.Host)
	}
	cert, err := tls.LoadX509KeyPair(r.Cert, r.Key)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s and key %s: %w", r.Cert, r.Key, err)
	}
	pool, err := certPool(r.CACert)
	if err != nil {
		return nil, err
	}
	name, _, _ := net.SplitHostPort(addr)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		ServerName:   name,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// NewRemoteClient returns a client of the daemon at r.Host over mutual
// TLS.
func NewRemoteClient(r Remote) (*Client, error) {
	cfg, err := r.TLSConfig()
	if err != nil {
		return nil, err
	}
	addr, _, _ := ParseHost(r.Host)
	return newClient(r.Host, func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: cfg}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			var ce *tls.CertificateVerificationError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("the daemon's certificate: %w", err)
			}
			return nil, err
		}
		return c, nil
	}), nil
}

// Health returns the daemon's health (GET /v1/health): an *APIError of
// status 503, with the reasons, when it is not ready.
func (c *Client) Health(ctx context.Context) (HealthResponse, error) {
	var h HealthResponse
	err := c.do(ctx, http.MethodGet, "/v1/health", "", nil, &h)
	return h, err
}

// certPool reads the CA that signed the daemon's certificate. (The daemon
// reads its own CA with internal/serve's; the client's package imports
// nothing of the daemon side.)
func certPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: CA %s: no PEM certificate in it", caFile)
	}
	return pool, nil
}
