package scratch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// What Open does after a restart or a crash: rebuild the volumes from
// their records, find the servers that still serve, detach stale mounts,
// drop directories nothing records.

// recover loads the records, detaches stale mounts and remounts the
// volumes still in use.
func (m *Manager) recover(ctx context.Context, inUse func(context.Context) (map[string]int, error)) error {
	recs, err := m.store.list()
	if err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	// Servers an earlier daemon started that still serve keep their
	// mounts; every other FUSE mount under the root is stale.
	live := map[string]*process{}
	if m.serverBinary != "" {
		for _, r := range recs {
			if r.Options.Limited() {
				if p := m.findServer(&vol{rec: r}); p != nil {
					live[r.Name] = p
				}
			}
		}
	}
	// A kernel volume's file system is mounted from create to remove: not
	// stale (detaching it would lose the mountpoint while containers write).
	kernel := map[string]bool{".probe": true}
	for _, r := range recs {
		if r.Options.Backend == BackendKernel {
			kernel[r.Name] = true
		}
	}
	stale, err := m.detachStale(func(name string) bool { return live[name] != nil || kernel[name] })
	if err != nil {
		return err
	}
	users, fromDocker := map[string]int{}, false
	if inUse != nil {
		if u, err := inUse(ctx); err != nil {
			m.log.Warn("cannot ask Docker which volumes are in use; trusting the mount table", "error", err)
		} else {
			users, fromDocker = u, true
		}
	}
	known := map[string]bool{}
	for _, r := range recs {
		known[r.Name] = true
		v := &vol{rec: r, refs: map[string]int{}}
		if r.Options.Backend != BackendKernel { // a kernel volume's directory is its mountpoint
			if err := m.ensureDir(v); err != nil {
				m.log.Error("volume directory", "volume", r.Name, "error", err)
			}
		}
		// Without Docker's word nothing uses a volume: dockerd is down, so
		// its containers are too, and it mounts again when it restores them.
		v.anon = users[r.Name]
		if stale[r.Name] && fromDocker && v.anon == 0 {
			m.log.Info("stale mount of a volume no container uses", "volume", r.Name)
		}
		if r.Options.Backend == BackendKernel {
			// After a reboot: mounted again before dockerd restores the
			// containers that use it.
			if err := m.attachKernel(ctx, v); err != nil {
				m.log.Error("mount a kernel backend volume again", "volume", r.Name, "error", err)
			}
		} else if p := live[r.Name]; p != nil {
			v.server = p
			m.log.Info("volume server still serving; adopted it", "volume", r.Name, "pid", p.pid, "version", p.health.Version, "mounts", v.anon)
			if fromDocker && v.anon == 0 {
				// No container uses it: stop it, as its last unmount would.
				if err := m.unmountFUSELocked(v); err != nil {
					m.log.Warn("stop the server of a volume no container uses", "volume", r.Name, "error", err)
				}
			}
		} else if v.anon > 0 && r.Options.Limited() {
			if err := m.mountFUSELocked(v); err != nil {
				m.log.Error("remount volume in use", "volume", r.Name, "error", err)
			}
		}
		m.vols[r.Name] = v
	}
	// Directories with no record: a create that crashed before its record
	// was written. Nothing was ever handed out from them.
	ents, err := os.ReadDir(filepath.Join(m.root, "volumes"))
	if err != nil {
		return fmt.Errorf("state root: %w", err)
	}
	for _, e := range ents {
		if !known[e.Name()] {
			m.log.Warn("removing volume directory with no record", "volume", e.Name())
			if err := os.RemoveAll(filepath.Join(m.root, "volumes", e.Name())); err != nil {
				return fmt.Errorf("state root: %w", err)
			}
		}
	}
	// Images with no record: a kernel volume's create that crashed before
	// its record was written.
	imgs, err := os.ReadDir(filepath.Join(m.root, "images"))
	if err != nil {
		return fmt.Errorf("state root: %w", err)
	}
	for _, e := range imgs {
		name, ok := strings.CutSuffix(e.Name(), ".img")
		if ok && !known[name] && ValidateName(name) == nil && m.loop != nil {
			m.log.Warn("removing volume image with no record", "volume", name)
			if err := m.loop.Remove(filepath.Join(m.root, "images", e.Name()), m.mountDir(name)); err != nil {
				return fmt.Errorf("state root: %w", err)
			}
			os.Remove(m.mountDir(name))
		}
	}
	return nil
}

// detachStale lazily unmounts every mount under Root/mnt (FUSE servers of
// a previous process) and returns the volume names that had one.
func (m *Manager) detachStale(serving func(name string) bool) (map[string]bool, error) {
	mnts, err := mountsUnder(filepath.Join(m.root, "mnt"))
	if err != nil {
		return nil, err
	}
	stale := map[string]bool{}
	for _, p := range mnts {
		if serving(filepath.Base(p)) {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("detach stale mount %s: %w", p, err)
		}
		m.log.Info("detached stale mount", "path", p)
		stale[filepath.Base(p)] = true
	}
	return stale, nil
}

// mountsUnder lists the mount points strictly under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	var out []string
	for _, mi := range infos {
		if mi.Mountpoint != dir {
			out = append(out, mi.Mountpoint)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, nil
}
