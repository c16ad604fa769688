package scratch

import (
	"context"
	"fmt"
)

// Grow raises a limited volume's size limit to size bytes and its inode
// limit to inodes (0 leaves either as it is; a volume made with a size
// and no inode limit has the default inode limit of its new size). Limits
// never go down. The volume must not be mounted: a kernel backend
// volume's file system is unmounted while it grows (see loopfs.Grow), and
// a FUSE volume's limits are read by its server when it starts. It returns
// the volume's status with the new limits.
func (m *Manager) Grow(ctx context.Context, name string, size, inodes int64) (Status, error) {
	v, err := m.get(name)
	if err != nil {
		return Status{}, err
	}
	v.mu.Lock()
	err = m.growLocked(ctx, v, size, inodes)
	v.mu.Unlock()
	if err != nil {
		return Status{}, err
	}
	return m.status(v, true)
}

func (m *Manager) growLocked(ctx context.Context, v *vol, size, inodes int64) error {
	name := v.rec.Name
	if v.removed {
		return fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	old := v.rec.Options
	if !old.Limited() {
		return fmt.Errorf("volume %q: %w: it has no size or inode limit to grow", name, ErrInvalid)
	}
	if size < 0 || inodes < 0 || (size == 0 && inodes == 0) {
		return fmt.Errorf("volume %q: %w: give a larger size or inode limit", name, ErrInvalid)
	}
	o := old
	if size > 0 {
		o.Size = size
	}
	if inodes > 0 {
		o.Inodes = inodes
	}
	if (old.Size > 0 && o.Size < old.Size) || o.InodeLimit() < old.InodeLimit() {
		return fmt.Errorf("volume %q: %w: limits %s are below its %s (a volume can grow, not shrink)", name, ErrInvalid, o, old)
	}
	if n := v.mountsLocked(); n > 0 {
		return fmt.Errorf("volume %q: %w: mounted %d times; a volume grows while no container has it", name, ErrInUse, n)
	}
	if err := backendOf(v).grow(ctx, m, v, old, o); err != nil {
		return err
	}
	rec := v.rec
	rec.Options = o
	if err := m.store.put(rec); err != nil {
		return fmt.Errorf("volume %q: record: %w", name, err)
	}
	v.rec = rec
	m.log.Info("volume grown", "volume", name, "from", old.String(), "to", o.String())
	return nil
}
