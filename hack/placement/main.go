// Command placement compares, in a simulation, how four ways of spreading
// function calls over ol-shim hosts keep functions warm: bounded-load
// consistent hashing (what examples/cluster/haproxy.cfg sets up), plain
// consistent hashing, round robin and least connections.
//
// The model: H hosts, each with room for W sandboxes, busy (serving one
// call) or idle (warm for its function). F functions are called at
// Zipf-distributed rates, with Poisson arrivals; a call is busy for an
// exponential time, plus a cold start's time when the host it lands on has
// no idle sandbox of its function. A cold start takes a free place, else
// evicts the host's least recently used idle sandbox. A call that finds
// every place of its host busy is refused (a real host would queue it or
// fail it): the price of piling a hot function on one host. The offered
// load is a share of all places, counted with warm calls.
//
// It prints a Markdown table (warm hits, cold starts and refused calls per
// 1,000 calls) and plots cold starts and refusals against the number of
// hosts.
//
// Usage: go run ./hack/placement [-calls N] [-plot FILE]
package main

import (
	"container/heap"
	"flag"
	"fmt"
	"hash/fnv"
	"image/color"
	"math"
	"math/rand/v2"
	"os"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// params of one simulated cluster.
type params struct {
	hosts, funcs, places int     // H, F, W
	zipf                 float64 // exponent of the functions' call rates
	load                 float64 // offered load: share of all places busy with warm calls
	service, cold        float64 // mean call time; a cold start's extra time
	balance              float64 // bounded load: at most balance × the mean calls in flight per host
	vnodes               int     // points per host on the ring
	calls                int
	seed                 uint64
}

type policy string

const (
	bounded    policy = "bounded-load consistent hashing"
	consistent policy = "consistent hashing"
	roundRobin policy = "round robin"
	leastConn  policy = "least connections"
)

var policies = []policy{bounded, consistent, roundRobin, leastConn}

type result struct{ warm, cold, refused, calls int }

func (r result) per1k(n int) float64 { return 1000 * float64(n) / float64(r.calls) }

// host is one ol-shim host: calls in flight, and idle sandboxes by
// function with the times they went idle (for LRU eviction).
type host struct {
	busy, idle int
	idleOf     map[int][]float64
}

// end is a call's end: at time t, host h's sandbox of function f is idle.
type end struct {
	t    float64
	h, f int
}

type ends []end

func (q ends) Len() int           { return len(q) }
func (q ends) Less(i, j int) bool { return q[i].t < q[j].t }
func (q ends) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *ends) Push(x any)        { *q = append(*q, x.(end)) }
func (q *ends) Pop() any {
	o := *q
	x := o[len(o)-1]
	*q = o[:len(o)-1]
	return x
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// ring is a consistent-hash ring of the hosts.
type ring struct {
	points []uint64
	owner  []int
}

func newRing(hosts, vnodes int) ring {
	type pt struct {
		p uint64
		h int
	}
	var pts []pt
	for h := range hosts {
		for v := range vnodes {
			pts = append(pts, pt{hash64(fmt.Sprintf("host-%d#%d", h, v)), h})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].p < pts[j].p })
	var r ring
	for _, x := range pts {
		r.points = append(r.points, x.p)
		r.owner = append(r.owner, x.h)
	}
	return r
}

// walk visits the hosts clockwise from key, each once, and returns the
// first that ok accepts, or the first visited if none does.
func (r ring) walk(key uint64, hosts int, ok func(int) bool) int {
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= key })
	seen := make(map[int]bool, hosts)
	first := -1
	for n := 0; n < len(r.points) && len(seen) < hosts; n++ {
		h := r.owner[(i+n)%len(r.points)]
		if seen[h] {
			continue
		}
		seen[h] = true
		if first < 0 {
			first = h
		}
		if ok(h) {
			return h
		}
	}
	return first
}

