package main

import (
	"bytes"
	"context"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// machine describes the host the run measured.
type machine struct {
	cpu, kernel, docker, cgroup, storage string
	cores                                int
	ram                                  int64
}

func readMachine(ctx context.Context, cli *client.Client) (machine, error) {
	m := machine{cores: runtime.NumCPU(), cpu: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	var err error
	if m.ram, err = meminfo("MemTotal:"); err != nil {
		return m, err
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return m, fmt.Errorf("dockerd: %w", err)
	}
	m.docker = fmt.Sprintf("%s (API %s)", v.Version, v.APIVersion)
	if info, err := cli.Info(ctx, client.InfoOptions{}); err == nil {
		m.storage = info.Info.Driver
		m.cgroup = "v" + info.Info.CgroupVersion + ", driver " + info.Info.CgroupDriver
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err == nil {
		switch {
		case st.Type == 0x63677270: // CGROUP2_SUPER_MAGIC
			m.cgroup += " (unified v2 hierarchy)"
		case exists("/sys/fs/cgroup/unified"):
			m.cgroup += " (hybrid: v1 controllers, v2 at /sys/fs/cgroup/unified)"
		default:
			m.cgroup += " (v1 controllers)"
		}
	}
	return m, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// write renders the report, the plot and, if asked, the README's headline.
func (r *run) write(out, plotPath, readme string) error {
	if err := os.MkdirAll(filepath.Dir(plotPath), 0o755); err != nil {
		return err
	}
	if err := r.plot(plotPath); err != nil {
		return fail("plot", err)
	}
	rel, err := filepath.Rel(filepath.Dir(out), plotPath)
	if err != nil {
		rel = plotPath
	}
	var b bytes.Buffer
	m := r.machine
	cmd := "make bench"
	if r.mode == "quick" {
		cmd = "make bench-quick"
	}
	fmt.Fprintf(&b, "# ol-shim benchmarks (%s run)\n\n", r.mode)
	fmt.Fprintf(&b, "Written by `%s` (`go run ./bench`, see [bench/main.go](bench/main.go)) on %s, in %v. ", cmd, r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second))
	b.WriteString("Every figure comes from one run against one dockerd on images built locally; ")
	b.WriteString("ol-shim and plain Docker were measured in the same run, interleaved where they can be. ")
	b.WriteString("Absolute times on a shared VM are noise: compare the ratios.\n\n")
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| RAM | %.1f GiB |\n| kernel | %s |\n| Docker | %s, storage driver %s |\n| cgroups | %s |\n| ol-shim | %s |\n\n",
		m.cpu, m.cores, float64(m.ram)/(1<<30), m.kernel, m.docker, m.storage, m.cgroup, version(r.bin))
	b.WriteString("## Targets\n\n| what | target | measured | |\n|---|---|---|---|\n")
	for _, t := range r.targets {
		mark := "met"
		if !t.ok {
			mark = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.what, t.goal, t.got, mark)
	}
	b.WriteString("\n## Results\n\nLatencies are medians and 99th percentiles (nearest rank) over n calls; where n < 100 the last column is the maximum (`max`), which a p99 over so few calls would be.\n\n")
	b.WriteString("| group | measurement | n | p50 | p99 |\n|---|---|---|---|---|\n")
	for _, row := range r.rows {
		if row.value != "" {
			fmt.Fprintf(&b, "| %s | %s | | %s | |\n", row.group, row.name, row.value)
			continue
		}
		tail := ms(row.p99)
		if row.n < 100 {
			tail += " (max)"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s |\n", row.group, row.name, row.n, ms(row.p50), tail)
	}
	fmt.Fprintf(&b, "\n## Acquire latency distributions\n\n![acquire latency distributions](%s)\n\n", filepath.ToSlash(rel))
	b.WriteString(whatIsMeasured)
	fmt.Fprintf(&b, "\n## The bench daemon's configuration\n\n`ol-shim serve --memory-budget 90%% --destroy-on-exit`, scratch through its own volume plugin (`%s`), with:\n\n```toml\n%s```\n\nThe scale test adds %d pools `scale-NN` like `cold`, each with `min_idle = %d`.\n",
		pluginName, r.baseConfig(), r.sz.scalePools, r.sz.scalePerPool)
	if len(r.notes) > 0 {
		b.WriteString("\n## Where a target is missed, and why\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
		return err
	}
	if readme != "" {
		return r.headline(readme, out)
	}
	return nil
}

const whatIsMeasured = `## What each measurement is

- **docker run --rm IMAGE true**: the docker CLI, as a user runs it (container create, start, wait, remove).
- **a quiet host**: before each timed phase that follows background work (a refill, a destroy), the bench waits until no pool is creating, pausing, holding a destroy back or lending a sandbox, and the daemon's containers are exactly its pools' idle sandboxes (no destroy in flight), checked through the API and Docker's container list.
- **raw API create+start**: ContainerCreate + ContainerStart through Docker's Go client, of a container like a pool's sandbox (same image, command, memory limit, no network, and created as ol-shim creates: ` + "`NetworkDisabled`" + `, so no libnetwork sandbox and no prestart hook on either side).
- **ol-shim cold acquire**: POST /v1/acquire on a pool with no idle sandbox: ol-shim creates the scratch volume through its plugin, creates and starts the container. Destroyed afterwards, outside the timing.
- **raw API unpause**: ContainerUnpause of a paused container through Docker's Go client.
- **ol-shim warm acquire**: POST /v1/acquire on a pool with a paused sandbox (pause_grace 0: every release pauses it again, outside the timing).
- **ol-shim hot acquire**: POST /v1/acquire on a pool whose released sandbox is still unpaused (within pause_grace): no Docker call.
- **ol-shim run IMAGE true**: the ol-shim CLI, as a user runs it: a fresh sandbox from the image's (ad-hoc) pool, the command started by its agent (no docker exec), the sandbox destroyed and the pool refilled in the background. **3b**: ` + "`--reuse`" + ` (the sandbox back to the pool, kept unpaused for the ad-hoc pause_grace of 1s), hot (runs paired with a docker run, ~0.3 s apart, so within the grace: no unpause) and warm (each pair after 1.5 s idle, so the run unpauses a paused sandbox; the pool's warm takes are counted to check), each in alternating pairs with ` + "`docker run --rm --network none`" + ` of the same image; fresh runs back to back from one client, after 20 unmeasured ones let the pool's target grow; and the agent's round trip alone (a streamed run of true over the API in a hot sandbox).
- **burst**: that many requests from that many concurrent clients. ` + "`docker run --rm`" + ` is a CLI process per request. Against it: a function call as a FaaS front end makes it (acquire over the API, an HTTP request to the function's runtime on ` + "`/host/ol.sock`" + `, release; pool ` + "`burst-fn`" + ` of ` + "`ol-shim-test/runtime`" + `); ` + "`ol-shim run --reuse`" + ` (a CLI process, the command started by the sandbox's agent, the sandbox back to the pool); and ` + "`ol-shim run`" + ` with a fresh sandbox per request (the default, like ` + "`--rm`" + `: each run destroys its sandbox, and the pool refills in the background). The pools start with min_idle warm sandboxes; ` + "`burst`" + ` and ` + "`burst-fn`" + ` never grow past them (callers queue for a returned sandbox), ` + "`burst-fresh`" + ` creates more when the burst outruns it, and its target of idle sandboxes grows with the cold misses: it is measured after warm-up bursts (until the target stops growing; the first burst has its own row).
- **volumes**: ` + "`docker volume create`" + ` plus a container that mounts it, created and started (API): a volume of ol-shim's plugin with an 8M quota (a FUSE mount when the container starts) against Docker's local driver. FUSE I/O: the same file operations on a plain directory and on a quota'd volume of the same disk, made and mounted through the daemon's volume plugin as dockerd does, so served by its own ` + "`volume-server`" + ` process as in use.
- **pool (mock)**: GetOrCreateUnpaused + Put on the mock backend, no latency: the pool's own cost.
- **scale**: pools added to the config and applied with SIGHUP, each with min_idle sandboxes; RSS is the daemon's VmRSS; then ` + "`kill -9`" + ` and a new daemon on the same state root, timed until its API answers (it reconciles first).
- **OCI runtime** (group 9): ol-shim-runtime registered with dockerd for the group (` + "`ol-shim runtime install`" + `, daemon.json put back after). ` + "`docker run --rm --network none --runtime=ol-shim`" + ` of an image with a pool (its own, min_idle 2): the command runs in a warm sandbox; against the same ` + "`docker run`" + ` with runc, in alternating pairs, each from a quiet host. Warm acquire of a pool whose sandboxes run under ol-shim-runtime (so containerd's shim runs it, not runc, to resume) against a raw API unpause of a runc container. Pause and resume as whole processes (as containerd's shim starts them) on one running container, ol-shim-runtime against runc.
`

func version(bin string) string {
	out, err := execOutput(bin, "version")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
}

// headline rewrites the README's block between the bench:headline markers.
func (r *run) headline(readme, out string) error {
	b, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	const begin, end = "<!-- bench:headline -->", "<!-- /bench:headline -->"
	i, j := bytes.Index(b, []byte(begin)), bytes.Index(b, []byte(end))
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s block", readme, begin, end)
	}
	var h strings.Builder
	fmt.Fprintf(&h, "%s\nFrom [%s](%s) (`make bench`, %s, %d cores, Docker %s):\n\n", begin, out, out, r.started.UTC().Format("2006-01-02"), r.machine.cores, r.machine.docker)
	for _, t := range r.targets {
		mark := ""
		if !t.ok {
			mark = " (target " + t.goal + ": missed)"
		}
		fmt.Fprintf(&h, "- %s: **%s**%s\n", t.what, t.got, mark)
	}
	nb := append([]byte{}, b[:i]...)
	nb = append(nb, h.String()...)
	nb = append(nb, b[j:]...)
	return os.WriteFile(readme, nb, 0o644)
}

// plot draws the empirical distribution functions of the acquire-like
// latencies on a log scale.
func (r *run) plot(path string) error {
	if len(r.series[sColdAcquire])+len(r.series[sWarmAcquire])+len(r.series[sHotAcquire]) == 0 {
		return nil // no acquire measured (-only): nothing to plot
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Time to a running sandbox (%s run, %d cores)", r.mode, r.machine.cores)
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of calls at most x"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	// Room above 1 for the legend, where no curve goes.
	p.Y.Min, p.Y.Max = 0, 1.42
	p.Y.Tick.Marker = plot.ConstantTicks{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"}, {Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}}
	grid := plotter.NewGrid()
	grid.Horizontal.Color = color.Gray{Y: 220}
	p.Add(grid)
	colors := []color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, {R: 0xff, G: 0x7f, B: 0x0e, A: 255}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
		{R: 0xd6, G: 0x27, B: 0x28, A: 255}, {R: 0x94, G: 0x67, B: 0xbd, A: 255}, {R: 0x8c, G: 0x56, B: 0x4b, A: 255},
		{R: 0x7f, G: 0x7f, B: 0x7f, A: 255},
	}
	names := []string{sHotAcquire, sWarmAcquire, sRawUnpause, sColdAcquire, sRawCreate, sOlRun, sDockerRun}
	short := map[string]string{sHotAcquire: "ol-shim hot acquire", sWarmAcquire: "ol-shim warm acquire", sRawUnpause: "raw API unpause",
		sColdAcquire: "ol-shim cold acquire", sRawCreate: "raw API create+start", sOlRun: "ol-shim run", sDockerRun: "docker run --rm"}
	for i, name := range names {
		v := slices.Clone(r.series[name])
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		pts := make(plotter.XYs, len(v))
		for k, d := range v {
			pts[k].X = max(float64(d)/1e6, 1e-3)
			pts[k].Y = float64(k+1) / float64(len(v))
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = colors[i%len(colors)]
		l.Width = vg.Points(2)
		if name == sRawUnpause || name == sRawCreate {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s, p50 %s", short[name], ms(pct(v, .5))), l)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(10), -vg.Points(6)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.ThumbnailWidth = vg.Points(30)
	return p.Save(10*vg.Inch, 6*vg.Inch, path)
}
