// Package metrics is the daemon's Prometheus metrics: acquire latency
// histograms observed as acquisitions happen, and everything else read at
// scrape time from the sources the daemon hands it.
package metrics

import (
	"net/http"
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

// NewMetrics returns metrics with nothing to read yet; see Watch.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ol_shim_acquire_seconds",
			Help:    "Time to hand out a sandbox (acquire or run), by pool and outcome (hot, warm, cold).",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"pool", "outcome"}),
	}
	m.reg.MustRegister(m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// Watch makes the metrics read status (and volumes, if not nil) at every
// scrape. Volumes' usage is read only for mounted volumes with a quota.
func (m *Metrics) Watch(status func() api.Status, volumes func() []api.VolumeStatus) {
	m.reg.MustRegister(&stateCollector{status: status, volumes: volumes})
}

var (
	descSandboxes = prometheus.NewDesc("ol_shim_sandboxes", "Sandboxes by pool and state.", []string{"pool", "state"}, nil)
	descAcquired  = prometheus.NewDesc("ol_shim_acquisitions_total", "Sandboxes handed out, by pool and outcome.", []string{"pool", "outcome"}, nil)
	descCreates   = prometheus.NewDesc("ol_shim_creates_total", "Sandboxes created, by pool.", []string{"pool"}, nil)
	descDestroys  = prometheus.NewDesc("ol_shim_destroys_total", "Sandboxes destroyed, by pool and reason.", []string{"pool", "reason"}, nil)
	descFailures  = prometheus.NewDesc("ol_shim_failures_total", "Create, pause and unpause failures, by pool and operation.", []string{"pool", "op"}, nil)
	descBudget    = prometheus.NewDesc("ol_shim_memory_budget_bytes", "Memory limits of live sandboxes (used) against the host budget (total).", []string{"kind"}, nil)
	descLeases    = prometheus.NewDesc("ol_shim_leases", "Sandboxes acquired and not yet released.", nil, nil)
	descVolUsed   = prometheus.NewDesc("ol_shim_volume_bytes_used", "Bytes used by a mounted volume with a quota.", []string{"volume"}, nil)
	descVolLimit  = prometheus.NewDesc("ol_shim_volume_bytes_limit", "Byte quota of a volume.", []string{"volume"}, nil)
)

type stateCollector struct {
	status  func() api.Status
	volumes func() []api.VolumeStatus
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSandboxes, descAcquired, descCreates, descDestroys, descFailures, descBudget, descLeases, descVolUsed, descVolLimit} {
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
		for state, n := range map[string]int{"idle": s.Idle, "in_use": s.InUse, "creating": s.Creating, "pausing": s.Pausing, "waiting": s.Waiting} {
			gauge(descSandboxes, float64(n), p.Name, state)
		}
		counter(descAcquired, s.HotHits, p.Name, "hot")
		counter(descAcquired, s.WarmHits, p.Name, "warm")
		counter(descAcquired, s.ColdMisses, p.Name, "cold")
		counter(descCreates, s.Creates, p.Name)
		for reason, n := range s.Destroys {
			counter(descDestroys, n, p.Name, reason)
		}
		counter(descFailures, s.CreateFailures, p.Name, "create")
		counter(descFailures, s.PauseFailures, p.Name, "pause")
		counter(descFailures, s.UnpauseFailures, p.Name, "unpause")
	}
	gauge(descBudget, float64(st.MemoryUsed), "used")
	gauge(descBudget, float64(st.MemoryTotal), "total")
	gauge(descLeases, float64(len(st.Leases)))
	if c.volumes == nil {
		return
	}
	for _, v := range c.volumes() {
		if v.Options.Size > 0 {
			gauge(descVolLimit, float64(v.Options.Size), v.Name)
		}
		if v.Options.Limited() && v.Mounts > 0 {
			gauge(descVolUsed, float64(v.BytesUsed), v.Name)
		}
	}
}
