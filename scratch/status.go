package scratch

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Status describes a volume for Get and List.
type Status struct {
	Name       string    `json:"name"`
	Mountpoint string    `json:"mountpoint"`
	CreatedAt  time.Time `json:"created_at"`
	Options    Options   `json:"options"`
	Mounts     int       `json:"mounts"`
	BytesUsed  int64     `json:"bytes_used"`
	InodesUsed int64     `json:"inodes_used"`
	// Server is the FUSE server of a mounted quota'd volume.
	Server *ServerStatus `json:"server,omitempty"`
}

// Get returns a volume's status, with its usage.
func (m *Manager) Get(name string) (Status, error) {
	v, err := m.get(name)
	if err != nil {
		return Status{}, err
	}
	return m.status(v, true)
}

// List returns every volume's status, without usage (which would walk
// every unmounted volume).
func (m *Manager) List() []Status {
	m.mu.Lock()
	vols := slices.Collect(maps.Values(m.vols))
	m.mu.Unlock()
	out := make([]Status, 0, len(vols))
	for _, v := range vols {
		if st, err := m.status(v, false); err == nil {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *Manager) status(v *vol, withUsage bool) (Status, error) {
	v.mu.Lock()
	st := Status{Name: v.rec.Name, CreatedAt: v.rec.CreatedAt, Options: v.rec.Options, Mounts: v.mountsLocked()}
	srv := v.server
	v.mu.Unlock()
	if srv != nil {
		ss := srv.status()
		st.Server = &ss
	}
	st.Mountpoint = m.volPath(v)
	if !withUsage {
		return st, nil
	}
	b, i, err := backendOf(v).usage(m, v)
	if err != nil {
		return st, err
	}
	st.BytesUsed, st.InodesUsed = b, i
	return st, nil
}
