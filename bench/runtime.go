package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/ociruntime"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Series of group 9.
const (
	sRtDockerRun   = "docker run --rm --network none IMAGE true (runc)"
	sRtServed      = "docker run --rm --network none --runtime=ol-shim IMAGE true (served from the pool)"
	sRtRawUnpause  = "raw API unpause (runc)"
	sRtWarm        = "ol-shim warm acquire (API), sandboxes of runtime ol-shim"
	sRtResume      = "ol-shim-runtime resume, whole process"
	sRtRuncResume  = "runc resume, whole process"
	sRtPauseResume = "ol-shim-runtime pause + resume, whole processes"
	sRtRuncPR      = "runc pause + resume, whole processes"
)

// runtime: group 9. ol-shim-runtime registered with dockerd (and taken off
// afterwards, daemon.json as it was): docker run served from the pool
// against docker run with runc, in alternating pairs; warm acquire from a
// pool whose sandboxes run under ol-shim-runtime against a raw unpause;
// pause and resume as whole processes, ol-shim-runtime against runc.
func (r *run) runtime(ctx context.Context) (err error) {
	orig, rerr := os.ReadFile(ociruntime.DaemonJSON)
	existed := rerr == nil
	rtBin := filepath.Join(filepath.Dir(r.bin), "ol-shim-runtime")
	if out, err := exec.CommandContext(ctx, r.bin, "--socket", r.d.socket, "runtime", "install", "--path", rtBin).CombinedOutput(); err != nil {
		return fmt.Errorf("ol-shim runtime install: %v: %s", err, out)
	}
	defer func() {
		exec.Command(r.bin, "runtime", "uninstall", "--force").Run()
		if existed {
			os.WriteFile(ociruntime.DaemonJSON, orig, 0o644)
		} else {
			os.Remove(ociruntime.DaemonJSON)
		}
	}()
	if err := waitRuntimeListed(ctx); err != nil {
		return err
	}
	served := "ol-shim-bench/served:latest"
	if _, err := r.cli.ImageTag(ctx, client.ImageTagOptions{Source: r.image, Target: served}); err != nil {
		return fail("tag "+served, err)
	}
	time.Sleep(11 * time.Second) // the daemon reads dockerd's runtimes at most every 10 s
	for _, p := range []string{"rt-warm", "rt-served"} {
		img := r.tag
		if p == "rt-served" {
			img = served
		}
		// rt-served runs as root, the served containers' user: a pool of
		// the sandbox user serves only containers of that user.
		user := ""
		if p == "rt-served" {
			user = "root"
		}
		if _, err := r.d.c.PutPool(ctx, p, spec.PoolConfig{Image: img, Memory: 64 << 20, MinIdle: 2, User: user}); err != nil {
			return err
		}
		defer r.d.c.DeletePool(context.Background(), p)
		if _, err := r.d.waitIdle(ctx, p, 2, 5*time.Minute); err != nil {
			return err
		}
	}
	id, err := r.rawContainer(ctx)
	if err != nil {
		return err
	}
	defer r.remove(ctx, id)
	if _, err := r.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
		return err
	}
	for i := range r.sz.rawRounds {
		if err := r.timed(sRtRawUnpause, func() error {
			_, err := r.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
			return err
		}); err != nil {
			return err
		}
		if _, err := r.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
			return err
		}
		var l api.Lease
		if err := r.timed(sRtWarm, func() (err error) {
			l, err = r.d.c.Acquire(ctx, api.AcquireRequest{Pool: "rt-warm"})
			return err
		}); err != nil {
			return err
		}
		if l.Outcome != "warm" {
			return fmt.Errorf("pool rt-warm gave a %s sandbox", l.Outcome)
		}
		if err := r.d.c.Release(ctx, l.ID); err != nil {
			return err
		}
		if (i+1)%max(1, r.sz.rawRounds/5) == 0 {
			step("  %d/%d warm rounds", i+1, r.sz.rawRounds)
		}
	}
	// Whole processes on the raw container (running now), as the engine's
	// shim starts them: --root of dockerd's runc state.
	root := "/run/docker/runtime-runc/moby"
	if _, err := r.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil && !strings.Contains(err.Error(), "not paused") {
		return err
	}
	for range max(30, r.sz.rawRounds/4) {
		for _, c := range []struct {
			series, resume, bin string
		}{{sRtPauseResume, sRtResume, rtBin}, {sRtRuncPR, sRtRuncResume, "runc"}} {
			begin := time.Now()
			if err := r.cmd(ctx, c.bin, "--root", root, "pause", id); err != nil {
				return err
			}
			if err := r.timed(c.resume, func() error { return r.cmd(ctx, c.bin, "--root", root, "resume", id) }); err != nil {
				return err
			}
			r.series[c.series] = append(r.series[c.series], time.Since(begin))
		}
	}
	rounds := max(10, r.sz.coldRounds)
	for i := range rounds {
		if err := r.quiet(ctx); err != nil {
			return err
		}
		if err := r.timed(sRtServed, func() error {
			return dockerRunChecked(ctx, "--runtime", "ol-shim", served)
		}); err != nil {
			return err
		}
		if err := r.quiet(ctx); err != nil {
			return err
		}
		if err := r.timed(sRtDockerRun, func() error { return dockerRunChecked(ctx, served) }); err != nil {
			return err
		}
		step("  %d/%d docker run pairs", i+1, rounds)
	}
	for _, s := range []string{sRtDockerRun, sRtServed, sRtRawUnpause, sRtWarm, sRtResume, sRtRuncResume, sRtPauseResume, sRtRuncPR} {
		r.addLatency("9. OCI runtime", s)
	}
	p50 := func(s string) time.Duration { return pct(r.series[s], .5) }
	ratio := float64(p50(sRtDockerRun)) / float64(p50(sRtServed))
	r.addTarget("docker run --runtime=ol-shim, faster than docker run (runc), p50", "≥ 2.5×", ratio >= 2.5, "%.2f×", ratio)
	wr := float64(p50(sRtWarm)) / float64(p50(sRtRawUnpause))
	r.addTarget("warm acquire (runtime ol-shim) / raw API unpause, p50", "≤ 0.5×", wr <= 0.5, "%.2f×", wr)
	if cold := p50(sColdAcquire); cold > 0 {
		cw := float64(cold) / float64(p50(sRtWarm))
		r.addTarget("cold acquire / warm acquire (runtime ol-shim), p50", "≥ 20×", cw >= 20, "%.1f×", cw)
	}
	res := p50(sRtResume)
	r.addTarget("ol-shim-runtime resume, whole process, p50", "≤ 1.5 ms", res <= 1500*time.Microsecond, "%s (runc %s)", ms(res), ms(p50(sRtRuncResume)))
	return nil
}

// dockerRunChecked runs `docker run --rm --network none ARGS... true` and
// fails on a non-zero exit.
func dockerRunChecked(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "docker", append(append([]string{"run", "--rm", "--network", "none", "--label", benchLabel + "=docker-run"}, args...), "true")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker run %v: %v: %s", args, err, out.String())
	}
	return nil
}

// waitRuntimeListed waits until dockerd lists the ol-shim runtime.
func waitRuntimeListed(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.CommandContext(ctx, "docker", "info", "-f", "{{json .Runtimes}}").Output()
		if bytes.Contains(out, []byte(`"ol-shim"`)) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("dockerd does not list the ol-shim runtime after ol-shim runtime install")
}
