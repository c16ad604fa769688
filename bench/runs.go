package main

import (
	"context"
	"fmt"
	"time"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
)

// Series of group 3b.
const (
	sOlRunReuse      = "ol-shim run --reuse IMAGE true, hot: within pause_grace (whole process, paired)"
	sDockerRunPaired = "docker run --rm IMAGE true (paired with the line below)"
	sOlRunReuseWarm  = "ol-shim run --reuse IMAGE true, warm: paused, runs spaced past pause_grace (whole process, paired)"
	sDockerRunWarm   = "docker run --rm IMAGE true (paired with the warm line below)"
	sOlRunBackToBack = "ol-shim run IMAGE true, back to back (fresh sandboxes, target grown)"
	sAgentRoundTrip  = "agent round trip: streamed run of true in a hot sandbox (API)"
)

// runs: group 3b, ol-shim run served from the pool, against the same run's
// docker run --rm (group 1+3, measured interleaved there).
func (r *run) runs(ctx context.Context) error {
	n := max(30, r.sz.coldRounds)
	if err := r.quiet(ctx); err != nil {
		return err
	}
	// As a user's shell times them: whole processes, in alternating pairs
	// with docker run --rm (the sandbox stays hot between runs: the ad-hoc
	// pool's pause grace is 1 s, a docker run takes less).
	if err := r.olRun(ctx, "--reuse", r.image, "true"); err != nil {
		return err
	}
	for range n {
		if err := r.timed(sDockerRunPaired, func() error { return r.dockerRun(ctx) }); err != nil {
			return err
		}
		if err := r.timed(sOlRunReuse, func() error { return r.olRun(ctx, "--reuse", r.image, "true") }); err != nil {
			return err
		}
	}
	// Warm: each pair waits past the ad hoc pool's pause_grace first, so
	// the sandbox is paused when the run takes it (a function called
	// every few seconds); the pool's warm takes are counted to be sure.
	grace := config.DefaultAdHocPauseGrace + 500*time.Millisecond
	warmBefore, err := r.adhocTakes(ctx)
	if err != nil {
		return err
	}
	for range n {
		time.Sleep(grace)
		if err := r.timed(sDockerRunWarm, func() error { return r.dockerRun(ctx) }); err != nil {
			return err
		}
		if err := r.timed(sOlRunReuseWarm, func() error { return r.olRun(ctx, "--reuse", r.image, "true") }); err != nil {
			return err
		}
	}
	warmAfter, err := r.adhocTakes(ctx)
	if err != nil {
		return err
	}
	if got := warmAfter - warmBefore; got != uint64(n) {
		r.notes = append(r.notes, fmt.Sprintf("%s: %d of %d takes were warm (paused), not all: the row mixes in hot or cold ones", sOlRunReuseWarm, got, n))
	}
	// Back to back, one client, each run destroying its sandbox: the pool
	// grows its target with the cold misses; the first runs let it.
	if err := r.quiet(ctx); err != nil {
		return err
	}
	for range 20 {
		if err := r.olRun(ctx, r.image, "true"); err != nil {
			return err
		}
	}
	for range n {
		if err := r.timed(sOlRunBackToBack, func() error { return r.olRun(ctx, r.image, "true") }); err != nil {
			return err
		}
	}
	// The agent alone: an API client in this process, a hot sandbox.
	if err := r.quiet(ctx); err != nil {
		return err
	}
	for i := range 3 * n {
		d, err := r.streamTrue(ctx)
		if err != nil {
			return fail(sAgentRoundTrip, err)
		}
		if i >= 5 { // the first ones warm the hot path up
			r.series[sAgentRoundTrip] = append(r.series[sAgentRoundTrip], d)
		}
	}
	for _, s := range []string{sDockerRunPaired, sOlRunReuse, sDockerRunWarm, sOlRunReuseWarm, sOlRunBackToBack, sAgentRoundTrip} {
		r.addLatency("3b. run from the pool", s)
	}
	// Back to back, one client outruns the refills: a run waits for a
	// create now and then, and how those waits fall moves the p50 more than
	// the mean (the runs per second).
	r.addValue("3b. run from the pool", sOlRunBackToBack+": mean", ms(mean(r.series[sOlRunBackToBack])))
	for _, c := range []struct {
		docker, series string
		goal           float64
	}{{sDockerRunPaired, sOlRunReuse, 40}, {sDockerRunWarm, sOlRunReuseWarm, 20}, {sDockerRun, sOlRunBackToBack, 3}} {
		ratio := float64(pct(r.series[c.docker], .5)) / float64(pct(r.series[c.series], .5))
		r.addTarget(fmt.Sprintf("%s / %s, p50", c.docker, c.series), fmt.Sprintf("≥ %g×", c.goal), ratio >= c.goal, "%.1f×", ratio)
	}
	step("  run --reuse p50 %v, back to back p50 %v, agent round trip p50 %v (docker run p50 %v)",
		ms(pct(r.series[sOlRunReuse], .5)), ms(pct(r.series[sOlRunBackToBack], .5)), ms(pct(r.series[sAgentRoundTrip], .5)), ms(pct(r.series[sDockerRun], .5)))
	return nil
}

