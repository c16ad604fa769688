// This file is longer than most: it is the one table of runs bench measures,
// each a short function, kept together so their order and sizes read as one.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
	shimdaemon "github.com/open-lambda/ol-shim/shim/daemon"
)

// benchLabel marks the containers the bench makes itself (the baselines),
// so cleanup finds them.
const benchLabel = "io.ol-shim.bench"

// runtimeImage is the test image whose only program serves HTTP on
// /host/ol.sock (hack/images.sh builds it).
const runtimeImage = "ol-shim-test/runtime:latest"

// Series names, used in the table and the plot.
const (
	sDockerRun   = "docker run --rm IMAGE true"
	sRawCreate   = "raw API create+start"
	sColdAcquire = "ol-shim cold acquire (API)"
	sOlRun       = "ol-shim run IMAGE true"
	sRawUnpause  = "raw API unpause"
	sWarmAcquire = "ol-shim warm acquire (API)"
	sHotAcquire  = "ol-shim hot acquire (API)"
	sBurstFn     = "burst: acquire, call the sandbox's handler on /host/ol.sock, release (API)"
	sBurstReuse  = "burst: ol-shim run --pool burst --reuse true"
	sBurstFresh  = "burst: ol-shim run --pool burst-fresh true"
	// A recycle pool (read_only_rootfs, recycle): fresh per run, no create.
	sBurstRecycle = "burst: ol-shim run --pool burst-recycle true (recycle)"
	sBurstDocker  = "burst: docker run --rm IMAGE true"
	sVolOl        = "volume create + container create+start, ol-shim volume (8M quota)"
	sVolLocal     = "volume create + container create+start, local volume"
)

// run is one bench run: what it measured and what it must clean up.
type run struct {
	sz      sizes
	mode    string
	only    string // groups to run (a name prefix); empty: all
	bin     string
	image   string // what `ol-shim run IMAGE` and `docker run` start
	tag     string // the same image under another name, for the configured pools
	started time.Time

	dir string
	d   *daemon
	cli *client.Client

	machine machine
	series  map[string][]time.Duration
	rows    []row
	targets []target
	notes   []string
}

// row is one line of the results table.
type row struct {
	group, name string
	n           int
	p50, p99    time.Duration
	value       string // for rows that are not latencies (throughput, bytes)
}

// target is one of the targets, as measured.
type target struct {
	what, goal, got string
	ok              bool
}

func (r *run) addLatency(group, name string) {
	v := r.series[name]
	r.rows = append(r.rows, row{group: group, name: name, n: len(v), p50: pct(v, 0.50), p99: pct(v, 0.99)})
}

func (r *run) addValue(group, name, value string) {
	r.rows = append(r.rows, row{group: group, name: name, value: value})
}

func (r *run) addTarget(what, goal string, ok bool, got string, args ...any) {
	r.targets = append(r.targets, target{what: what, goal: goal, got: fmt.Sprintf(got, args...), ok: ok})
}

// pct is the p-th quantile (nearest rank) of v.
func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