func simulate(p params, pol policy) result {
	rng := rand.New(rand.NewPCG(p.seed, 1))
	cum := make([]float64, p.funcs)
	var sum float64
	for i := range cum {
		sum += 1 / math.Pow(float64(i+1), p.zipf)
		cum[i] = sum
	}
	for i := range cum {
		cum[i] /= sum
	}
	rate := p.load * float64(p.hosts*p.places) / p.service
	hosts := make([]*host, p.hosts)
	for i := range hosts {
		hosts[i] = &host{idleOf: map[int][]float64{}}
	}
	r := newRing(p.hosts, p.vnodes)
	keys := make([]uint64, p.funcs)
	for f := range keys {
		keys[f] = hash64(fmt.Sprintf("fn-%d", f))
	}
	var q ends
	now, next, inFlight := 0.0, 0, 0
	var res result
	for res.calls < p.calls {
		now += rng.ExpFloat64() / rate
		for len(q) > 0 && q[0].t <= now {
			e := heap.Pop(&q).(end)
			h := hosts[e.h]
			h.busy--
			h.idle++
			h.idleOf[e.f] = append(h.idleOf[e.f], e.t)
			inFlight--
		}
		f := min(sort.SearchFloat64s(cum, rng.Float64()), p.funcs-1)
		var hi int
		switch pol {
		case roundRobin:
			hi = next % p.hosts
			next++
		case leastConn:
			for i, h := range hosts {
				if h.busy < hosts[hi].busy {
					hi = i
				}
			}
		case consistent:
			hi = r.walk(keys[f], p.hosts, func(int) bool { return true })
		case bounded:
			limit := math.Ceil(p.balance * float64(inFlight+1) / float64(p.hosts))
			hi = r.walk(keys[f], p.hosts, func(i int) bool { return float64(hosts[i].busy+1) <= limit })
		}
		h := hosts[hi]
		res.calls++
		took := rng.ExpFloat64() * p.service
		switch l := h.idleOf[f]; {
		case len(l) > 0:
			h.idleOf[f] = l[:len(l)-1] // its most recently used
			h.idle--
			res.warm++
		case h.busy+h.idle < p.places:
			res.cold++
			took += p.cold
		case h.idle > 0:
			lf, li, lt := -1, -1, math.Inf(1)
			for g, l := range h.idleOf {
				for i, t := range l {
					if t < lt {
						lf, li, lt = g, i, t
					}
				}
			}
			l := h.idleOf[lf]
			h.idleOf[lf] = append(l[:li], l[li+1:]...)
			h.idle--
			res.cold++
			took += p.cold
		default:
			res.refused++
			continue
		}
		h.busy++
		inFlight++
		heap.Push(&q, end{t: now + took, h: hi, f: f})
	}
	return res
}

func main() {
	calls := flag.Int("calls", 300000, "calls simulated per cluster size and policy")
	plotPath := flag.String("plot", "docs/placement.png", "PNG plot to write (empty: none)")
	flag.Parse()
	sizes := []int{3, 10, 100}
	base := params{places: 32, zipf: 1.1, load: 0.1, service: 1, cold: 4, balance: 1.5, vnodes: 100, calls: *calls, seed: 1}
	const funcsPerHost = 10
	fmt.Printf("Simulated (`go run ./hack/placement`): %d functions per host, call rates Zipf with exponent %.1f; %d places per host; offered load %.0f %% of all places; a call takes 1 time unit on average, a cold start %.0f more; bounded load at %.0f %% of the mean (HAProxy's `hash-balance-factor %.0f`); %d points per host on the ring; %d calls per run.\n\n",
		funcsPerHost, base.zipf, base.places, 100*base.load, base.cold, 100*base.balance, 100*base.balance, base.vnodes, base.calls)
	fmt.Println("| hosts | policy | warm hits | cold starts per 1,000 calls | refused per 1,000 calls (host full) |")
	fmt.Println("|---|---|---|---|---|")
	results := map[policy][]result{}
	for _, n := range sizes {
		p := base
		p.hosts, p.funcs = n, funcsPerHost*n
		for _, pol := range policies {
			r := simulate(p, pol)
			results[pol] = append(results[pol], r)
			fmt.Printf("| %d | %s | %.1f %% | %.1f | %.1f |\n", n, pol, r.per1k(r.warm)/10, r.per1k(r.cold), r.per1k(r.refused))
		}
	}
	if *plotPath == "" {
		return
	}
	if err := draw(*plotPath, sizes, results); err != nil {
		fmt.Fprintln(os.Stderr, "placement: plot:", err)
		os.Exit(1)
	}
}

// draw plots, per policy, cold starts (solid) and refused calls (dashed)
// per 1,000 calls against the number of hosts.
func draw(path string, sizes []int, results map[policy][]result) error {
	p := plot.New()
	p.Title.Text = "Placement of function calls over hosts (simulated)"
	p.X.Label.Text = "hosts (log scale)"
	p.Y.Label.Text = "per 1,000 calls: cold starts (solid), refused (dashed)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks{{Value: 3, Label: "3"}, {Value: 10, Label: "10"}, {Value: 100, Label: "100"}}
	colors := []color.RGBA{{R: 0x2c, G: 0xa0, B: 0x2c, A: 255}, {R: 0x1f, G: 0x77, B: 0xb4, A: 255}, {R: 0xd6, G: 0x27, B: 0x28, A: 255}, {R: 0xff, G: 0x7f, B: 0x0e, A: 255}}
	for i, pol := range policies {
		for _, refused := range []bool{false, true} {
			pts := make(plotter.XYs, len(sizes))
			for k, n := range sizes {
				r := results[pol][k]
				pts[k].X, pts[k].Y = float64(n), r.per1k(r.cold)
				if refused {
					pts[k].Y = r.per1k(r.refused)
				}
			}
			l, s, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			l.Color, s.Color = colors[i], colors[i]
			l.Width = vg.Points(2)
			if refused {
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			} else {
				p.Legend.Add(string(pol), l, s)
			}
			p.Add(l, s)
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Min = 0
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}
