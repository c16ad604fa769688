package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
)

// scale: group 7. Pools scale-00.. with min_idle sandboxes each, added to the
// config and applied with SIGHUP; the time until they are all warm and
// paused, the daemon's RSS, `ol-shim status` latency (API and CLI), then
// kill -9 and the time for a new daemon to reconcile (adopt) them all.
func (r *run) scale(ctx context.Context) error {
	pools, per := r.sz.scalePools, r.sz.scalePerPool
	want := pools * per
	g := fmt.Sprintf("7. scale (%d sandboxes, %d pools)", want, pools)
	memBefore, err := memAvailable()
	if err != nil {
		return err
	}
	rssBefore, err := r.d.rss()
	if err != nil {
		return err
	}
	var cfg strings.Builder
	cfg.WriteString(r.baseConfig())
	for i := range pools {
		cfg.WriteString(r.poolConfig(fmt.Sprintf("scale-%02d", i), fmt.Sprintf("min_idle = %d", per)))
	}
	if err := r.d.setConfig(cfg.String()); err != nil {
		return err
	}
	begin := time.Now()
	if err := r.d.reload(); err != nil {
		return err
	}
	if _, err := r.d.waitIdle(ctx, "scale-", want, 30*time.Minute); err != nil {
		return err
	}
	warmAll := time.Since(begin)
	// Let the last pauses and the Go heap settle before reading RSS.
	time.Sleep(2 * time.Second)
	rss, err := r.d.rss()
	if err != nil {
		return err
	}
	memAfter, err := memAvailable()
	if err != nil {
		return err
	}
	perSandbox := (memBefore - memAfter) / int64(want)
	r.addValue(g, "time to warm them all (create, start, pause; from SIGHUP)", fmt.Sprintf("%v (%.1f sandboxes/s)", warmAll.Round(100*time.Millisecond), float64(want)/warmAll.Seconds()))
	r.addValue(g, "ol-shim RSS", fmt.Sprintf("%.1f MiB (%.1f MiB before the scale pools)", float64(rss)/(1<<20), float64(rssBefore)/(1<<20)))
	if perSandbox > 0 {
		r.addValue(g, "host memory per paused sandbox (MemAvailable drop / sandboxes)",
			fmt.Sprintf("%.1f MiB: about %d would fit in the %.1f GiB that were available", float64(perSandbox)/(1<<20), memBefore/perSandbox, float64(memBefore)/(1<<30)))
	}
	r.addTarget(fmt.Sprintf("ol-shim RSS with %d sandboxes", want), "≤ 100 MiB", rss <= 100<<20, "%.1f MiB", float64(rss)/(1<<20))
	step("  %d sandboxes warm in %v; RSS %.1f MiB", want, warmAll.Round(time.Second), float64(rss)/(1<<20))

	const sStatusAPI, sStatusCLI = "status over the API", "`ol-shim status` (CLI)"
	for range r.sz.statusCalls {
		if err := r.timed(sStatusAPI, func() error { _, err := r.d.c.Status(ctx); return err }); err != nil {
			return err
		}
		if err := r.timed(sStatusCLI, func() error { return r.cmd(ctx, r.bin, "--socket", r.d.socket, "status") }); err != nil {
			return err
		}
	}
	r.addLatency(g, sStatusAPI)
	r.addLatency(g, sStatusCLI)
	cliP50 := pct(r.series[sStatusCLI], .5)
	r.addTarget(fmt.Sprintf("`ol-shim status` with %d sandboxes, p50", want), "≤ 100 ms", cliP50 <= 100*time.Millisecond, "%s", ms(cliP50))

	// kill -9, then a new daemon with the same config and root: it should
	// adopt every paused sandbox of the scale pools.
	paused, _, err := r.d.idle(ctx, "scale-")
	if err != nil {
		return err
	}
	if err := r.d.stop(syscall.SIGKILL, time.Minute); err != nil {
		return err
	}
	step("  killed ol-shim serve with SIGKILL; starting it again")
	took, err := r.d.start(ctx)
	if err != nil {
		return err
	}
	idle, creates, err := r.d.idle(ctx, "scale-")
	if err != nil {
		return err
	}
	adopted := idle - creates
	r.addValue(g, "restart after kill -9: until the API answers (reconcile done)", fmt.Sprintf("%v; %d of the %d paused sandboxes adopted, %d created anew", took.Round(100*time.Millisecond), adopted, paused, creates))
	r.addTarget(fmt.Sprintf("reconcile of %d sandboxes after kill -9", paused), "≤ 30 s", took <= 30*time.Second && adopted == paused, "%v, %d of %d adopted", took.Round(100*time.Millisecond), adopted, paused)
	step("  restart reconciled in %v: %d adopted, %d created", took.Round(100*time.Millisecond), adopted, creates)

	// Tear the scale pools down: the base config again.
	if err := r.d.setConfig(r.baseConfig()); err != nil {
		return err
	}
	begin = time.Now()
	if err := r.d.reload(); err != nil {
		return err
	}
	for {
		list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", api.LabelPool)})
		if err != nil {
			return err
		}
		left := 0
		for _, c := range list.Items {
			if strings.HasPrefix(c.Labels[api.LabelPool], "scale-") {
				left++
			}
		}
		vols, err := r.cli.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("driver", pluginName)})
		if err != nil {
			return err
		}
		for _, v := range vols.Items {
			if strings.HasPrefix(v.Name, "scale-") {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Since(begin) > 20*time.Minute {
			return fmt.Errorf("%d scale sandboxes or their volumes still there 20 minutes after their pools were removed", left)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.addValue(g, "removing the pools (SIGHUP) until their containers and volumes are gone", time.Since(begin).Round(100*time.Millisecond).String())
	return nil
}

// memAvailable is MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (int64, error) { return meminfo("MemAvailable:") }

func meminfo(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", key)
}
