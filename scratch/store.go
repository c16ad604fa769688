package scratch

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Record is what the store keeps of a volume: enough for `docker volume
// ls` and its data to survive a restart. Mount counts are not kept: they are
// rebuilt at start from what is really mounted.
type Record struct {
	Name      string    `json:"name"`
	Options   Options   `json:"options"`
	CreatedAt time.Time `json:"created_at"`
}

var bucketVolumes = []byte("volumes")

// store is the embedded bbolt database of volume records.
type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state store %s: locked by another process (is another ol-shim running on this state root?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("state store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketVolumes)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) put(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Put([]byte(r.Name), b)
	})
}

func (s *store) delete(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Delete([]byte(name))
	})
}

// list returns every record; a record that does not decode is an error
// naming it.
func (s *store) list() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			if r.Name != string(k) {
				return fmt.Errorf("record %q: names volume %q", k, r.Name)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}
