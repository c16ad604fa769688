package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
)

// MaxBody bounds an API request body.
const MaxBody = 8 << 20

// DefaultAcquireTimeout bounds an acquire or run that names no timeout.
const DefaultAcquireTimeout = 2 * time.Minute

// API serves the registry as JSON over HTTP (on a unix socket). Every path
// is under /v1; errors are {"message": "..."} with a status code chosen by
// StatusCode.
type API struct {
	Registry *Registry
	Docker   *Docker          // nil with the mock backend
	Volumes  *scratch.Manager // nil without the volume plugin
	Version  string
	Backend  string
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("GET /v1/pools", a.listPools)
	mux.HandleFunc("GET /v1/pools/{name}", a.getPool)
	mux.HandleFunc("PUT /v1/pools/{name}", a.putPool)
	mux.HandleFunc("DELETE /v1/pools/{name}", a.deletePool)
	mux.HandleFunc("POST /v1/pools/{name}/warm", a.warm)
	mux.HandleFunc("POST /v1/pools/{name}/shrink", a.shrink)
	mux.HandleFunc("POST /v1/acquire", a.acquire)
	mux.HandleFunc("POST /v1/leases/{id}/release", a.release)
	mux.HandleFunc("POST /v1/leases/{id}/destroy", a.destroy)
	mux.HandleFunc("POST /v1/leases/{id}/renew", a.renew)
	mux.HandleFunc("POST /v1/run", a.run)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%s %s: %w: no such endpoint (the API is under /v1)", r.Method, r.URL.Path, ErrNotFound))
	})
	return mux
}

// errBadRequest marks a request the API could not read.
var errBadRequest = errors.New("bad request")

