//go:build integration

package docker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// BenchmarkDocker measures, in one run against one dockerd and interleaved
// round by round so drift hits all alike:
//
//   - raw-unpause: a ContainerUnpause call on a paused container;
//   - warm-get:    GetOrCreateUnpaused on a pool with a paused sandbox;
//   - cold-get:    GetOrCreateUnpaused creating a sandbox (create, start,
//     readiness: the runtime answering on /host/ol.sock);
//   - raw-create:  ContainerCreate + ContainerStart of the same container.
//
// It reports p50 and p99 of each in microseconds, and the ratios the pool is
// judged by. Run it with: make bench-docker
func BenchmarkDocker(b *testing.B) {
	const fastRounds, slowRounds = 300, 30
	ctx := context.Background()
	e := newEnv(b)
	ps := spec.PoolSpec{Image: runtimeImage, Cmd: []string{"/runtime"}, Ready: &spec.Readiness{Socket: "ol.sock"}}
	newSet := func(name string) *sandboxset.Set {
		be, err := e.d.Backend(name, ps)
		if err != nil {
			b.Fatal(err)
		}
		s, err := sandboxset.New(sandboxset.Config{Name: name, Backend: be, Scratch: e.scratch})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	warm, cold := newSet("warm"), newSet("cold")
	defer warm.Close(ctx)
	defer cold.Close(ctx)

	// A paused container for the raw unpause, made like a sandbox.
	rawBackend, err := e.d.Backend("raw", ps)
	if err != nil {
		b.Fatal(err)
	}
	dir, _ := e.scratch.Make(ctx, "raw-unpause")
	raw, err := rawBackend.Create(ctx, sandboxset.Spec{ID: "raw-unpause", Pool: "raw", ScratchDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	rawID := raw.(*Sandbox).ContainerID()
	defer raw.Destroy(ctx, "bench")
	if err := raw.Pause(ctx); err != nil {
		b.Fatal(err)
	}
	// One sandbox in the warm pool.
	r, err := warm.GetOrCreateUnpaused(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Put(); err != nil {
		b.Fatal(err)
	}

	var rawUnpause, warmGet, coldGet, rawCreate []time.Duration
	measure := func(dst *[]time.Duration, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		*dst = append(*dst, time.Since(start))
	}
	for b.Loop() {
		rawUnpause, warmGet, coldGet, rawCreate = nil, nil, nil, nil
		for i := range fastRounds {
			measure(&rawUnpause, func() error {
				_, err := e.d.cli.ContainerUnpause(ctx, rawID, client.ContainerUnpauseOptions{})
				return err
			})
			if err := raw.Pause(ctx); err != nil {
				b.Fatal(err)
			}
			var ref *sandboxset.Ref
			measure(&warmGet, func() (err error) {
				ref, err = warm.GetOrCreateUnpaused(ctx)
				return err
			})
			if ref.Outcome() != sandboxset.Warm {
				b.Fatalf("warm pool gave a %v sandbox", ref.Outcome())
			}
			if err := ref.Put(); err != nil {
				b.Fatal(err)
			}
			if i%(fastRounds/slowRounds) != 0 {
				continue
			}
			measure(&coldGet, func() (err error) {
				ref, err = cold.GetOrCreateUnpaused(ctx)
				return err
			})
			if err := ref.Destroy("bench"); err != nil {
				b.Fatal(err)
			}
			id := fmt.Sprintf("raw-create-%d", i)
			d, _ := e.scratch.Make(ctx, id)
			cfg, hc := rawBackend.containerConfig(sandboxset.Spec{ID: id, Pool: "raw", ScratchDir: d})
			var cid string
			measure(&rawCreate, func() error {
				res, err := e.d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc})
				if err != nil {
					return err
				}
				cid = res.ID
				_, err = e.d.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{})
				return err
			})
			if _, err := e.d.cli.ContainerRemove(ctx, cid, client.ContainerRemoveOptions{Force: true}); err != nil {
				b.Fatal(err)
			}
		}
	}
	q := func(v []time.Duration, p float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return float64(s[min(int(p*float64(len(s))), len(s)-1)].Microseconds())
	}
	for _, m := range []struct {
		name string
		v    []time.Duration
	}{{"raw-unpause", rawUnpause}, {"warm-get", warmGet}, {"cold-get", coldGet}, {"raw-create+start", rawCreate}} {
		b.ReportMetric(q(m.v, 0.5), m.name+"-p50-µs")
		b.ReportMetric(q(m.v, 0.99), m.name+"-p99-µs")
		b.Logf("%-17s n=%3d  p50 %8.0fµs  p99 %8.0fµs", m.name, len(m.v), q(m.v, 0.5), q(m.v, 0.99))
	}
	b.ReportMetric(q(warmGet, 0.5)/q(rawUnpause, 0.5), "warm/raw-unpause")
	b.ReportMetric(q(coldGet, 0.5)/q(warmGet, 0.5), "cold/warm")
	b.Logf("warm-get / raw-unpause at p50: %.2fx (target <= 1.2x)", q(warmGet, 0.5)/q(rawUnpause, 0.5))
	b.Logf("cold-get / warm-get at p50:    %.1fx (target >= 20x)", q(coldGet, 0.5)/q(warmGet, 0.5))
}
