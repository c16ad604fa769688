package scratch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/docker/go-plugins-helpers/volume"

	"github.com/open-lambda/ol-shim/internal/serve"
)

// PluginLimits bound the plugin socket: its requests are a volume name, an
// ID and a few options, so a body of 1 MiB is already far more than any
// dockerd sends.
var PluginLimits = func() serve.Limits {
	l := serve.DefaultLimits
	l.MaxBody = 1 << 20
	return l
}()

// Handler returns the HTTP handler of the plugin protocol
// (docker.volumedriver/1.0): the routes of go-plugins-helpers' volume
// handler, answered as its sdk encodes them, but each body read through the
// server's bound and refused with a message that names the call.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, `{"Implements": ["VolumeDriver"]}`)
	})
	route(mux, "/VolumeDriver.Create", func(r *volume.CreateRequest) (any, error) { return nil, d.Create(r) })
	route(mux, "/VolumeDriver.Remove", func(r *volume.RemoveRequest) (any, error) { return nil, d.Remove(r) })
	route(mux, "/VolumeDriver.Mount", func(r *volume.MountRequest) (any, error) { return d.Mount(r) })
	route(mux, "/VolumeDriver.Unmount", func(r *volume.UnmountRequest) (any, error) { return nil, d.Unmount(r) })
	route(mux, "/VolumeDriver.Path", func(r *volume.PathRequest) (any, error) { return d.Path(r) })
	route(mux, "/VolumeDriver.Get", func(r *volume.GetRequest) (any, error) { return d.Get(r) })
	route(mux, "/VolumeDriver.List", func(*struct{}) (any, error) { return d.List() })
	route(mux, "/VolumeDriver.Capabilities", func(*struct{}) (any, error) { return d.Capabilities(), nil })
	return mux
}

// route serves one call: decode its request, call, encode the answer or
// the error.
func route[Req any](mux *http.ServeMux, path string, call func(*Req) (any, error)) {
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		req := new(Req)
		if err := json.NewDecoder(r.Body).Decode(req); err != nil && !errors.Is(err, io.EOF) {
			msg := "body is not a JSON request"
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				msg = fmt.Sprintf("body larger than %d bytes", mbe.Limit)
			}
			sdk.EncodeResponse(w, volume.NewErrorResponse(fmt.Sprintf("%s: %s", path[1:], msg)), true)
			return
		}
		res, err := call(req)
		if err != nil {
			sdk.EncodeResponse(w, volume.NewErrorResponse(err.Error()), true)
			return
		}
		if res == nil {
			res = struct{}{}
		}
		sdk.EncodeResponse(w, res, false)
	})
}

// Serve serves the plugin protocol on l, with PluginLimits, until l is
// closed.
func (d *Driver) Serve(l net.Listener) error {
	return serve.Server(d.Handler(), PluginLimits).Serve(serve.Listener(l, PluginLimits))
}
