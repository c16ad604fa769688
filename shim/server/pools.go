package server

import (
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/internal/units"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

func (a *Server) listPools(w http.ResponseWriter, r *http.Request) {
	out := []api.PoolStatus{}
	for _, p := range a.Registry.PoolsOf(r.Context()) {
		out = append(out, p.Status())
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Server) getPool(w http.ResponseWriter, r *http.Request) {
	p, err := a.Registry.PoolOf(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p.Status())
}

func (a *Server) putPool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var pc spec.PoolConfig
	if err := decode(w, r, &pc); err != nil {
		writeError(w, err)
		return
	}
	if pc.Memory == 0 {
		pc.Memory = spec.DefaultPoolMemory
	}
	_, lookupErr := a.Registry.Pool(name)
	if _, err := a.Registry.PutPool(r.Context(), name, pc); err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if lookupErr != nil {
		code = http.StatusCreated
	}
	p, err := a.Registry.PoolOf(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, code, p.Status())
}

func (a *Server) deletePool(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.DeletePool(r.Context(), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Server) count(w http.ResponseWriter, r *http.Request) (api.CountRequest, bool) {
	var req api.CountRequest
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

func (a *Server) warm(w http.ResponseWriter, r *http.Request) {
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

func (a *Server) shrink(w http.ResponseWriter, r *http.Request) {
	req, ok := a.count(w, r)
	if !ok {
		return
	}
	if err := a.Registry.Shrink(r.Context(), r.PathValue("name"), *req.N); err != nil {
		writeError(w, err)
		return
	}
	a.getPool(w, r)
}

// runtimeCheck answers ol-shim-runtime's create: serve the container from
// a pool, or hand it to runc. Only local root may ask (the runtime runs as
// root); the pool is one root may use by image, made on demand as for
// `ol-shim run IMAGE`, so it starts warming as dockerd goes on.
func (a *Server) runtimeCheck(w http.ResponseWriter, r *http.Request) {
	if _, limited := peer(r); limited {
		writeError(w, fmt.Errorf("runtime check: %w: only root on this host may ask", errdefs.ErrPermissionDenied))
		return
	}
	var req api.RuntimeCheckRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if a.ServeCheck == nil {
		writeJSON(w, http.StatusOK, api.RuntimeCheck{Why: "this daemon does not serve containers (not the Docker backend)"})
		return
	}
	image, why, err := a.ServeCheck(r.Context(), req.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	if why != "" {
		writeJSON(w, http.StatusOK, api.RuntimeCheck{Why: why})
		return
	}
	p, err := a.Registry.PoolForImage(r.Context(), image, req.User)
	if err != nil {
		writeJSON(w, http.StatusOK, api.RuntimeCheck{Image: image, Why: err.Error()})
		return
	}
	if n := p.Config.Spec().NetworkMode(); n != "none" {
		writeJSON(w, http.StatusOK, api.RuntimeCheck{Image: image, Why: fmt.Sprintf("pool %q has network %q; the container has none", p.Name, n)})
		return
	}
	writeJSON(w, http.StatusOK, api.RuntimeCheck{Serve: true, Image: image, Pool: p.Name})
}

// grow raises a volume's limits. Only local root may: a volume's limits
// bound a sandbox's scratch and the host's disk.
func (a *Server) grow(w http.ResponseWriter, r *http.Request) {
	if _, limited := peer(r); limited {
		writeError(w, fmt.Errorf("volume %q: %w: only root on this host may grow a volume", clip(r.PathValue("name")), errdefs.ErrPermissionDenied))
		return
	}
	if a.Grow == nil {
		writeError(w, fmt.Errorf("volume %q: %w: this daemon has no volumes", clip(r.PathValue("name")), errdefs.ErrNotImplemented))
		return
	}
	var req api.GrowRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	var size int64
	if req.Size != "" {
		var err error
		if size, err = units.ParseSize(req.Size); err != nil || size <= 0 {
			writeError(w, fmt.Errorf("%w: size %q: want a positive size, e.g. 128M", errBadRequest, clip(req.Size)))
			return
		}
	}
	if req.Inodes < 0 || (size == 0 && req.Inodes == 0) {
		writeError(w, fmt.Errorf("%w: want {\"size\": \"128M\"} and/or {\"inodes\": a count > 0}", errBadRequest))
		return
	}
	st, err := a.Grow(r.Context(), r.PathValue("name"), size, req.Inodes)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
