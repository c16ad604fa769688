// Package server serves a registry.Registry as ol-shim's HTTP API (see
// package api for the endpoints and wire types). Every body is read
// strictly and bounded; every error answer carries the status of its class
// (api.HTTPStatus).
package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/internal/serve"
	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/api/wire"
	"github.com/open-lambda/ol-shim/shim/imageref"
	"github.com/open-lambda/ol-shim/shim/registry"
)

// Server serves the registry as JSON over HTTP (on a unix socket).
type Server struct {
	Registry *registry.Registry
	// Docker, if set, reports dockerd's health for the status.
	Docker func(ctx context.Context) *api.DockerHealth
	// Volumes, if set, lists the volume plugin's volumes for the status.
	Volumes func() []api.VolumeStatus
	Version string
	Backend string
	// Limits, if set, are shown in the status.
	Limits *api.Limits
	// Scratch, if set, is the default volume backend, for the status.
	Scratch *api.ScratchBackend
	// Grow, if set, raises a volume's limits (0: keep that one).
	Grow func(ctx context.Context, name string, size, inodes int64) (api.VolumeStatus, error)
	// ServeCheck, if set, says whether a container being started with
	// ol-shim's OCI runtime can be served from a pool: its image, or why
	// not.
	ServeCheck func(ctx context.Context, id string) (image, why string, err error)
}

// Handler returns the API's routes. A path called with a method it does
// not serve answers 405, naming the methods it does.
// routeTable is the API: every endpoint, its handler, and what the
// reference (api/openapi.yaml, see OpenAPI) says of it.
var routeTable = []route{
	{"GET", "/v1/status", (*Server).status, "the daemon: version, pools, leases, volumes, limits, Docker's and the state root's health", "", "StatusResponse"},
	{"GET", "/v1/health", (*Server).health, "whether this host takes calls (200) or not (503, with the reasons): a front end's check", "", "HealthResponse"},
	{"GET", "/v1/pools", (*Server).listPools, "the pools the caller may see", "", "[]PoolStatus"},
	{"GET", "/v1/pools/{name}", (*Server).getPool, "one pool: its config and counters", "", "PoolStatus"},
	{"PUT", "/v1/pools/{name}", (*Server).putPool, "create or replace a pool (the caller's; kept across restarts)", "PoolConfig", "PoolStatus"},
	{"DELETE", "/v1/pools/{name}", (*Server).deletePool, "remove a pool: idle sandboxes at once, leased ones when released", "", ""},
	{"POST", "/v1/pools/{name}/warm", (*Server).warm, "make n idle sandboxes ready, waiting for them", "CountRequest", ""},
	{"POST", "/v1/pools/{name}/shrink", (*Server).shrink, "keep at most n idle sandboxes", "CountRequest", ""},
	{"POST", "/v1/acquire", (*Server).acquire, "take a sandbox of a pool (or of an image's pool) under a lease", "AcquireRequest", "Lease"},
	{"POST", "/v1/leases/{id}/release", (*Server).release, "give a leased sandbox back to its pool", "", ""},
	{"POST", "/v1/leases/{id}/destroy", (*Server).destroy, "destroy a leased sandbox", "DestroyRequest", ""},
	{"POST", "/v1/leases/{id}/renew", (*Server).renew, "extend a lease", "RenewRequest", "Lease"},
	{"POST", "/v1/run", (*Server).run, "run a command in a sandbox, as docker run; with Upgrade: ol-shim-run/1, streamed", "RunCall", "RunResult"},
	{"POST", "/v1/volumes/{name}/grow", (*Server).grow, "raise a volume's limits (local root only)", "GrowRequest", "VolumeStatus"},
	{"POST", "/v1/runtime/check", (*Server).runtimeCheck, "whether ol-shim-runtime serves a container dockerd is creating, and from which pool (local root only)", "RuntimeCheckRequest", "RuntimeCheck"},
}

func (a *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range routeTable {
		h := rt.h
		mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) { h(a, w, r) })
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for path, methods := range allowed {
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, api.ErrorBody{Message: fmt.Sprintf("%s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, allow)})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%s %s: %w: no such endpoint (the API is under /v1)", r.Method, clip(r.URL.Path), errdefs.ErrNotFound))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every request acts for its peer: the registry decides what
		// pools and leases it may touch.
		if c, ok := serve.Peer(r.Context()); ok {
			r = r.WithContext(registry.WithOwner(r.Context(), owner(c)))
		}
		mux.ServeHTTP(w, r)
	})
}

