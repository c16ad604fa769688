package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/docker"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// TestEveryErrorHasAStatus: every sentinel of every package reaches the
// HTTP status its class means, also wrapped with context as errors are
// where they start, and the client turns the status back into the class.
func TestEveryErrorHasAStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{spec.ErrInvalidSpec, http.StatusBadRequest},
		{config.ErrInvalidConfig, http.StatusBadRequest},
		{sandboxset.ErrInvalidConfig, http.StatusBadRequest},
		{scratch.ErrInvalid, http.StatusBadRequest},
		{scratch.ErrNotFound, http.StatusNotFound},
		{docker.ErrImageNotFound, http.StatusNotFound},
		{scratch.ErrExists, http.StatusConflict},
		{scratch.ErrInUse, http.StatusPreconditionFailed},
		{errdefs.ErrConflict, http.StatusConflict},
		{registry.ErrNoExec, http.StatusNotImplemented},
		{sandboxset.ErrForkUnsupported, http.StatusNotImplemented},
		{sandboxset.ErrClosed, http.StatusServiceUnavailable},
		{registry.ErrBudget, http.StatusServiceUnavailable},
		{docker.ErrNotReady, http.StatusServiceUnavailable},
		{api.ErrUnreachable, http.StatusServiceUnavailable},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{errors.New("something else"), http.StatusInternalServerError},
	} {
		wrapped := fmt.Errorf("pool %q: %w", "fn", tc.err)
		if got := api.HTTPStatus(wrapped); got != tc.code {
			t.Errorf("%v: status %d, want %d", tc.err, got, tc.code)
		}
		back := &api.APIError{Status: tc.code, Message: wrapped.Error()}
		if got := api.HTTPStatus(back); got != tc.code {
			t.Errorf("%v: the client's error has status %d, want %d", tc.err, got, tc.code)
		}
	}
	// A class and a deadline together: the class wins.
	both := fmt.Errorf("%w: waiting: %w", registry.ErrBudget, context.DeadlineExceeded)
	if got := api.HTTPStatus(both); got != http.StatusServiceUnavailable {
		t.Errorf("budget error with a deadline: %d, want 503", got)
	}
	if !errdefs.IsNotFound(&api.APIError{Status: http.StatusNotFound}) || !errdefs.IsConflict(&api.APIError{Status: http.StatusConflict}) {
		t.Error("the client's errors do not carry their class")
	}
}
