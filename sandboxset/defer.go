package sandboxset

import (
	"context"
	"sync"
	"time"
)

// Destroys of used sandboxes compete with creates for the same container
// runtime: in a burst of fresh runs, every caller waits for a create while
// the runtime is also removing the sandboxes of the runs before. A Reaper,
// shared by the Sets of one runtime, holds those destroys back while
// creates are waited for, paused (so they cost no CPU), and does them when
// the runtime is quiet. The deferral is bounded in count (with MaxDeferred
// held, a destroy is done at once: holding it would cost a pause now and a
// resume before the remove, on top of the destroy the held one then needs)
// and in time (none waits longer than MaxDelay).

// Reaper defaults.
const (
	DefaultMaxDeferred = 16
	DefaultMaxDelay    = 10 * time.Second
	// reaperTick is how often a Reaper holding destroys looks at them.
	reaperTick = 25 * time.Millisecond
)

// Reaper defers destroys of used sandboxes while creates are waited for.
// Create one with NewReaper; Sets share it through Config.Reaper.
type Reaper struct {
	busy        func() bool
	maxDeferred int
	maxDelay    time.Duration

	mu      sync.Mutex
	queue   []deferred // guarded by mu: oldest first
	stopped bool       // guarded by mu
	kick    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

// deferred is one destroy held back: its Set and entry, and since when.
type deferred struct {
	s     *Set
	e     *entry
	since time.Time
}

// NewReaper returns a Reaper that defers while busy reports true (creates
// are waited for or in flight). maxDeferred and maxDelay bound the
// deferral; 0 takes the defaults.
func NewReaper(busy func() bool, maxDeferred int, maxDelay time.Duration) *Reaper {
	if maxDeferred <= 0 {
		maxDeferred = DefaultMaxDeferred
	}
	if maxDelay <= 0 {
		maxDelay = DefaultMaxDelay
	}
	r := &Reaper{busy: busy, maxDeferred: maxDeferred, maxDelay: maxDelay, kick: make(chan struct{}, 1), done: make(chan struct{})}
	r.wg.Add(1)
	go r.loop()
	return r
}

// full reports whether the Reaper holds as many destroys as it may.
func (r *Reaper) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) >= r.maxDeferred
}

// Deferred returns how many destroys are held back now.
func (r *Reaper) Deferred() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// Stop does every held-back destroy now and stops the Reaper; later
// deferrals are done at once.
func (r *Reaper) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	close(r.done)
	r.mu.Unlock()
	r.wg.Wait()
	r.run(r.take(func(int, deferred) bool { return true }))
}

// add queues d; it reports false if the Reaper is stopped.
func (r *Reaper) add(d deferred) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.queue = append(r.queue, d)
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return true
}

// take removes and returns the queued destroys due: for which due(i, d)
// holds, i counting from the oldest.
func (r *Reaper) take(due func(i int, d deferred) bool) []deferred {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []deferred
	keep := r.queue[:0]
	for i, d := range r.queue {
		if due(i, d) {
			out = append(out, d)
		} else {
			keep = append(keep, d)
		}
	}
	clear(r.queue[len(keep):])
	r.queue = keep
	return out
}

func (r *Reaper) loop() {
	defer r.wg.Done()
	t := time.NewTimer(reaperTick)
	defer t.Stop()
	for {
		// Holding nothing, it sleeps until a destroy is added (add kicks).
		var tick <-chan time.Time
		if r.Deferred() > 0 {
			t.Reset(reaperTick)
			tick = t.C
		}
		select {
		case <-r.done:
			return
		case <-r.kick:
		case <-tick:
		}
		t.Stop()
		quiet := !r.busy()
		now := time.Now()
		r.mu.Lock()
		over := len(r.queue) - r.maxDeferred
		r.mu.Unlock()
		r.run(r.take(func(i int, d deferred) bool {
			return quiet || i < over || now.Sub(d.since) >= r.maxDelay
		}))
	}
}

// run does the destroys, two at a time: the runtime is quiet, or they are
// overdue while creates run beside them.
func (r *Reaper) run(ds []deferred) {
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, d := range ds {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.s.finishDeferred(d.e)
		}()
	}
	wg.Wait()
}

// Pressure returns the creates in flight plus the Gets waiting: a Reaper
// defers destroys while any Set it serves has some.
func (s *Set) Pressure() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creating + len(s.waiters)
}

// DestroyDeferred destroys the sandbox like Destroy, but where the Set has
// a Reaper with room and creates are waited for, it pauses the sandbox and leaves
// the destroy to the Reaper: off the critical path of those creates. The
// sandbox's slot is free at once (a deferred sandbox is not counted in
// MaxSize; the Reaper bounds how many there are). It returns the error of
// a destroy done now; a deferred one is logged.
func (r *Ref) DestroyDeferred(reason string) error {
	rp := r.set.cfg.Reaper
	if rp == nil || rp.full() || !rp.busy() {
		return r.Destroy(reason)
	}
	r.release("DestroyDeferred")
	s, e := r.set, r.e
	// Paused, it costs no CPU while it waits. No deadline here, as in
	// Put: the Sandbox bounds its own call.
	if err := e.sb.Pause(context.Background()); err != nil {
		s.log.Debug("pause before a deferred destroy failed; destroying now", "sandbox", e.id, "error", err)
		return s.destroyHeld(e, reason)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.destroyHeld(e, reason)
	}
	s.inUse--
	s.live--
	s.deferred[e] = reason
	e.state = stateDeferred
	s.refillLocked()
	s.mu.Unlock()
	if !rp.add(deferred{s: s, e: e, since: time.Now()}) {
		s.finishDeferred(e)
	}
	return nil
}

// finishDeferred destroys e, deferred, unless Close or the Reaper already
// has. No lock is held.
func (s *Set) finishDeferred(e *entry) {
	s.mu.Lock()
	reason, ok := s.deferred[e]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(s.deferred, e)
	e.state = stateDestroying
	s.live++ // destroy frees the slot it counts
	s.mu.Unlock()
	_ = s.destroy(e, reason)
}