// peer returns the key of the API client's leases (serve.Cred.Owner), and
// false for local root or an in-process caller (no credentials): those may
// touch every lease. A request that came over TLS always has credentials
// (its verified certificate's subject) and is never privileged.
func peer(r *http.Request) (string, bool) {
	c, ok := serve.Peer(r.Context())
	if !ok || c.Privileged() {
		return "", false
	}
	return c.Owner(), true
}

// owner is the registry's owner of what peer c acquires.
func owner(c serve.Cred) registry.Owner {
	if c.Client != "" {
		return registry.Owner{Key: c.Owner(), Client: c.Client}
	}
	uid := c.UID
	return registry.Owner{Key: c.Owner(), UID: &uid, Admin: c.Privileged()}
}

// clip bounds what an error message repeats of a request.
func clip(s string) string {
	if len(s) <= 200 {
		return s
	}
	return s[:200] + "..."
}

// errBadRequest marks a request the API could not read.
var errBadRequest = errdefs.ErrInvalidArgument.WithMessage("bad request")

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, api.HTTPStatus(err), api.ErrorBody{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeRunCall reads a run's call from its body, or, for a streamed run
// sent through a proxy (which drops an upgrade that has a body), from the
// wire.RunCallHeader header (base64url of the JSON, bounded by the
// server's header limit) with no body.
func decodeRunCall(w http.ResponseWriter, r *http.Request, req *api.RunCall) error {
	h := r.Header.Values(wire.RunCallHeader)
	if len(h) == 0 {
		return decode(w, r, req)
	}
	if len(h) > 1 || r.ContentLength != 0 {
		return fmt.Errorf("%w: the run's call goes in one %s header or in the body, not both", errBadRequest, wire.RunCallHeader)
	}
	b, err := base64.RawURLEncoding.DecodeString(h[0])
	if err != nil {
		return fmt.Errorf("%w: %s header: not base64url: %v", errBadRequest, wire.RunCallHeader, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return fmt.Errorf("%w: %s header: %v", errBadRequest, wire.RunCallHeader, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s header: more than one JSON value", errBadRequest, wire.RunCallHeader)
	}
	return nil
}

// decode reads a JSON body strictly: bounded, known fields only, one value.
// An empty body leaves v as it is.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, api.MaxBody)
		}
		return fmt.Errorf("%w: body: %v", errBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: body: more than one JSON value", errBadRequest)
	}
	return nil
}

// timeoutCtx bounds a request by the timeout it names, or the default.
func timeoutCtx(r *http.Request, timeout string) (context.Context, context.CancelFunc, error) {
	d, err := parseTimeout(timeout, api.DefaultAcquireTimeout)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// parseTimeout parses a request's timeout; empty is def.
func parseTimeout(timeout string, def time.Duration) (time.Duration, error) {
	if timeout == "" {
		return def, nil
	}
	v, err := time.ParseDuration(timeout)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%w: timeout %q: want a positive duration like 30s", errBadRequest, timeout)
	}
	return v, nil
}

// Thresholds of DiskHealth.Warning.
const (
	diskFullBytes  = 1 << 20 // under this, the state root counts as full
	diskLowPercent = 5       // under this share free, as low
)

// StateRootHealth reads the state root's filesystem.
func StateRootHealth(path string) *api.DiskHealth {
	h := &api.DiskHealth{Path: path}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		h.Warning = fmt.Sprintf("cannot read its filesystem: %v", err)
		return h
	}
	bs := int64(st.Bsize)
	h.Size, h.Free = int64(st.Blocks)*bs, int64(st.Bavail)*bs
	h.Inodes, h.FreeInodes = int64(st.Files), int64(st.Ffree)
	switch {
	case h.Free < diskFullBytes || (h.Inodes > 0 && h.FreeInodes == 0):
		h.Warning = "full: sandboxes' writes to their scratch fail with ENOSPC, and new volumes and sandboxes cannot be made"
	case h.Free*100 < h.Size*diskLowPercent:
		h.Warning = fmt.Sprintf("low on space: under %d%% free", diskLowPercent)
	case h.Inodes > 0 && h.FreeInodes*100 < h.Inodes*diskLowPercent:
		h.Warning = fmt.Sprintf("low on inodes: under %d%% free", diskLowPercent)
	}
	return h
}

