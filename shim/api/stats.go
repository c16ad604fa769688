package api

import "time"

// PoolStats is a pool's counters as the API shows them (the daemon's
// sandboxset.Stats, copied: the client's package imports nothing of the
// daemon side).
type PoolStats struct {
	Pool string `json:"pool"`
	// Now.
	Idle     int `json:"idle"`
	InUse    int `json:"in_use"`
	Creating int `json:"creating"`
	Pausing  int `json:"pausing"`
	// Deferred: used sandboxes whose destroy is held back while creates
	// wait.
	Deferred int  `json:"deferred"`
	Waiting  int  `json:"waiting"`
	MinIdle  int  `json:"min_idle"`
	MaxSize  int  `json:"max_size"`
	Closed   bool `json:"closed"`
	// Since the pool was made.
	HotHits         uint64            `json:"hot_hits"`
	WarmHits        uint64            `json:"warm_hits"`
	ColdMisses      uint64            `json:"cold_misses"`
	Creates         uint64            `json:"creates"`
	CreateFailures  uint64            `json:"create_failures"`
	PauseFailures   uint64            `json:"pause_failures"`
	UnpauseFailures uint64            `json:"unpause_failures"`
	Destroys        map[string]uint64 `json:"destroys"` // by reason
	// Latency of takes by outcome ("hot", "warm", "cold"), over the most
	// recent ones.
	Latency map[string]LatencySummary `json:"latency"`
}

// LatencySummary summarises recent latencies of one kind.
type LatencySummary struct {
	Count uint64        `json:"count"` // since the pool was made
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"` // over the window
}

// Destroyed returns the number of sandboxes destroyed for any reason.
func (st PoolStats) Destroyed() uint64 {
	var n uint64
	for _, v := range st.Destroys {
		n += v
	}
	return n
}
