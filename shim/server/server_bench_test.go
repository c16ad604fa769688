package server

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// BenchmarkAPIHotRoundTrip measures acquire+release over the API's unix
// socket on the mock backend, on the hot path (pause grace): what the API
// and registry add to a sandbox hand-out.
func BenchmarkAPIHotRoundTrip(b *testing.B) {
	reg, err := registry.New(registry.Config{Provider: mockProvider(b, b.TempDir()), Root: b.TempDir(), Lease: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close(context.Background(), true)
	sock := filepath.Join(b.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: (&Server{Registry: reg, Backend: "mock"}).Handler()}
	go srv.Serve(l)
	defer srv.Close()
	c := api.NewClient(sock)
	ctx := context.Background()
	if _, err := reg.PutPool(context.Background(), "hot", spec.PoolConfig{Image: "img", Memory: 32 << 20, PauseGrace: spec.Duration(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			le, err := c.Acquire(ctx, api.AcquireRequest{Pool: "hot"})
			if err != nil {
				b.Error(err)
				return
			}
			if err := c.Release(ctx, le.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