// health answers ready (200) only while dockerd answers and the host can
// take another sandbox: memory budget left, or idle sandboxes to hand out
// (the budget evicts idle ones for a create). Else 503, with the reasons.
func (a *Server) health(w http.ResponseWriter, r *http.Request) {
	st := a.Registry.Status()
	h := api.HealthResponse{Docker: true, MemoryUsed: st.MemoryUsed, MemoryTotal: st.MemoryTotal}
	for _, p := range st.Pools {
		h.Idle += p.Stats.Idle
		h.InUse += p.Stats.InUse
	}
	if a.Docker != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		d := a.Docker(ctx)
		cancel()
		if d == nil || !d.OK {
			h.Docker = false
			why := "dockerd does not answer"
			if d != nil && d.Error != "" {
				why += ": " + d.Error
			}
			h.Reasons = append(h.Reasons, why)
		}
	}
	if h.MemoryTotal > 0 && h.MemoryUsed >= h.MemoryTotal && h.Idle == 0 {
		h.Reasons = append(h.Reasons, fmt.Sprintf("memory budget spent (%d of %d bytes) and no idle sandbox", h.MemoryUsed, h.MemoryTotal))
	}
	h.Ready = len(h.Reasons) == 0
	code := http.StatusOK
	if !h.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (a *Server) status(w http.ResponseWriter, r *http.Request) {
	resp := api.StatusResponse{Version: a.Version, Backend: a.Backend, Status: a.Registry.Status(), Volumes: []api.VolumeStatus{}, Limits: a.Limits, Scratch: a.Scratch,
		StateRoot: StateRootHealth(a.Registry.Root())}
	resp.Host, _ = os.Hostname()
	if a.Docker != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		resp.Docker = a.Docker(ctx)
		cancel()
	}
	if a.Volumes != nil {
		resp.Volumes = append(resp.Volumes, a.Volumes()...)
	}
	if key, limited := peer(r); limited {
		mine := []api.Lease{}
		for _, l := range resp.Leases {
			if a.Registry.LeaseOwner(l.ID) == key {
				mine = append(mine, l)
			}
		}
		resp.Leases = mine
	}
	if resp.Leases == nil {
		resp.Leases = []api.Lease{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *Server) run(w http.ResponseWriter, r *http.Request) {
	var req api.RunCall
	if err := decodeRunCall(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case req.Sandbox != "":
		if req.Pool != "" || req.Image != "" || req.Entrypoint != nil || req.Reuse {
			writeError(w, fmt.Errorf("%w: an exec in a sandbox names no pool, image or entrypoint, and does not reuse", errBadRequest))
			return
		}
		if err := sandboxset.ValidateSandboxID(req.Sandbox); err != nil {
			writeError(w, fmt.Errorf("%w: %w", errBadRequest, err))
			return
		}
	case (req.Pool == "") == (req.Image == ""):
		writeError(w, fmt.Errorf("%w: name exactly one of pool and image", errBadRequest))
		return
	}
	if req.Image != "" {
		if err := imageref.Validate(req.Image); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.WorkingDir != "" && !strings.HasPrefix(req.WorkingDir, "/") {
		writeError(w, fmt.Errorf("%w: working_dir %q: must be absolute", errBadRequest, req.WorkingDir))
		return
	}
	if api.IsRunUpgrade(r.Header) {
		a.runStream(w, r, req)
		return
	}
	ctx, cancel, err := timeoutCtx(r, req.Timeout)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	res, err := a.Registry.RunHeld(ctx, req.RunRequest)
	if err != nil {
		writeError(w, err)
		return
	}
	defer res.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = res.WriteJSON(w)
}

// runStream serves a run on the connection itself: the sandbox is taken
// (errors are HTTP errors), then the connection is upgraded and carries
// the run protocol (shim/agent) until the command exits. Taking the
// sandbox is bounded as an acquire is; the run by its timeout, or by
// registry.MaxRun.
func (a *Server) runStream(w http.ResponseWriter, r *http.Request, req api.RunCall) {
	run, err := parseTimeout(req.Timeout, registry.MaxRun)
	if err != nil {
		writeError(w, err)
		return
	}
	run = min(run, registry.MaxRun)
	// The run outlives the handler's request context once hijacked.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), run)
	defer cancel()
	tctx, tcancel := context.WithTimeout(ctx, min(run, api.DefaultAcquireTimeout))
	stop := context.AfterFunc(r.Context(), tcancel) // the client left while we waited
	sess, err := a.Registry.OpenRun(tctx, req.RunRequest)
	stop()
	tcancel()
	if err != nil {
		writeError(w, err)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		sess.Abort()
		writeError(w, fmt.Errorf("run: upgrade the connection: %w", err))
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{}) // the server's deadlines were for the request
	if _, err := brw.WriteString(api.RunUpgradeResponse); err != nil || brw.Flush() != nil {
		sess.Abort()
		return
	}
	rw := struct {
		io.Reader
		io.Writer
	}{brw.Reader, conn}
	if brw.Reader.Buffered() == 0 {
		rw.Reader = conn
	}
	_, _ = sess.Relay(ctx, agent.NewConn(rw))
}