// mean is the mean of v.
func mean(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range v {
		sum += d
	}
	return sum / time.Duration(len(v))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

// timed appends fn's duration to the named series.
func (r *run) timed(name string, fn func() error) error {
	begin := time.Now()
	if err := fn(); err != nil {
		return fail(name, err)
	}
	r.series[name] = append(r.series[name], time.Since(begin))
	return nil
}

func (r *run) poolConfig(name string, extra string) string {
	return fmt.Sprintf("[pools.%s]\nimage = %q\ncmd = [\"sleep\", \"infinity\"]\nmemory = \"32M\"\n%s\n", name, r.tag, extra)
}

// baseConfig is the bench daemon's config: it goes into the report.
func (r *run) baseConfig() string {
	return "[adhoc]\nmin_idle = 1\nmemory = \"32M\"\n\n" +
		r.poolConfig("warm", "min_idle = 1") +
		r.poolConfig("hot", "min_idle = 8\npause_grace = \"1h\"") +
		r.poolConfig("cold", "adapt = false") +
		r.poolConfig("burst", fmt.Sprintf("min_idle = %d\nmax_size = %d", r.sz.burstMinIdle, r.sz.burstMinIdle)) +
		r.poolConfig("burst-fresh", fmt.Sprintf("min_idle = %d", r.sz.burstMinIdle)) +
		r.poolConfig("burst-recycle", fmt.Sprintf("min_idle = %d\nmax_size = %d\nread_only_rootfs = true\nrecycle = true", r.sz.burstMinIdle, r.sz.burstMinIdle)) +
		fmt.Sprintf("[pools.burst-fn]\nimage = %q\ncmd = [\"/runtime\"]\nmemory = \"32M\"\nready = { socket = \"ol.sock\" }\nmin_idle = %d\nmax_size = %d\n", runtimeImage, r.sz.burstMinIdle, r.sz.burstMinIdle)
}

func (r *run) all(ctx context.Context) error {
	r.series = map[string][]time.Duration{}
	var err error
	if r.dir, err = os.MkdirTemp("/var/tmp", "ol-shim-bench."); err != nil {
		return err
	}
	if r.cli, err = client.New(client.FromEnv); err != nil {
		return err
	}
	if r.machine, err = readMachine(ctx, r.cli); err != nil {
		return err
	}
	for _, img := range []string{r.image, runtimeImage} {
		if _, err := r.cli.ImageInspect(ctx, img); err != nil {
			return fmt.Errorf("image %s: %w (build it with hack/images.sh)", img, err)
		}
	}
	r.tag = "ol-shim-bench/pool:latest"
	if _, err := r.cli.ImageTag(ctx, client.ImageTagOptions{Source: r.image, Target: r.tag}); err != nil {
		return fail("tag "+r.tag, err)
	}
	if r.d, err = newDaemon(r.bin, r.dir, r.baseConfig()); err != nil {
		return err
	}
	step("starting ol-shim serve (log: %s)", r.d.logFile.Name())
	if _, err := r.d.start(ctx); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		n    int
	}{{"warm", 1}, {"hot", 8}, {"burst", r.sz.burstMinIdle}, {"burst-fresh", r.sz.burstMinIdle}, {"burst-recycle", r.sz.burstMinIdle}, {"burst-fn", r.sz.burstMinIdle}} {
		if _, err := r.d.waitIdle(ctx, p.name, p.n, 5*time.Minute); err != nil {
			return err
		}
	}
	groups := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"1+3. cold start, and ol-shim run against docker run", r.cold},
		{"2. warm and hot acquire", r.warm},
		{"3b. run from the pool", r.runs},
		{"4. burst", r.burst},
		{"5. volume plugin and FUSE quota", r.volumes},
		{"6. pool microbenchmarks (mock backend)", r.micro},
		{"7. scale", r.scale},
		{"8. process starts", r.starts},
		{"9. OCI runtime", r.runtime},
	}
	for i, g := range groups {
		if r.only != "" && !strings.HasPrefix(g.name, r.only) {
			continue
		}
		step("[%d/%d] %s", i+1, len(groups), g.name)
		begin := time.Now()
		if err := g.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		step("[%d/%d] done in %v", i+1, len(groups), time.Since(begin).Round(100*time.Millisecond))
	}
	if r.only == "" {
		r.explain()
	}
	return nil
}

