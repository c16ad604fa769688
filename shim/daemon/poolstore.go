package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/open-lambda/ol-shim/shim/spec"
)

// poolStore is the registry's PoolStore: the pools made through the API,
// as JSON in a bbolt file of the state root (pools.db).
type poolStore struct {
	db *bolt.DB
}

var bucketPools = []byte("pools")

// openPoolStore opens (making it if missing) root's pools.db.
func openPoolStore(root string) (*poolStore, error) {
	path := filepath.Join(root, "pools.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("pool store %s: locked by another process (is another ol-shim running on this state root?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("pool store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketPools)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("pool store %s: %w", path, err)
	}
	return &poolStore{db: db}, nil
}

func (s *poolStore) Pools() (map[string]spec.PoolConfig, error) {
	out := map[string]spec.PoolConfig{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPools).ForEach(func(k, v []byte) error {
			var pc spec.PoolConfig
			if err := json.Unmarshal(v, &pc); err != nil {
				return fmt.Errorf("pool %q: %w", k, err)
			}
			out[string(k)] = pc
			return nil
		})
	})
	return out, err
}

func (s *poolStore) PutPool(name string, pc spec.PoolConfig) error {
	b, err := json.Marshal(pc)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPools).Put([]byte(name), b) })
}

func (s *poolStore) DeletePool(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPools).Delete([]byte(name)) })
}

func (s *poolStore) close() error { return s.db.Close() }
