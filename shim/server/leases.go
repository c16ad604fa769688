package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/shim/api"
)

// ownLease checks that the client may touch lease id: root may touch any;
// another peer (a uid, a TLS client) only its own, and another's is not found, as if it did not
// exist.
func (a *Server) ownLease(r *http.Request, id string) error {
	key, limited := peer(r)
	if !limited {
		return nil
	}
	if _, err := a.Registry.Lease(id); err != nil {
		return err
	}
	if a.Registry.LeaseOwner(id) != key {
		return fmt.Errorf("lease %q: %w", clip(id), errdefs.ErrNotFound)
	}
	return nil
}

func (a *Server) acquire(w http.ResponseWriter, r *http.Request) {
	var req api.AcquireRequest
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
	// For a front end: the lease's later calls (release, renew, destroy)
	// must reach this host (HAProxy: stick store-response on it).
	w.Header().Set(api.LeaseHeader, l.ID)
	writeJSON(w, http.StatusOK, l)
}

func (a *Server) release(w http.ResponseWriter, r *http.Request) {
	if err := a.ownLease(r, r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	if err := a.Registry.Release(r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Server) destroy(w http.ResponseWriter, r *http.Request) {
	var req api.DestroyRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Reason) > 200 {
		writeError(w, fmt.Errorf("%w: reason longer than 200 bytes", errBadRequest))
		return
	}
	if err := a.ownLease(r, r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	if err := a.Registry.Destroy(r.PathValue("id"), req.Reason); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Server) renew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
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
	if err := a.ownLease(r, r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	l, err := a.Registry.Renew(r.PathValue("id"), d)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}