// explain adds a note for each target missed: by how much, and why, from
// what the same run measured.
func (r *run) explain() {
	p50 := func(s string) time.Duration { return pct(r.series[s], .5) }
	note := func(format string, args ...any) { r.notes = append(r.notes, fmt.Sprintf(format, args...)) }
	warm, unpause, hot := p50(sWarmAcquire), p50(sRawUnpause), p50(sHotAcquire)
	cold, create := p50(sColdAcquire), p50(sRawCreate)
	if warm > 0 && cold < 30*warm {
		note("**Cold / warm is %.1f×, short of 30×.** Cold is not slow (ol-shim's cold acquire is %.2f× a raw API create+start); warm cannot get much cheaper than one `runc resume`: a warm acquire is %.2f× a raw API unpause (%s against %s), pausing and resuming through %s. Below dockerd, containerd still has its shim start `runc resume` as a new process for every resume, and on this VM starting any process costs milliseconds (group 8). The hot path makes no such call: %s at p50, %.0f× faster than cold.",
			float64(cold)/float64(warm), float64(cold)/float64(create),
			float64(warm)/float64(unpause), ms(warm), ms(unpause), r.d.pauseVia(context.Background()), ms(hot), float64(cold)/float64(max(hot, 1)))
	}
	for _, t := range r.targets {
		if t.ok {
			continue
		}
		switch {
		case strings.Contains(t.what, "hot acquire+release"):
			note("**Hot round trips: %s with 8 clients, against 5,000/s.** Each is two HTTP calls over the unix socket, and the client and the daemon share the machine's %d cores. A CPU profile of the same path in one process (`go test -run '^$' -bench APIHot -cpu 8 -cpuprofile cpu.out ./shim`) puts most of the time in net/http, syscalls and the Go scheduler, and about 4%% in ol-shim's registry and pool.", t.got, r.machine.cores)
		case strings.Contains(t.what, "burst-fresh"):
			note("**`ol-shim run` with a fresh sandbox per request, in a burst of %d: %s.** Like `docker run --rm`, each request gets a new sandbox and destroys it afterwards. Once the burst has used up the warm ones (the pool's target grows to at most %d), every request waits for a container create, which dockerd makes no faster than for docker run, while it also removes the used ones. A burst the grown target covers (24, its own row) is served warm; reuse (`--reuse`, or calls to a function runtime in the sandbox) is what makes a long burst cheap.", r.sz.burstRequests, t.got, 32)
		case strings.Contains(t.what, "burst") && strings.Contains(t.what, "--reuse"):
			note("**`ol-shim run --reuse` in a burst: %s, against 5×.** Every request is a CLI process start and a command started by a sandbox's agent; on %d cores the queue of %d clients waiting for %d sandboxes is what the p99 measures. A function called over its socket (the `burst-fn` row) starts no process.", t.got, r.machine.cores, r.sz.burstClients, r.sz.burstMinIdle)
		case strings.Contains(t.what, "cold acquire / raw"):
			note("**Cold acquire is %s a raw create+start.** On top of the create and start, ol-shim creates the scratch volume through its plugin (a round trip dockerd → plugin) before the container.", t.got)
		case strings.Contains(t.what, "status"):
			note("**%s: %s, against %s.** Over the API the same status takes %s at p50; the rest is the CLI's own process start and Go's init, on a VM where dockerd was holding %d paused containers. The API's answer includes a call to dockerd (its version, for the health line) and every volume's record.",
				t.what, t.got, t.goal, ms(p50("status over the API")), r.sz.scalePools*r.sz.scalePerPool)
		case strings.Contains(t.what, "RSS"), strings.Contains(t.what, "reconcile"):
			note("**%s: %s, against %s.**", t.what, t.got, t.goal)
		case strings.Contains(t.what, "docker run --rm / ol-shim run"):
			note("**%s: %s, against %s.** A run is a CLI process start (a few milliseconds), an acquire (a warm one is an unpause: %s here), the command started by the sandbox's agent (%s for the agent's round trip alone) and its release; the machine is shared and noisy, so these ratios move between runs.",
				t.what, t.got, t.goal, ms(warm), ms(p50(sAgentRoundTrip)))
		}
	}
}

// rawContainer creates and starts a container like a pool's sandbox (same
// image, command, memory limit, no network, created as ol-shim creates:
// NetworkDisabled, so no libnetwork sandbox and no prestart hook), straight
// through the API.
func (r *run) rawContainer(ctx context.Context) (string, error) {
	res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:     &container.Config{Image: r.tag, Cmd: []string{"sleep", "infinity"}, Labels: map[string]string{benchLabel: "raw"}, NetworkDisabled: true},
		HostConfig: &container.HostConfig{NetworkMode: "none", Resources: container.Resources{Memory: 32 << 20, MemorySwap: 32 << 20}},
	})
	if err != nil {
		return "", err
	}
	_, err = r.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{})
	return res.ID, err
}

func (r *run) remove(ctx context.Context, id string) error {
	_, err := r.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	return err
}

