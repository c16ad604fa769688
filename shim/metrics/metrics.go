// Package metrics is the daemon's Prometheus metrics: acquire latency
// histograms observed as acquisitions happen, and everything else read at
// scrape time from the sources the daemon hands it.
package metrics

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/open-lambda/ol-shim/shim/api"
)

// Metrics is the daemon's Prometheus metrics: acquire latency histograms
// observed as acquisitions happen, and everything else (sandboxes by pool
// and state, acquisitions by outcome, creates and destroys by reason,
// volume usage, the memory budget) read from the registry at scrape time.
type Metrics struct {
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
}

// NewMetrics returns metrics with nothing to read yet (see Watch), and
// ol_shim_build_info for version.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ol_shim_acquire_seconds",
			Help:    "Time to hand out a sandbox (acquire or run), by pool and outcome (hot, warm, cold).",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"pool", "outcome"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "ol_shim_build_info",
		Help:        "Always 1: the daemon's version and the Go it was built with, as labels.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.latency, build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Observe records the latency of one acquisition; a nil Metrics records
// nothing.
func (m *Metrics) Observe(pool, outcome string, d time.Duration) {
	if m != nil {
		m.latency.WithLabelValues(pool, outcome).Observe(d.Seconds())
	}
}

// Watch makes the metrics read status (and volumes and docker, where not
// nil) at every scrape. Volumes' usage is read only for mounted volumes
// with a quota; docker is asked within 2 s.
func (m *Metrics) Watch(status func() api.Status, volumes func() []api.VolumeStatus, docker func(context.Context) *api.DockerHealth) {
	m.reg.MustRegister(&stateCollector{descs: newDescs(), status: status, volumes: volumes, docker: docker})
}

// descs are the descriptions of what stateCollector reports, made when a
// collector is (their making checks every name: milliseconds at the start
// of every process that links this package, sandbox inits included).
type descs struct {
	sandboxes *prometheus.Desc
	acquired  *prometheus.Desc
	creates   *prometheus.Desc
	destroys  *prometheus.Desc
	failures  *prometheus.Desc
	budget    *prometheus.Desc
	budgetUse *prometheus.Desc
	waiting   *prometheus.Desc
	leases    *prometheus.Desc
	volUsed   *prometheus.Desc
	volLimit  *prometheus.Desc
	dockerUp  *prometheus.Desc
}

func newDescs() descs {
	return descs{
		sandboxes: prometheus.NewDesc("ol_shim_sandboxes", "Sandboxes by pool and state (idle, in_use, creating, pausing).", []string{"pool", "state"}, nil),
		waiting:   prometheus.NewDesc("ol_shim_waiting_callers", "Callers waiting for a sandbox of a pool.", []string{"pool"}, nil),
		acquired:  prometheus.NewDesc("ol_shim_acquisitions_total", "Sandboxes handed out, by pool and outcome.", []string{"pool", "outcome"}, nil),
		creates:   prometheus.NewDesc("ol_shim_creates_total", "Sandboxes created, by pool.", []string{"pool"}, nil),
		destroys:  prometheus.NewDesc("ol_shim_destroys_total", "Sandboxes destroyed, by pool and reason.", []string{"pool", "reason"}, nil),
		failures:  prometheus.NewDesc("ol_shim_failures_total", "Create, pause and unpause failures, by pool and operation.", []string{"pool", "op"}, nil),
		budget:    prometheus.NewDesc("ol_shim_memory_budget_bytes", "The host's memory budget for sandboxes (0: none).", nil, nil),
		budgetUse: prometheus.NewDesc("ol_shim_memory_budget_used_bytes", "Memory limits of the live sandboxes, charged to the budget.", nil, nil),
		leases:    prometheus.NewDesc("ol_shim_leases", "Sandboxes acquired and not yet released.", nil, nil),
		volUsed:   prometheus.NewDesc("ol_shim_volume_used_bytes", "Bytes used by a mounted volume with a quota.", []string{"volume"}, nil),
		volLimit:  prometheus.NewDesc("ol_shim_volume_limit_bytes", "Byte quota of a volume.", []string{"volume"}, nil),
		dockerUp:  prometheus.NewDesc("ol_shim_docker_up", "1 when dockerd answers, else 0.", nil, nil),
	}
}

type stateCollector struct {
	descs
	status  func() api.Status
	volumes func() []api.VolumeStatus
	docker  func(context.Context) *api.DockerHealth
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sandboxes, c.waiting, c.acquired, c.creates, c.destroys, c.failures, c.budget, c.budgetUse, c.leases, c.volUsed, c.volLimit, c.dockerUp} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, p := range st.Pools {
		s := p.Stats
		for state, n := range map[string]int{"idle": s.Idle, "in_use": s.InUse, "creating": s.Creating, "pausing": s.Pausing} {
			gauge(c.sandboxes, float64(n), p.Name, state)
		}
		gauge(c.waiting, float64(s.Waiting), p.Name)
		counter(c.acquired, s.HotHits, p.Name, "hot")
		counter(c.acquired, s.WarmHits, p.Name, "warm")
		counter(c.acquired, s.ColdMisses, p.Name, "cold")
		counter(c.creates, s.Creates, p.Name)
		for reason, n := range s.Destroys {
			counter(c.destroys, n, p.Name, reason)
		}
		counter(c.failures, s.CreateFailures, p.Name, "create")
		counter(c.failures, s.PauseFailures, p.Name, "pause")
		counter(c.failures, s.UnpauseFailures, p.Name, "unpause")
	}
	gauge(c.budgetUse, float64(st.MemoryUsed))
	gauge(c.budget, float64(st.MemoryTotal))
	gauge(c.leases, float64(len(st.Leases)))
	if c.docker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h := c.docker(ctx)
		cancel()
		up := 0.0
		if h != nil && h.OK {
			up = 1
		}
		gauge(c.dockerUp, up)
	}
	if c.volumes == nil {
		return
	}
	for _, v := range c.volumes() {
		if v.Options.Size > 0 {
			gauge(c.volLimit, float64(v.Options.Size), v.Name)
		}
		if v.Options.Limited() && v.Mounts > 0 {
			gauge(c.volUsed, float64(v.BytesUsed), v.Name)
		}
	}
}
