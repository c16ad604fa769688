package metrics

import (
	"context"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
)

// exposed scrapes metrics fed with one pool, one lease, one quota'd
// mounted volume and a dockerd that answers, and returns the names of
// every metric family exposed (a histogram's _bucket, _sum and _count
// included).
func exposed(t *testing.T) map[string]bool {
	t.Helper()
	m := NewMetrics("test")
	m.Observe("fn", "warm", 3*time.Millisecond)
	m.Watch(func() api.Status {
		return api.Status{
			Pools:       []api.PoolStatus{{Name: "fn", Stats: api.PoolStats{Idle: 1, Destroys: map[string]uint64{"idle ttl": 1}}}},
			Leases:      []api.Lease{{ID: "l1", Pool: "fn"}},
			MemoryUsed:  1 << 20,
			MemoryTotal: 1 << 30,
		}
	}, func() []api.VolumeStatus {
		return []api.VolumeStatus{{Name: "v", Mounts: 1, BytesUsed: 10, Options: api.VolumeOptions{Size: 100}}}
	}, func(context.Context) *api.DockerHealth { return &api.DockerHealth{OK: true} })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	names := map[string]bool{}
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		n := l[:strings.IndexAny(l, "{ ")]
		names[n] = true
	}
	return names
}

// TestExamplesUseMetricsThatExist: every ol_shim_ metric the examples'
// Grafana dashboard and alert rules use is one the daemon exposes.
func TestExamplesUseMetricsThatExist(t *testing.T) {
	names := exposed(t)
	re := regexp.MustCompile(`ol_shim_[a-z_]+`)
	for _, f := range []string{"../../examples/monitoring/grafana-dashboard.json", "../../examples/monitoring/alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		used := re.FindAllString(string(b), -1)
		if len(used) == 0 {
			t.Errorf("%s uses no metric of ol-shim", f)
		}
		for _, n := range used {
			if !names[n] {
				t.Errorf("%s uses %s, which the daemon does not expose", f, n)
			}
		}
	}
}

// TestMetricNamesFollowPrometheus: counters end in _total, byte gauges in
// _bytes, durations in _seconds, and ol_shim_build_info and
// ol_shim_docker_up exist; no family mixes unrelated kinds under a label
// (the memory budget is two gauges, callers waiting are not sandboxes).
func TestMetricNamesFollowPrometheus(t *testing.T) {
	names := exposed(t)
	for _, want := range []string{"ol_shim_build_info", "ol_shim_docker_up", "ol_shim_memory_budget_bytes", "ol_shim_memory_budget_used_bytes",
		"ol_shim_waiting_callers", "ol_shim_volume_used_bytes", "ol_shim_volume_limit_bytes", "ol_shim_acquire_seconds_bucket"} {
		if !names[want] {
			t.Errorf("%s is not exposed", want)
		}
	}
	for n := range names {
		if !strings.HasPrefix(n, "ol_shim_") {
			continue
		}
		if strings.Contains(n, "bytes") && !strings.HasSuffix(n, "_bytes") {
			t.Errorf("%s: a size's name ends in _bytes", n)
		}
	}
}