func (r *run) cmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *run) olRun(ctx context.Context, args ...string) error {
	return r.cmd(ctx, r.bin, append([]string{"--socket", r.d.socket, "run"}, args...)...)
}

func (r *run) dockerRun(ctx context.Context) error {
	// Labelled: if the bench is stopped mid-run, cleanup finds what a
	// killed docker CLI left.
	return r.cmd(ctx, "docker", "run", "--rm", "--network", "none", "--label", benchLabel+"=docker-run", r.image, "true")
}

// cold: groups 1 and 3, interleaved round by round so drift hits all alike.
func (r *run) cold(ctx context.Context) error {
	// The ad-hoc pool behind `ol-shim run IMAGE` is made by its first run.
	if err := r.olRun(ctx, r.image, "true"); err != nil {
		return err
	}
	for i := range r.sz.coldRounds {
		if err := r.timed(sDockerRun, func() error { return r.dockerRun(ctx) }); err != nil {
			return err
		}
		if err := r.timed(sOlRun, func() error { return r.olRun(ctx, r.image, "true") }); err != nil {
			return err
		}
		// The run destroys its sandbox and the pool refills, in the
		// background: let that finish before timing anything else.
		if err := r.quiet(ctx); err != nil {
			return err
		}
		var id string
		if err := r.timed(sRawCreate, func() (err error) { id, err = r.rawContainer(ctx); return err }); err != nil {
			return err
		}
		if err := r.remove(ctx, id); err != nil {
			return err
		}
		var l api.Lease
		if err := r.timed(sColdAcquire, func() (err error) {
			l, err = r.d.c.Acquire(ctx, api.AcquireRequest{Pool: "cold"})
			return err
		}); err != nil {
			return err
		}
		if l.Outcome != "cold" {
			return fmt.Errorf("pool cold gave a %s sandbox", l.Outcome)
		}
		if err := r.d.c.Destroy(ctx, l.ID, "bench"); err != nil {
			return err
		}
		step("  round %d/%d: docker run %v, ol-shim run %v, raw create+start %v, cold acquire %v", i+1, r.sz.coldRounds,
			last(r.series[sDockerRun]), last(r.series[sOlRun]), last(r.series[sRawCreate]), last(r.series[sColdAcquire]))
	}
	for _, s := range []string{sDockerRun, sRawCreate, sColdAcquire} {
		r.addLatency("1. cold start", s)
	}
	r.addLatency("3. run", sOlRun)
	r.addLatency("3. run", sDockerRun)
	ratio := float64(pct(r.series[sColdAcquire], .5)) / float64(pct(r.series[sRawCreate], .5))
	r.addTarget("ol-shim cold acquire / raw API create+start, p50", "≤ 1.25×", ratio <= 1.25, "%.2f×", ratio)
	ratio = float64(pct(r.series[sDockerRun], .5)) / float64(pct(r.series[sOlRun], .5))
	r.addTarget("docker run --rm / ol-shim run (fresh sandbox, runs spaced by the refill), p50", "≥ 10×", ratio >= 10, "%.1f×", ratio)
	return nil
}

