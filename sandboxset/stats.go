package sandboxset

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// latencyWindow is how many recent Get latencies per outcome Stats
// summarises.
const latencyWindow = 1024

// Stats is a snapshot of a Set.
type Stats struct {
	Pool string `json:"pool"`
	// Now.
	Idle     int `json:"idle"`
	InUse    int `json:"in_use"`
	Creating int `json:"creating"`
	Pausing  int `json:"pausing"`
	// Deferred: used sandboxes whose destroy the Reaper holds back.
	Deferred int  `json:"deferred"`
	Waiting  int  `json:"waiting"`
	MinIdle  int  `json:"min_idle"`
	MaxSize  int  `json:"max_size"`
	Closed   bool `json:"closed"`
	// Since New.
	HotHits         uint64            `json:"hot_hits"`
	WarmHits        uint64            `json:"warm_hits"`
	ColdMisses      uint64            `json:"cold_misses"`
	Creates         uint64            `json:"creates"`
	CreateFailures  uint64            `json:"create_failures"`
	PauseFailures   uint64            `json:"pause_failures"`
	UnpauseFailures uint64            `json:"unpause_failures"`
	Destroys        map[string]uint64 `json:"destroys"` // by reason
	// Latency of GetOrCreateUnpaused by outcome ("hot", "warm", "cold"),
	// over the most recent calls.
	Latency map[string]LatencySummary `json:"latency"`
}

// LatencySummary summarises recent latencies of one kind.
type LatencySummary struct {
	Count uint64        `json:"count"` // since New
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"` // over the window
}

// Destroyed returns the number of sandboxes destroyed for any reason.
func (st Stats) Destroyed() uint64 {
	var n uint64
	for _, v := range st.Destroys {
		n += v
	}
	return n
}

type ring struct {
	buf   [latencyWindow]time.Duration
	n     uint64 // total recorded
	count int    // valid entries in buf
}

func (r *ring) add(d time.Duration) {
	r.buf[r.n%latencyWindow] = d
	r.n++
	r.count = min(r.count+1, latencyWindow)
}

func (r *ring) summary() LatencySummary {
	s := LatencySummary{Count: r.n}
	if r.count == 0 {
		return s
	}
	v := slices.Clone(r.buf[:r.count])
	slices.Sort(v)
	q := func(p float64) time.Duration { return v[min(int(p*float64(len(v))), len(v)-1)] }
	s.P50, s.P90, s.P99, s.Max = q(0.50), q(0.90), q(0.99), v[len(v)-1]
	return s
}

// stats holds a Set's counters. It has its own lock so that reading it and
// recording into it never contend with the pool's mutex.
type stats struct {
	creates, createFailures        atomic.Uint64
	pauseFailures, unpauseFailures atomic.Uint64

	mu       sync.Mutex
	destroys map[string]uint64 // guarded by mu
	latency  [3]*ring          // guarded by mu; indexed by Outcome
}

func (st *stats) init() {
	st.destroys = map[string]uint64{}
	for i := range st.latency {
		st.latency[i] = new(ring)
	}
}

func (st *stats) got(o Outcome, d time.Duration) {
	st.mu.Lock()
	st.latency[o].add(d)
	st.mu.Unlock()
}

func (st *stats) destroyed(reason string) {
	st.mu.Lock()
	st.destroys[reason]++
	st.mu.Unlock()
}

// Stats returns a snapshot of the Set's state and counters.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	out := Stats{
		Pool:     s.cfg.Name,
		Idle:     len(s.idle),
		InUse:    s.inUse,
		Creating: s.creating,
		Pausing:  s.pausing,
		Deferred: len(s.deferred),
		Waiting:  len(s.waiters),
		MinIdle:  s.minIdle,
		MaxSize:  s.maxSize,
		Closed:   s.closed,
	}
	s.mu.Unlock()
	out.Creates = s.stats.creates.Load()
	out.CreateFailures = s.stats.createFailures.Load()
	out.PauseFailures = s.stats.pauseFailures.Load()
	out.UnpauseFailures = s.stats.unpauseFailures.Load()

	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out.Destroys = maps.Clone(s.stats.destroys)
	out.Latency = map[string]LatencySummary{}
	for _, o := range []Outcome{Hot, Warm, Cold} {
		sum := s.stats.latency[o].summary()
		out.Latency[o.String()] = sum
	}
	out.HotHits = out.Latency[Hot.String()].Count
	out.WarmHits = out.Latency[Warm.String()].Count
	out.ColdMisses = out.Latency[Cold.String()].Count
	return out
}
