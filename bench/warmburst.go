package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
)

// warm: group 2. A raw unpause of a paused container, a warm acquire (the
// pool unpauses a paused sandbox) and a hot acquire (the sandbox is still
// unpaused within its pause grace), interleaved; then hot round trips per
// second with 1 and 8 clients.
func (r *run) warm(ctx context.Context) error {
	id, err := r.rawContainer(ctx)
	if err != nil {
		return err
	}
	defer r.remove(ctx, id)
	if _, err := r.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
		return err
	}
	for i := range r.sz.rawRounds {
		if err := r.timed(sRawUnpause, func() error {
			_, err := r.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
			return err
		}); err != nil {
			return err
		}
		if _, err := r.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
			return err
		}
		for _, p := range []struct{ pool, series string }{{"warm", sWarmAcquire}, {"hot", sHotAcquire}} {
			var l api.Lease
			if err := r.timed(p.series, func() (err error) {
				l, err = r.d.c.Acquire(ctx, api.AcquireRequest{Pool: p.pool})
				return err
			}); err != nil {
				return err
			}
			if l.Outcome != p.pool {
				return fmt.Errorf("pool %s gave a %s sandbox", p.pool, l.Outcome)
			}
			if err := r.d.c.Release(ctx, l.ID); err != nil {
				return err
			}
		}
		if (i+1)%max(1, r.sz.rawRounds/5) == 0 {
			step("  %d/%d rounds", i+1, r.sz.rawRounds)
		}
	}
	for _, s := range []string{sRawUnpause, sWarmAcquire, sHotAcquire} {
		r.addLatency("2. warm and hot", s)
	}
	warm, raw, cold := pct(r.series[sWarmAcquire], .5), pct(r.series[sRawUnpause], .5), pct(r.series[sColdAcquire], .5)
	r.addTarget("ol-shim warm acquire / raw API unpause, p50", "≤ 0.6×", float64(warm) <= 0.6*float64(raw), "%.2f×", float64(warm)/float64(raw))
	r.addTarget("ol-shim cold acquire / warm acquire, p50", "≥ 30×", float64(cold) >= 30*float64(warm), "%.1f×", float64(cold)/float64(warm))
	r.addValue("2. warm and hot", "pause and resume through", r.d.pauseVia(ctx))

	for _, clients := range []int{1, 8} {
		rate, err := r.hotRate(ctx, clients)
		if err != nil {
			return err
		}
		r.addValue("2. warm and hot", fmt.Sprintf("hot acquire+release round trips over the API socket, %d client(s)", clients), fmt.Sprintf("%.0f /s", rate))
		step("  hot round trips, %d client(s): %.0f/s", clients, rate)
		if clients == 8 {
			r.addTarget("hot acquire+release over the API socket (8 clients)", "≥ 5,000 /s", rate >= 5000, "%.0f /s", rate)
		}
	}
	return nil
}

func (r *run) hotRate(ctx context.Context, clients int) (float64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	stop := time.Now().Add(r.sz.hotFor)
	var wg sync.WaitGroup
	begin := time.Now()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				l, err := r.d.c.Acquire(ctx, api.AcquireRequest{Pool: "hot"})
				if err == nil {
					err = r.d.c.Release(ctx, l.ID)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(begin).Seconds(), firstErr
}

// burst: group 4. The same number of requests from the same number of
// concurrent clients, each a CLI process: docker run --rm; ol-shim run on a
// pool of min_idle warm sandboxes that never grows past them (callers past
// max_size wait for a returned sandbox) with --reuse; and ol-shim run with a
// fresh sandbox per request (the default, like --rm: each run destroys its
// sandbox and the pool refills in the background).
func (r *run) burst(ctx context.Context) error {
	n, c := r.sz.burstRequests, r.sz.burstClients
	for _, side := range []struct {
		series, pool string
		fn           func() error
	}{
		{sBurstDocker, "", func() error { return r.dockerRun(ctx) }},
		{sBurstFn, "burst-fn", func() error { return r.callHandler(ctx, "burst-fn") }},
		{sBurstReuse, "burst", func() error { return r.olRun(ctx, "--pool", "burst", "--reuse", "true") }},
		{sBurstFresh, "burst-fresh", func() error { return r.olRun(ctx, "--pool", "burst-fresh", "true") }},
		{sBurstRecycle, "burst-recycle", func() error { return r.olRun(ctx, "--pool", "burst-recycle", "true") }},
	} {
		if err := r.quiet(ctx); err != nil {
			return err
		}
		if side.pool == "burst-fresh" {
			if err := r.growBurst(ctx, n, c, side.fn); err != nil {
				return err
			}
		}
		lat, wall, err := burst(n, c, side.fn)
		if err != nil {
			return fail(side.series, err)
		}
		r.series[side.series] = lat
		r.addLatency("4. burst", side.series)
		r.addValue("4. burst", side.series+": throughput", fmt.Sprintf("%.1f req/s (%d requests, %d clients, %v)", float64(n)/wall.Seconds(), n, c, wall.Round(100*time.Millisecond)))
		step("  %s: %d requests in %v, p50 %v, p99 %v", side.series, n, wall.Round(100*time.Millisecond), ms(pct(lat, .5)), ms(pct(lat, .99)))
	}
	if err := r.burst24(ctx); err != nil {
		return err
	}
	dk := pct(r.series[sBurstDocker], .99)
	for _, s := range []string{sBurstFn, sBurstReuse, sBurstFresh, sBurstRecycle} {
		ol := pct(r.series[s], .99)
		goal := 5.0
		if s == sBurstFresh {
			goal = 1 // a create per run, as docker run makes
		}
		r.addTarget(fmt.Sprintf("burst of %d from %d clients: docker run p99 / %s p99", n, c, strings.TrimPrefix(s, "burst: ")), fmt.Sprintf("≥ %g×", goal), float64(dk) >= goal*float64(ol), "%.1f×", float64(dk)/float64(ol))
	}
	return nil
}

// callHandler is one function call the way a FaaS front end makes it: a
// sandbox from the pool, an HTTP request to the function's runtime on the
// unix socket in its scratch directory (/host/ol.sock inside), the sandbox
// back to the pool.
func (r *run) callHandler(ctx context.Context, pool string) error {
	l, err := r.d.c.Acquire(ctx, api.AcquireRequest{Pool: pool, Timeout: "5m"})
	if err != nil {
		return err
	}
	sock := filepath.Join(l.ScratchPath, "ol.sock")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://sandbox/")
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && !strings.HasPrefix(string(body), "ok ") {
			err = fmt.Errorf("the handler answered %q", body)
		}
	}
	hc.CloseIdleConnections()
	if err != nil {
		r.d.c.Destroy(ctx, l.ID, "bench: handler failed")
		return fmt.Errorf("sandbox %s: %w", l.SandboxID, err)
	}
	return r.d.c.Release(ctx, l.ID)
}

// burst runs n calls of fn from c goroutines and returns each call's
// latency and the wall time of all.
func burst(n, c int, fn func() error) ([]time.Duration, time.Duration, error) {
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	var mu sync.Mutex
	var lat []time.Duration
	var errs []error
	var wg sync.WaitGroup
	begin := time.Now()
	for range c {
		wg.Go(func() {
			for range jobs {
				t := time.Now()
				err := fn()
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, time.Since(begin), errors.Join(errs...)
}
