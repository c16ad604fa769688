package sandboxset

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DirScratch is a ScratchMaker that makes plain directories under Root. It
// serves tests and the mock backend; package scratch provides the one the
// daemon uses (quotas, volume plugin).
type DirScratch struct {
	Root string
	// UID and GID own each directory, if not 0.
	UID, GID int
}

var _ ScratchMaker = DirScratch{}

func (d DirScratch) path(id string) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, `/\`) || strings.ContainsRune(id, 0) {
		return "", fmt.Errorf("scratch directory %q: not a valid name", id)
	}
	return filepath.Join(d.Root, id), nil
}

// Make creates Root/id, mode 0750, owned by UID and GID. It fails if it
// exists.
func (d DirScratch) Make(_ context.Context, id string) (string, error) {
	p, err := d.path(id)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(p, 0o750); err != nil {
		return "", fmt.Errorf("scratch directory %s: %w", id, err)
	}
	if d.UID != 0 || d.GID != 0 {
		if err := os.Lchown(p, d.UID, d.GID); err != nil {
			os.Remove(p)
			return "", fmt.Errorf("scratch directory %s: %w", id, err)
		}
	}
	return p, nil
}

// Remove deletes Root/id and everything in it.
func (d DirScratch) Remove(_ context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("scratch directory %s: %w", id, err)
	}
	return nil
}

// List returns the names of the scratch directories under Root.
func (d DirScratch) List(context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.Root)
	if err != nil {
		return nil, fmt.Errorf("scratch root %s: %w", d.Root, err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}
