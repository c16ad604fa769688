package api

import (
	"context"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// ErrorBody is the body of every error answer.
type ErrorBody = wire.ErrorBody

// HTTPStatus is the one mapping of error classes to HTTP status codes:
// errdefs' (errhttp), then 504 for a deadline that passed with no other
// class. An error of no class is a 500.
func HTTPStatus(err error) int {
	code := errhttp.ToHTTP(err)
	if code == http.StatusInternalServerError && errdefs.IsDeadlineExceeded(err) {
		return http.StatusGatewayTimeout
	}
	return code
}

// classOf is the error class of an HTTP status code, the inverse of
// HTTPStatus.
func classOf(code int) error {
	if code == http.StatusGatewayTimeout {
		return context.DeadlineExceeded
	}
	return errhttp.ToNative(code)
}