// StatusCode maps an error class to an HTTP status.
func StatusCode(err error) int {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, scratch.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, errBadRequest), errors.Is(err, ErrInvalidSpec), errors.Is(err, ErrInvalidConfig),
		errors.Is(err, sandboxset.ErrInvalidConfig), errors.Is(err, scratch.ErrInvalid), errors.Is(err, ErrImageNotFound):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoExec):
		return http.StatusNotImplemented
	case errors.Is(err, sandboxset.ErrClosed), errors.Is(err, ErrBudget):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, StatusCode(err), errorBody{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: bounded, known fields only, one value.
// An empty body leaves v as it is.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, MaxBody)
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
	d := DefaultAcquireTimeout
	if timeout != "" {
		v, err := time.ParseDuration(timeout)
		if err != nil || v <= 0 {
			return nil, nil, fmt.Errorf("%w: timeout %q: want a positive duration like 30s", errBadRequest, timeout)
		}
		d = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// DockerHealth is what the daemon knows of dockerd.
type DockerHealth struct {
	OK         bool   `json:"ok"`
	Version    string `json:"version,omitempty"`
	APIVersion string `json:"api_version,omitempty"`
	Error      string `json:"error,omitempty"`
}

// DiskHealth is the state root's filesystem, where sandboxes' scratch data
// and the volume records live.
type DiskHealth struct {
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	Free       int64  `json:"free"`
	Inodes     int64  `json:"inodes,omitempty"`
	FreeInodes int64  `json:"free_inodes,omitempty"`
	// Warning is set when the filesystem is full or nearly so.
	Warning string `json:"warning,omitempty"`
}

// Thresholds of DiskHealth.Warning.
const (
	diskFullBytes  = 1 << 20 // under this, the state root counts as full
	diskLowPercent = 5       // under this share free, as low
)

// StateRootHealth reads the state root's filesystem.
func StateRootHealth(path string) *DiskHealth {
	h := &DiskHealth{Path: path}
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

// StatusResponse is GET /v1/status.
type StatusResponse struct {
	Version   string           `json:"version"`
	Backend   string           `json:"backend"`
	Docker    *DockerHealth    `json:"docker,omitempty"`
	StateRoot *DiskHealth      `json:"state_root,omitempty"`
	Volumes   []scratch.Status `json:"volumes"`
	Status
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	resp := StatusResponse{Version: a.Version, Backend: a.Backend, Status: a.Registry.Status(), Volumes: []scratch.Status{},
		StateRoot: StateRootHealth(a.Registry.Root())}
	if a.Docker != nil {
		h := &DockerHealth{}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		v, err := a.Docker.cli.ServerVersion(ctx, client.ServerVersionOptions{})
		cancel()
		if err != nil {
			h.Error = err.Error()
		} else {
			h.OK, h.Version, h.APIVersion = true, v.Version, a.Docker.APIVersion()
		}
		resp.Docker = h
	}
	if a.Volumes != nil {
		for _, v := range a.Volumes.List() {
			if v.Options.Limited() && v.Mounts > 0 {
				if st, err := a.Volumes.Get(v.Name); err == nil {
					v = st
				}
			}
			resp.Volumes = append(resp.Volumes, v)
		}
	}
	if resp.Pools == nil {
		resp.Pools = []PoolStatus{}
	}
	if resp.Leases == nil {
		resp.Leases = []Lease{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *API) listPools(w http.ResponseWriter, r *http.Request) {
	out := []PoolStatus{}
	for _, p := range a.Registry.Pools() {
		out = append(out, PoolStatus{Name: p.Name, Image: p.Config.Image, AdHoc: p.AdHoc, Config: p.Config, Stats: p.Stats()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getPool(w http.ResponseWriter, r *http.Request) {
	p, err := a.Registry.Pool(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PoolStatus{Name: p.Name, Image: p.Config.Image, AdHoc: p.AdHoc, Config: p.Config, Stats: p.Stats()})
}

func (a *API) putPool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var pc PoolConfig
	if err := decode(w, r, &pc); err != nil {
		writeError(w, err)
		return
	}
	if pc.Memory == 0 {
		pc.Memory = DefaultPoolMemory
	}
	_, lookupErr := a.Registry.Pool(name)
	if _, err := a.Registry.PutPool(name, pc); err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if lookupErr != nil {
		code = http.StatusCreated
	}
	p, err := a.Registry.Pool(name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, code, PoolStatus{Name: p.Name, Image: p.Config.Image, Config: p.Config, Stats: p.Stats()})
}

func (a *API) deletePool(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.DeletePool(r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CountRequest is the body of warm and shrink.
type CountRequest struct {
	N       *int   `json:"n"`
	Timeout string `json:"timeout,omitempty"`
}

func (a *API) count(w http.ResponseWriter, r *http.Request) (CountRequest, bool) {
	var req CountRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return req, false
	}
	if req.N == nil || *req.N < 0 {
		writeError(w, fmt.Errorf("%w: want {\"n\": a count >= 0}", errBadRequest))
		return req, false
	}
	return req, true
}

func (a *API) warm(w http.ResponseWriter, r *http.Request) {
	req, ok := a.count(w, r)
	if !ok {
		return
	}
	ctx, cancel, err := timeoutCtx(r, req.Timeout)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	if err := a.Registry.Warm(ctx, r.PathValue("name"), *req.N); err != nil {
		writeError(w, err)
		return
	}
	a.getPool(w, r)
}

func (a *API) shrink(w http.ResponseWriter, r *http.Request) {
	req, ok := a.count(w, r)
	if !ok {
		return
	}
	if err := a.Registry.Shrink(r.PathValue("name"), *req.N); err != nil {
		writeError(w, err)
		return
	}
	a.getPool(w, r)
}

// AcquireRequest is the body of POST /v1/acquire: a pool, or an image
// (served from its pool, made on demand).
type AcquireRequest struct {
	Pool    string `json:"pool,omitempty"`
	Image   string `json:"image,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

func (a *API) acquire(w http.ResponseWriter, r *http.Request) {
	var req AcquireRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if (req.Pool == "") == (req.Image == "") {
		writeError(w, fmt.Errorf("%w: name exactly one of pool and image", errBadRequest))
		return
	}
	ctx, cancel, err := timeoutCtx(r, req.Timeout)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	l, err := a.Registry.Acquire(ctx, req.Pool, req.Image)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (a *API) release(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.Release(r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// DestroyRequest is the body of POST /v1/leases/{id}/destroy.
type DestroyRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (a *API) destroy(w http.ResponseWriter, r *http.Request) {
	var req DestroyRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Reason) > 200 {
		writeError(w, fmt.Errorf("%w: reason longer than 200 bytes", errBadRequest))
		return
	}
	if err := a.Registry.Destroy(r.PathValue("id"), req.Reason); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// RenewRequest is the body of POST /v1/leases/{id}/renew.
type RenewRequest struct {
	Lease string `json:"lease,omitempty"` // from now; the default lease if empty
}

func (a *API) renew(w http.ResponseWriter, r *http.Request) {
	var req RenewRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	var d time.Duration
	if req.Lease != "" {
		v, err := time.ParseDuration(req.Lease)
		if err != nil || v <= 0 || v > 24*time.Hour {
			writeError(w, fmt.Errorf("%w: lease %q: want a duration in (0, 24h]", errBadRequest, req.Lease))
			return
		}
		d = v
	}
	l, err := a.Registry.Renew(r.PathValue("id"), d)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// APIRunRequest is the body of POST /v1/run.
type APIRunRequest struct {
	RunRequest
	Timeout string `json:"timeout,omitempty"`
}

func (a *API) run(w http.ResponseWriter, r *http.Request) {
	var req APIRunRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if (req.Pool == "") == (req.Image == "") {
		writeError(w, fmt.Errorf("%w: name exactly one of pool and image", errBadRequest))
		return
	}
	if req.Image != "" {
		if err := (PoolSpec{Image: req.Image}).Validate(); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.WorkingDir != "" && !strings.HasPrefix(req.WorkingDir, "/") {
		writeError(w, fmt.Errorf("%w: working_dir %q: must be absolute", errBadRequest, req.WorkingDir))
		return
	}
	ctx, cancel, err := timeoutCtx(r, req.Timeout)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	res, err := a.Registry.Run(ctx, req.RunRequest)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
