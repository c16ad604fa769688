package sandboxset

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Op names a backend operation, for MockBackend's faults and latencies.
type Op string

// The operations of a MockBackend.
const (
	OpCreate  Op = "create"
	OpFork    Op = "fork"
	OpPause   Op = "pause"
	OpUnpause Op = "unpause"
	OpDestroy Op = "destroy"
)

// ErrSandboxDead is returned by a mock sandbox killed with MockBackend.Kill.
var ErrSandboxDead = errors.New("sandbox is dead")

// MockBackend is an in-memory Backend and Forker: sandboxes are records, not
// processes. It lets ol-shim be tried without Docker and lets tests inject
// faults (SetFault, Kill) and latencies (SetLatency). It is safe for
// concurrent use.
type MockBackend struct {
	mu        sync.Mutex
	alive     map[string]*MockSandbox // guarded by mu
	faults    map[Op]error            // guarded by mu
	latency   map[Op]time.Duration    // guarded by mu
	created   int                     // guarded by mu
	destroyed int                     // guarded by mu
}

var (
	_ Backend = (*MockBackend)(nil)
	_ Forker  = (*MockBackend)(nil)
	_ Sandbox = (*MockSandbox)(nil)
)

// NewMockBackend returns a MockBackend with no faults and no latency.
func NewMockBackend() *MockBackend {
	return &MockBackend{
		alive:   map[string]*MockSandbox{},
		faults:  map[Op]error{},
		latency: map[Op]time.Duration{},
	}
}

// SetFault makes every later op fail with err; a nil err clears it.
func (m *MockBackend) SetFault(op Op, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		delete(m.faults, op)
		return
	}
	m.faults[op] = err
}

// SetLatency makes every later op take d (honouring its context).
func (m *MockBackend) SetLatency(op Op, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.latency[op] = d
}

// Kill makes sandbox id die: its later Pause and Unpause fail with
// ErrSandboxDead, as a container killed from outside would.
func (m *MockBackend) Kill(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.alive[id]
	if !ok {
		return fmt.Errorf("mock sandbox %s: not found", id)
	}
	sb.dead = true
	return nil
}

// Counts returns how many sandboxes were created and destroyed, and how
// many exist now. created == destroyed + alive always holds.
func (m *MockBackend) Counts() (created, destroyed, alive int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.created, m.destroyed, len(m.alive)
}

// Alive returns the IDs of the sandboxes that exist, sorted.
func (m *MockBackend) Alive() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.alive))
	for id := range m.alive {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Lookup returns the live sandbox id, or nil.
func (m *MockBackend) Lookup(id string) *MockSandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alive[id]
}

// begin applies op's latency and fault. mu must not be held.
func (m *MockBackend) begin(ctx context.Context, op Op) error {
	m.mu.Lock()
	d, err := m.latency[op], m.faults[op]
	m.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("mock %s: %w", op, ctx.Err())
		}
	}
	if err != nil {
		return fmt.Errorf("mock %s: %w", op, err)
	}
	return nil
}

// Create makes a new, unpaused mock sandbox.
func (m *MockBackend) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	if err := m.begin(ctx, OpCreate); err != nil {
		return nil, err
	}
	return m.add(spec, "")
}

// Fork makes a new, unpaused mock sandbox recorded as a child of parent.
func (m *MockBackend) Fork(ctx context.Context, parent Sandbox, spec Spec) (Sandbox, error) {
	if err := m.begin(ctx, OpFork); err != nil {
		return nil, err
	}
	p, ok := parent.(*MockSandbox)
	if !ok || p.m != m {
		return nil, fmt.Errorf("mock fork %s: parent %s is not a sandbox of this backend", spec.ID, parent.ID())
	}
	m.mu.Lock()
	bad := p.paused || p.dead || p.destroyed
	m.mu.Unlock()
	if bad {
		return nil, fmt.Errorf("mock fork %s: parent %s is not running", spec.ID, p.id)
	}
	return m.add(spec, p.id)
}

func (m *MockBackend) add(spec Spec, parent string) (*MockSandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.alive[spec.ID]; dup {
		return nil, fmt.Errorf("mock create %s: a sandbox with this ID exists", spec.ID)
	}
	sb := &MockSandbox{m: m, id: spec.ID, spec: spec, parent: parent}
	m.alive[spec.ID] = sb
	m.created++
	return sb, nil
}

// MockSandbox is a sandbox of a MockBackend.
type MockSandbox struct {
	m      *MockBackend
	id     string
	spec   Spec
	parent string // ID of the sandbox it was forked from, or ""

	paused    bool // guarded by m.mu
	dead      bool // guarded by m.mu
	destroyed bool // guarded by m.mu
}

// ID returns the sandbox's ID.
func (s *MockSandbox) ID() string { return s.id }

// Spec returns the spec the sandbox was created from.
func (s *MockSandbox) Spec() Spec { return s.spec }

// Parent returns the ID of the sandbox it was forked from, or "".
func (s *MockSandbox) Parent() string { return s.parent }

// Paused reports whether the sandbox is paused.
func (s *MockSandbox) Paused() bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.paused
}

func (s *MockSandbox) setPaused(ctx context.Context, op Op, paused bool) error {
	if err := s.m.begin(ctx, op); err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	switch {
	case s.destroyed:
		return fmt.Errorf("mock %s %s: sandbox was destroyed", op, s.id)
	case s.dead:
		return fmt.Errorf("mock %s %s: %w", op, s.id, ErrSandboxDead)
	case s.paused == paused:
		return fmt.Errorf("mock %s %s: already in that state", op, s.id)
	}
	s.paused = paused
	return nil
}

// Pause pauses the sandbox.
func (s *MockSandbox) Pause(ctx context.Context) error { return s.setPaused(ctx, OpPause, true) }

// Unpause resumes the sandbox.
func (s *MockSandbox) Unpause(ctx context.Context) error { return s.setPaused(ctx, OpUnpause, false) }

// Destroy removes the sandbox. A fault set for OpDestroy is returned but the
// sandbox is removed all the same, as a force-remove of a container would.
func (s *MockSandbox) Destroy(ctx context.Context, reason string) error {
	err := s.m.begin(ctx, OpDestroy)
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.destroyed {
		return err
	}
	s.destroyed = true
	delete(s.m.alive, s.id)
	s.m.destroyed++
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	return nil
}