// quiet waits until the host is quiet, checked rather than assumed: no
// pool creating, pausing, holding a destroy back, lending a sandbox or
// below its min_idle, and no container of the daemon beyond its pools'
// idle sandboxes (a destroy in flight). The daemon's background work would
// slow whatever is timed next.
func (r *run) quiet(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		pools, err := r.d.c.Pools(ctx)
		if err != nil {
			return err
		}
		busy := ""
		idle := 0
		for _, p := range pools {
			s := p.Stats
			if s.Creating > 0 || s.Pausing > 0 || s.Deferred > 0 || s.InUse > 0 || s.Idle < s.MinIdle {
				busy = "pool " + p.Name
			}
			idle += s.Idle
		}
		if busy == "" {
			if n, err := r.containers(ctx); err != nil {
				return err
			} else if n != idle {
				busy = fmt.Sprintf("%d containers for %d idle sandboxes (destroys in flight)", n, idle)
			}
		}
		if busy == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still busy after 5 minutes", busy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// containers counts every container of the bench daemon's state root,
// running or not.
func (r *run) containers(ctx context.Context) (int, error) {
	res, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", api.LabelRoot+"="+shimdaemon.RootID(r.d.root))})
	if err != nil {
		return 0, err
	}
	return len(res.Items), nil
}

func last(v []time.Duration) time.Duration {
	return v[len(v)-1].Round(time.Millisecond)
}

// volumes: group 5, the Docker side. A volume created through ol-shim's
// plugin (8M quota: a FUSE mount when the container starts) against a local
// volume, each mounted into a new container.
func (r *run) volumes(ctx context.Context) error {
	for i := range r.sz.volumeRounds {
		for _, v := range []struct {
			series, driver string
			opts           map[string]string
		}{{sVolOl, pluginName, map[string]string{"size": "8M"}}, {sVolLocal, "local", nil}} {
			name := fmt.Sprintf("ol-shim-bench-%s-%d", v.driver, i)
			var id string
			if err := r.timed(v.series, func() error {
				if _, err := r.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Driver: v.driver, DriverOpts: v.opts}); err != nil {
					return err
				}
				res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
					Config: &container.Config{Image: r.tag, Cmd: []string{"sleep", "infinity"}, Labels: map[string]string{benchLabel: "volume"}},
					HostConfig: &container.HostConfig{NetworkMode: "none",
						Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: name, Target: "/data"}}},
				})
				if err != nil {
					return err
				}
				id = res.ID
				_, err = r.cli.ContainerStart(ctx, id, client.ContainerStartOptions{})
				return err
			}); err != nil {
				return err
			}
			if err := r.remove(ctx, id); err != nil {
				return err
			}
			if _, err := r.cli.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil {
				return err
			}
		}
	}
	r.addLatency("5. volumes", sVolOl)
	r.addLatency("5. volumes", sVolLocal)
	step("  volume+container: ol-shim %v, local %v (p50)", ms(pct(r.series[sVolOl], .5)), ms(pct(r.series[sVolLocal], .5)))
	return r.fuseIO()
}

// cleanup removes what the run made, whatever happened: the daemon (which
// destroys its sandboxes and their volumes as it exits), the baselines'
// containers and volumes, the image tag, the temporary directory.
func (r *run) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var errs []error
	if r.d != nil && r.d.cmd != nil && r.cli != nil {
		// Volumes of the bench's driver are removed while its plugin
		// serves: a record left in dockerd makes its next start wait for
		// a plugin that is gone.
		if vols, err := r.cli.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("driver", pluginName)}); err == nil && len(vols.Items) > 0 {
			step("removing the volumes of %s that no sandbox uses", pluginName)
			for _, v := range vols.Items {
				// One in use is a live sandbox's: the daemon removes it as it
				// stops (--destroy-on-exit).
				if _, err := r.cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !strings.Contains(err.Error(), "in use") {
					errs = append(errs, err)
				}
			}
		}
	}
	if r.d != nil && r.d.cmd != nil {
		step("stopping ol-shim serve (it removes its sandboxes)")
		errs = append(errs, r.d.stop(syscall.SIGTERM, 8*time.Minute))
	}
	if r.cli != nil {
		list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", benchLabel)})
		errs = append(errs, err)
		for _, c := range list.Items {
			errs = append(errs, r.remove(ctx, c.ID))
		}
		vols, err := r.cli.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("name", "ol-shim-bench-")})
		errs = append(errs, err)
		for _, v := range vols.Items {
			_, err := r.cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
			errs = append(errs, err)
		}
		if r.tag != "" {
			_, err := r.cli.ImageRemove(ctx, r.tag, client.ImageRemoveOptions{})
			errs = append(errs, err)
		}
	}
	// A daemon killed with -9 and restarted does not own the plugin spec the
	// first one wrote, so it is left in place: remove it here.
	if err := os.Remove(pluginSpec); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	os.Remove(filepath.Dir(pluginSocket)) // the socket's directory, if empty
	err := errors.Join(errs...)
	if r.dir != "" && err == nil {
		os.RemoveAll(r.dir) // kept after a failure: it holds the daemon's log
	}
	return err
}
