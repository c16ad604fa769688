package registry

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/open-lambda/ol-shim/sandboxset"
)

// Who held each paused sandbox last (Pool.heldBy) outlives a restart: a
// stop that leaves the sandboxes for the next start writes it to heldFile,
// and the next start reads it for the sandboxes it adopts, then removes
// it. Where the file is missing or unreadable (the daemon was killed, or
// it is the first start), every adopted sandbox is held by unknownHolder,
// whom no caller is: the first take by anyone recycles it (where its pool
// recycles) or destroys it. A restart never hands one caller what another
// left.

// heldFile is the record's name under the state root.
const heldFile = "held.json"

// maxHeldFile bounds what is read of it.
const maxHeldFile = 16 << 20

// unknownHolder holds an adopted sandbox whose last holder is not known.
const unknownHolder = "\x00unknown"

// heldRecord is heldFile's content: pool -> sandbox ID -> holder's key.
type heldRecord map[string]map[string]string

func (r *Registry) heldPath() string { return filepath.Join(r.cfg.Root, heldFile) }

// saveHeld writes who held each sandbox of pools, at a stop that keeps
// them.
func (r *Registry) saveHeld(pools []*Pool) error {
	if r.cfg.Root == "" {
		return nil
	}
	rec := heldRecord{}
	for _, p := range pools {
		p.heldMu.Lock()
		if len(p.heldBy) > 0 {
			m := make(map[string]string, len(p.heldBy))
			for id, k := range p.heldBy {
				m[id] = k
			}
			rec[p.Name] = m
		}
		p.heldMu.Unlock()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := r.heldPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.heldPath())
}

// adoptedIDs records the sandboxes a reconcile adopts, by pool.
type adoptedIDs struct {
	mu  sync.Mutex
	ids map[*Pool][]string
}

// wrap returns p's adoption wrapper that also records each sandbox.
func (a *adoptedIDs) wrap(p *Pool) func(sandboxset.Sandbox) sandboxset.Sandbox {
	return func(sb sandboxset.Sandbox) sandboxset.Sandbox {
		a.mu.Lock()
		if a.ids == nil {
			a.ids = map[*Pool][]string{}
		}
		a.ids[p] = append(a.ids[p], sb.ID())
		a.mu.Unlock()
		if p.wrap != nil {
			return p.wrap(sb)
		}
		return sb
	}
}

// restoreHeld sets who held each adopted sandbox, from heldFile (then
// removed), or unknownHolder where it does not say.
func (r *Registry) restoreHeld(a *adoptedIDs) {
	var rec heldRecord
	known := false
	if r.cfg.Root != "" {
		if f, err := os.Open(r.heldPath()); err == nil {
			err = json.NewDecoder(io.LimitReader(f, maxHeldFile)).Decode(&rec)
			f.Close()
			if err != nil {
				r.log.Warn("the record of who held each sandbox is unreadable; every adopted sandbox is recycled or destroyed at its first take", "file", r.heldPath(), "error", err)
			} else {
				known = true
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("the record of who held each sandbox", "file", r.heldPath(), "error", err)
		}
		os.Remove(r.heldPath())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for p, ids := range a.ids {
		p.heldMu.Lock()
		if p.heldBy == nil {
			p.heldBy = map[string]string{}
		}
		for _, id := range ids {
			switch k, ok := rec[p.Name][id]; {
			case ok:
				p.heldBy[id] = k
			case !known:
				p.heldBy[id] = unknownHolder
				n++
			}
			// known, and not in the record: no one took it.
		}
		p.heldMu.Unlock()
	}
	if n > 0 {
		r.log.Info("adopted sandboxes whose last holder is not known (the daemon did not stop cleanly): each is recycled or destroyed at its first take", "sandboxes", n)
	}
}