// adhocTakes returns the warm takes of the ad hoc pool of the bench's
// image.
func (r *run) adhocTakes(ctx context.Context) (uint64, error) {
	pools, err := r.d.c.Pools(ctx)
	if err != nil {
		return 0, err
	}
	for _, p := range pools {
		if p.AdHoc && p.Image == r.image {
			return p.Stats.WarmHits, nil
		}
	}
	return 0, fmt.Errorf("no ad hoc pool of %s", r.image)
}

// streamTrue runs true in the hot pool through the streamed run API and
// returns how long the round trip took.
func (r *run) streamTrue(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	conn, err := r.d.c.RunStream(ctx, api.RunCall{RunRequest: api.RunRequest{Pool: "hot", Cmd: []string{"true"}, Reuse: true}})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var via string
	x, err := agent.Run(ctx, agent.NewConn(conn), agent.Start{}, agent.Stdio{Hello: func(h agent.Hello) { via = h.Via }})
	d := time.Since(begin)
	if err != nil {
		return 0, err
	}
	if x.Code != 0 || via != "agent" {
		return 0, fmt.Errorf("true in pool hot: exit %d via %q", x.Code, via)
	}
	return d, nil
}

// sBurstFreshFirst is the first burst of fresh runs, before the pool's
// target grew.
const sBurstFreshFirst = "burst: ol-shim run --pool burst-fresh true, first burst (target at min_idle)"

// growBurst runs bursts of fresh runs until the pool's target stops
// growing (three at most), the first one timed as sBurstFreshFirst: the
// measured burst then meets a pool sized by the demand it saw.
func (r *run) growBurst(ctx context.Context, n, c int, fn func() error) error {
	target := func() int {
		p, err := r.d.c.Pool(ctx, "burst-fresh")
		if err != nil {
			return -1
		}
		return p.Stats.MinIdle
	}
	for i := range 3 {
		before := target()
		lat, _, err := burst(n, c, fn)
		if err != nil {
			return fail(sBurstFreshFirst, err)
		}
		if i == 0 {
			r.series[sBurstFreshFirst] = lat
			r.addLatency("4. burst", sBurstFreshFirst)
		}
		if err := r.quiet(ctx); err != nil {
			return err
		}
		after := target()
		step("  warm-up burst %d of burst-fresh: p99 %v, target %d -> %d", i+1, ms(pct(lat, .99)), before, after)
		if after <= before {
			break
		}
	}
	r.addValue("4. burst", "burst-fresh target after the warm-up bursts", fmt.Sprint(target()))
	return nil
}

// Series of the burst of 24 fresh runs.
const (
	sBurst24Docker = "burst of 24: docker run --rm IMAGE true"
	sBurst24Fresh  = "burst of 24: ol-shim run --pool burst-fresh true (target grown)"
)

// burst24 measures the burst of 24 fresh runs from 16 clients
// against 24 docker runs, after the bursts before it grew the pool's
// target. With -quick the burst group is already this size.
func (r *run) burst24(ctx context.Context) error {
	if r.sz.burstRequests == 24 {
		return nil
	}
	for _, side := range []struct {
		series string
		fn     func() error
	}{
		{sBurst24Docker, func() error { return r.dockerRun(ctx) }},
		{sBurst24Fresh, func() error { return r.olRun(ctx, "--pool", "burst-fresh", "true") }},
	} {
		if err := r.quiet(ctx); err != nil {
			return err
		}
		lat, _, err := burst(24, 16, side.fn)
		if err != nil {
			return fail(side.series, err)
		}
		r.series[side.series] = lat
		r.addLatency("4. burst", side.series)
		step("  %s: p50 %v, p99 %v", side.series, ms(pct(lat, .5)), ms(pct(lat, .99)))
	}
	dk, ol := pct(r.series[sBurst24Docker], .99), pct(r.series[sBurst24Fresh], .99)
	r.addTarget("burst of 24 from 16 clients: docker run p99 / ol-shim run --pool burst-fresh true p99 (target grown)", "≥ 5×", float64(dk) >= 5*float64(ol), "%.1f×", float64(dk)/float64(ol))
	return nil
}
