package registry

import (
	"fmt"

	"github.com/open-lambda/ol-shim/shim/spec"
)

// PoolStore keeps the pools made through the API (PutPool), so that a
// restart (and so every upgrade) keeps them, as Docker keeps the networks
// and volumes its API made. Pools of the config file are the file's, and
// ad-hoc pools are made again on demand: neither is stored.
type PoolStore interface {
	// Pools returns every stored pool.
	Pools() (map[string]spec.PoolConfig, error)
	// PutPool stores pool name, replacing what was stored under it.
	PutPool(name string, pc spec.PoolConfig) error
	// DeletePool removes pool name; one not stored is no error.
	DeletePool(name string) error
}

// storedPools returns the stored pools that the config file does not
// name (a configured pool takes the name: its record goes).
func (r *Registry) storedPools(configured map[string]spec.PoolConfig) map[string]spec.PoolConfig {
	st := r.cfg.Store
	if st == nil {
		return nil
	}
	stored, err := st.Pools()
	if err != nil {
		r.log.Error("the pools made through the API cannot be read; they are not made", "error", err)
		return nil
	}
	for name := range stored {
		if _, ok := configured[name]; ok {
			r.log.Warn("a pool made through the API now has the config file's name; the file's wins", "pool", name)
			r.forget(name)
			delete(stored, name)
		}
	}
	return stored
}

// remember stores a pool made through the API.
func (r *Registry) remember(name string, pc spec.PoolConfig) error {
	if r.cfg.Store == nil {
		return nil
	}
	if err := r.cfg.Store.PutPool(name, pc); err != nil {
		return fmt.Errorf("pool %q: record it in the state root: %w", name, err)
	}
	return nil
}

// forget removes a stored pool, logging a failure (the pool would come
// back at the next start).
func (r *Registry) forget(name string) {
	if r.cfg.Store == nil {
		return
	}
	if err := r.cfg.Store.DeletePool(name); err != nil {
		r.log.Error("remove a pool's record; it comes back at the next start", "pool", name, "error", err)
	}
}
