package docker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// recycleTimeout bounds a recycle: init kills (5 s at most), cleans and
// starts the pool's command again.
const recycleTimeout = 15 * time.Second

// Recycle makes the sandbox as it was made, for its next run, without a
// new container (a pool's `recycle`, only with a read-only root file
// system): its init kills every other process, empties what a run can
// write and starts the pool's command again (see agentd's recycle.go).
// The daemon then checks from the host, in the sandbox's cgroup, that no
// process that was there before survived, and records what runs now as
// the pool's. An error means the sandbox is not as it was made: it must be
// destroyed.
func (s *Sandbox) Recycle(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, recycleTimeout)
	defer cancel()
	initPid, file, err := s.ident(ctx)
	if err != nil {
		return fmt.Errorf("sandbox %s: recycle: %w", s.id, err)
	}
	before, err := procsNow(file)
	if err != nil {
		return fmt.Errorf("sandbox %s: recycle: %w", s.id, err)
	}
	c, err := s.DialAgent(ctx)
	if err != nil {
		if errors.Is(err, ErrImpostor) {
			s.d.impostors.Add(1)
		}
		return fmt.Errorf("sandbox %s: recycle: %w", s.id, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	conn := agent.NewConn(c)
	if err := conn.Write(agent.KindRecycle, nil); err != nil {
		return fmt.Errorf("sandbox %s: recycle: %w", s.id, err)
	}
	f, err := conn.Read()
	if err != nil {
		return fmt.Errorf("sandbox %s: recycle: no answer from init: %w", s.id, err)
	}
	switch f.Kind {
	case agent.KindExit:
	case agent.KindError:
		var e agent.Error
		if agent.Decode(f, &e) == nil {
			return fmt.Errorf("sandbox %s: %s", s.id, e.Message)
		}
		return fmt.Errorf("sandbox %s: recycle failed", s.id)
	default:
		return fmt.Errorf("sandbox %s: recycle: %w: frame %q", s.id, agent.ErrProtocol, f.Kind)
	}
	// Seen from the host, not taken from init's word: nothing that ran
	// before is there.
	was := make(map[proc]bool, len(before))
	for _, p := range before {
		if p.pid != initPid {
			was[p.key()] = true
		}
	}
	now, err := procsNow(file)
	if err != nil {
		return fmt.Errorf("sandbox %s: recycle: %w", s.id, err)
	}
	for _, p := range now {
		if was[p.key()] {
			return fmt.Errorf("sandbox %s: recycle: process %d survived it", s.id, p.pid)
		}
	}
	// Init started the pool's command again before it answered.
	return s.Mark(ctx)
}
