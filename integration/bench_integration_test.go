//go:build integration

package integration

import (
	"context"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
)

// BenchmarkServe measures, in one run against one dockerd:
//
//   - `ol-shim run --pool P true` (the CLI, as a user runs it) against
//     `docker run --rm --network none IMAGE true`, interleaved;
//
//   - the same run through the API client, without the CLI's process start;
//
//   - hot acquire+release round trips over the API socket (pause grace
//     keeps the sandbox unpaused), with 1 and 8 clients.
//
//     make bench-serve
func BenchmarkServe(b *testing.B) {
	d := newDaemon(b, `
[pools.hot]
image = "ol-shim-test/busybox:latest"
min_idle = 1
pause_grace = "1h"
memory = "32M"

[pools.runs]
image = "ol-shim-test/busybox:latest"
cmd = ["sleep", "infinity"]
min_idle = 4
memory = "32M"
`)
	ctx := context.Background()
	const rounds = 30
	var olRun, apiRun, dockerRun []time.Duration
	timeIt := func(dst *[]time.Duration, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		*dst = append(*dst, time.Since(start))
	}
	d.waitIdle("runs", 4)
	for b.Loop() {
		olRun, apiRun, dockerRun = nil, nil, nil
		for range rounds {
			timeIt(&olRun, func() error {
				return exec.Command(bin, "--socket", d.socket, "run", "--pool", "runs", "true").Run()
			})
			timeIt(&apiRun, func() error {
				_, err := d.c.Run(ctx, api.RunCall{RunRequest: api.RunRequest{Pool: "runs", Cmd: []string{"true"}}})
				return err
			})
			timeIt(&dockerRun, func() error {
				return exec.Command("docker", "run", "--rm", "--network", "none", busybox, "true").Run()
			})
		}
	}
	q := func(v []time.Duration, p float64) time.Duration {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[min(int(p*float64(len(s))), len(s)-1)]
	}
	for _, m := range []struct {
		name string
		v    []time.Duration
	}{{"ol-shim-run-cli", olRun}, {"ol-shim-run-api", apiRun}, {"docker-run", dockerRun}} {
		b.ReportMetric(float64(q(m.v, 0.5).Microseconds()), m.name+"-p50-µs")
		b.Logf("%-16s n=%d p50 %8v p99 %8v", m.name, len(m.v), q(m.v, 0.5).Round(time.Millisecond), q(m.v, 0.99).Round(time.Millisecond))
	}
	b.ReportMetric(float64(q(dockerRun, 0.5))/float64(q(olRun, 0.5)), "docker/ol-shim-cli")
	b.Logf("docker run / ol-shim run (CLI) at p50: %.1fx (target >= 5x); through the API: %.1fx",
		float64(q(dockerRun, 0.5))/float64(q(olRun, 0.5)), float64(q(dockerRun, 0.5))/float64(q(apiRun, 0.5)))

	// The hot pool holds a sandbox per client before timing starts.
	if _, err := d.c.Warm(ctx, "hot", 8); err != nil {
		b.Fatal(err)
	}
	for _, clients := range []int{1, 8} {
		var n atomic.Int64
		stop := time.Now().Add(3 * time.Second)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for time.Now().Before(stop) {
					l, err := d.c.Acquire(ctx, api.AcquireRequest{Pool: "hot"})
					if err != nil {
						b.Error(err)
						return
					}
					if err := d.c.Release(ctx, l.ID); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		rate := float64(n.Load()) / 3
		b.ReportMetric(rate, "hot-roundtrips/s-"+map[int]string{1: "1client", 8: "8clients"}[clients])
		b.Logf("hot acquire+release over the API, %d client(s): %.0f round trips/s (target >= 5000)", clients, rate)
	}
}
