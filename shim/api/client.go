package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/shim/api/wire"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// ErrUnreachable is returned by a Client that cannot reach the daemon. It
// is of class errdefs.ErrUnavailable.
var ErrUnreachable = errdefs.ErrUnavailable.WithMessage("ol-shim daemon unreachable")

// Client talks to the daemon's API over its unix socket, or to a remote
// daemon over mutual TLS (NewRemoteClient).
type Client struct {
	where string // the socket's path, or tcp://HOST:PORT
	dial  func(context.Context) (net.Conn, error)
	hc    *http.Client
}

// NewClient returns a client of the daemon listening on socket.
func NewClient(socket string) *Client {
	return newClient(socket, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	})
}

func newClient(where string, dial func(context.Context) (net.Conn, error)) *Client {
	return &Client{where: where, dial: dial, hc: &http.Client{Transport: &http.Transport{
		// One daemon: keep a connection per concurrent caller (the default
		// keeps 2, so a third concurrent caller dials anew every call).
		MaxIdleConnsPerHost: 64,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
	}}}
}

// Dial opens a connection to the daemon (what DialRunWith takes).
func (c *Client) Dial(ctx context.Context) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v%s", ErrUnreachable, c.where, err, c.hint(err))
	}
	return conn, nil
}

// hint says what to do about a failed dial of a local daemon (see
// wire.DialHint).
func (c *Client) hint(err error) string {
	if strings.HasPrefix(c.where, "tcp://") {
		return ""
	}
	return wire.DialHint(c.where, err)
}

// APIError is an error the daemon answered with. It is of the class its
// status code maps to (see HTTPStatus): errdefs.IsNotFound(err) and
// errors.Is(err, errdefs.ErrConflict) work on it.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Unwrap returns the error class of the status code.
func (e *APIError) Unwrap() error { return classOf(e.Status) }

func (c *Client) do(ctx context.Context, method, path, route string, in, out any) error {
	var h http.Header
	if v, ok := wire.Route(route, ""); ok {
		h = http.Header{wire.RouteHeader: {v}}
	}
	resp, err := c.send(ctx, method, path, in, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send sends a request with in as its JSON body, and returns the response
// of a status under 400; a status of 400 or more is an *APIError.
func (c *Client) send(ctx context.Context, method, path string, in any, header http.Header) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ol-shim"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w at %s: %v%s", ErrUnreachable, c.where, ue.Err, c.hint(ue.Err))
		}
		return nil, err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var eb ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &eb) != nil || eb.Message == "" {
			eb.Message = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return nil, &APIError{Status: resp.StatusCode, Message: eb.Message}
	}
	return resp, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var st StatusResponse
	err := c.do(ctx, http.MethodGet, "/v1/status", "", nil, &st)
	return st, err
}

// Pools lists the pools.
func (c *Client) Pools(ctx context.Context) ([]PoolStatus, error) {
	var out []PoolStatus
	err := c.do(ctx, http.MethodGet, "/v1/pools", "", nil, &out)
	return out, err
}

// Pool returns one pool.
func (c *Client) Pool(ctx context.Context, name string) (PoolStatus, error) {
	var out PoolStatus
	err := c.do(ctx, http.MethodGet, "/v1/pools/"+url.PathEscape(name), name, nil, &out)
	return out, err
}

// PutPool creates or replaces a pool.
func (c *Client) PutPool(ctx context.Context, name string, pc spec.PoolConfig) (PoolStatus, error) {
	var out PoolStatus
	err := c.do(ctx, http.MethodPut, "/v1/pools/"+url.PathEscape(name), name, pc, &out)
	return out, err
}

// DeletePool removes a pool.
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/pools/"+url.PathEscape(name), name, nil, nil)
}

// Warm sets a pool's MinIdle to n and fills it.
func (c *Client) Warm(ctx context.Context, name string, n int) (PoolStatus, error) {
	var out PoolStatus
	err := c.do(ctx, http.MethodPost, "/v1/pools/"+url.PathEscape(name)+"/warm", name, CountRequest{N: &n}, &out)
	return out, err
}

// Shrink destroys a pool's idle sandboxes down to n.
func (c *Client) Shrink(ctx context.Context, name string, n int) (PoolStatus, error) {
	var out PoolStatus
	err := c.do(ctx, http.MethodPost, "/v1/pools/"+url.PathEscape(name)+"/shrink", name, CountRequest{N: &n}, &out)
	return out, err
}

// Grow raises a volume's limits (see GrowRequest).
func (c *Client) Grow(ctx context.Context, name string, req GrowRequest) (VolumeStatus, error) {
	var out VolumeStatus
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(name)+"/grow", "", req, &out)
	return out, err
}

// Acquire takes a sandbox under a lease.
func (c *Client) Acquire(ctx context.Context, req AcquireRequest) (Lease, error) {
	var out Lease
	route, _ := wire.Route(req.Pool, req.Image)
	err := c.do(ctx, http.MethodPost, "/v1/acquire", route, req, &out)
	return out, err
}

// Release returns a leased sandbox.
func (c *Client) Release(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/release", "", nil, nil)
}

// Destroy destroys a leased sandbox.
func (c *Client) Destroy(ctx context.Context, id, reason string) error {
	return c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/destroy", "", DestroyRequest{Reason: reason}, nil)
}

// Renew extends a lease.
func (c *Client) Renew(ctx context.Context, id, lease string) (Lease, error) {
	var out Lease
	err := c.do(ctx, http.MethodPost, "/v1/leases/"+url.PathEscape(id)+"/renew", "", RenewRequest{Lease: lease}, &out)
	return out, err
}

// Run runs a command in a pooled sandbox.
func (c *Client) Run(ctx context.Context, req RunCall) (RunResult, error) {
	var out RunResult
	route, _ := wire.Route(req.Pool, req.Image)
	err := c.do(ctx, http.MethodPost, "/v1/run", route, req, &out)
	return out, err
}

// Upgrade protocol of a streamed run.
const runUpgrade = wire.RunUpgrade

// RunUpgradeResponse is what the daemon answers a streamed run with before
// the run protocol starts.
const RunUpgradeResponse = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + runUpgrade + "\r\n\r\n"

// IsRunUpgrade reports whether a request to POST /v1/run asks for a
// streamed run.
func IsRunUpgrade(h http.Header) bool {
	return strings.EqualFold(h.Get("Upgrade"), runUpgrade)
}

// RunStream starts a streamed run: the daemon takes a sandbox (its errors
// are *APIError, as for Run), then the connection carries the run protocol
// of shim/agent: the daemon's hello, then the caller's start frame, and
// frames both ways until the exit or error frame.
func (c *Client) RunStream(ctx context.Context, req RunCall) (io.ReadWriteCloser, error) {
	h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {runUpgrade}}
	if v, ok := wire.Route(req.Pool, req.Image); ok {
		h.Set(wire.RouteHeader, v)
	}
	var in any = req
	if strings.HasPrefix(c.where, "tcp://") {
		// Maybe through a proxy, which drops an upgrade with a body.
		b, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		h.Set(wire.RunCallHeader, base64.RawURLEncoding.EncodeToString(b))
		in = nil
	}
	resp, err := c.send(ctx, http.MethodPost, "/v1/run", in, h)
	if err != nil {
		return nil, err
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("POST /v1/run: the daemon answered %s, not an upgrade to %s (an older daemon?)", resp.Status, runUpgrade)
	}
	return rwc, nil
}
