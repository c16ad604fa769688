package scratch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/scratch/loopfs"
)

// Errors of the Manager, each of an errdefs class; messages name the
// volume and the cause.
var (
	ErrNotFound = errdefs.ErrNotFound.WithMessage("no such volume")
	ErrExists   = errdefs.ErrConflict.WithMessage("volume exists with other options")
	ErrInUse    = errdefs.ErrFailedPrecondition.WithMessage("volume in use")
)

// DefaultRoot is the default state root.
const DefaultRoot = "/var/lib/ol-shim"

// Config configures a Manager.
type Config struct {
	// Root is the state root; volumes live under Root/volumes, FUSE
	// mountpoints under Root/mnt, the store at Root/volumes.db.
	Root string
	// InUse, if set, reports how many running containers use each volume
	// (from Docker). Start uses it to rebuild mount counts.
	InUse func(ctx context.Context) (map[string]int, error)
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// ServerBinary, if set, is the ol-shim binary: each quota'd volume is
	// then served by a process of its own ("volume-server"), which outlives
	// the Manager (see ServeVolume). Empty: served in this process, and
	// unmounted at Close.
	ServerBinary string
	// Backend is the backend of limited volumes that do not name one:
	// BackendKernel, BackendFUSE, or BackendAuto (the default: kernel
	// where this host can make loop-backed ext4 volumes, FUSE elsewhere).
	// BackendKernel fails Open where the host cannot.
	Backend string
}

// Manager makes, tracks, mounts and removes volumes under a state root. It
// is safe for concurrent use.
type Manager struct {
	root         string
	store        *store
	log          *slog.Logger
	serverBinary string        // volume servers run as processes of this binary; empty: in this process
	stopWatch    chan struct{} // closed at Close: ends watchServers

	loop          *loopfs.Manager // the kernel backend; nil where this host has none
	kernelErr     error           // why loop is nil
	backend       string          // default backend of limited volumes: BackendKernel or BackendFUSE
	backendReason string          // why that one

	mu   sync.Mutex      // taken before any volume's mu, never after
	vols map[string]*vol // guarded by mu
	// creating: kernel volumes whose file system is being made, outside
	// mu (mkfs and mount); closed when done. Guarded by mu.
	creating map[string]chan struct{}
	// pending: the bytes those creates may take of the host's disk,
	// counted by checkHostRoom until their images exist; roomMu makes a
	// create's check and its count one step.
	pending atomic.Int64
	roomMu  sync.Mutex
}

// vol is one volume. Its fields other than rec are guarded by its mu.
type vol struct {
	rec Record

	mu      sync.Mutex
	refs    map[string]int // guarded by mu: mounts by caller ID
	anon    int            // guarded by mu: mounts found at start, caller IDs unknown
	server  volumeServer   // guarded by mu: the FUSE server while mounted (limited volumes)
	removed bool           // guarded by mu
}

func (v *vol) mountsLocked() int {
	n := v.anon
	for _, c := range v.refs {
		n += c
	}
	return n
}

// Open opens the state root (creating it), detaches FUSE mounts a crash
// left behind, and rebuilds mount counts from cfg.InUse; volumes still in
// use are served again.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("state root %q: %w", cfg.Root, err)
	}
	for _, d := range []string{root, filepath.Join(root, "volumes"), filepath.Join(root, "mnt"), filepath.Join(root, "servers"), filepath.Join(root, "images")} {
		// Root's alone: what a container plants in a volume (a setuid
		// binary, say) must not be reachable by host users. An earlier
		// version made these 0711: tighten them.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state root: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("state root: %w", err)
		}
	}
	st, err := openStore(filepath.Join(root, "volumes.db"))
	if err != nil {
		return nil, err
	}
	m := &Manager{root: root, store: st, log: cfg.Logger, vols: map[string]*vol{}, serverBinary: cfg.ServerBinary, stopWatch: make(chan struct{})}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := m.pickDefault(ctx, cfg.Backend); err != nil {
		st.close()
		return nil, err
	}
	if err := m.recover(ctx, cfg.InUse); err != nil {
		st.close()
		return nil, err
	}
	if m.serverBinary != "" {
		go m.watchServers(m.stopWatch)
	}
	return m, nil
}

// pickDefault decides the default backend of limited volumes, probing the
// kernel backend for real.
func (m *Manager) pickDefault(ctx context.Context, want string) error {
	if want == "" {
		want = BackendAuto
	}
	switch want {
	case BackendFUSE:
		m.backend, m.backendReason = BackendFUSE, "asked for (scratch backend fuse)"
		// Volumes made earlier with the kernel backend are still served.
		m.kernelErr = m.probeKernel(ctx)
		return nil
	case BackendKernel, BackendAuto:
	default:
		return fmt.Errorf("scratch backend %q: %w: want auto, kernel or fuse", want, ErrInvalid)
	}
	m.kernelErr = m.probeKernel(ctx)
	switch {
	case m.kernelErr == nil:
		m.backend, m.backendReason = BackendKernel, "loop devices and ext4 work here: an ext4 file system per volume, enforced by the kernel"
		if want == BackendAuto {
			m.backendReason = "auto: " + m.backendReason
		}
	case want == BackendKernel:
		return fmt.Errorf("scratch backend kernel: this host cannot make loop-backed ext4 volumes: %w", m.kernelErr)
	default:
		m.backend, m.backendReason = BackendFUSE, "auto: the kernel backend cannot work here: "+m.kernelErr.Error()
	}
	m.log.Info("scratch backend", "backend", m.backend, "reason", m.backendReason)
	return nil
}

// Backend returns the default backend of limited volumes and why.
func (m *Manager) Backend() (backend, reason string) { return m.backend, m.backendReason }

// Close detaches every FUSE mount and closes the store. It does not wait
// for the FUSE servers: a container (even a paused one) may still hold a
// volume, and its view goes stale when this process exits; the next Open
// detaches what is left and serves the volumes Docker still uses again.
func (m *Manager) Close() error {
	close(m.stopWatch)
	m.mu.Lock()
	vols := slices.Collect(maps.Values(m.vols))
	m.mu.Unlock()
	var errs []error
	for _, v := range vols {
		v.mu.Lock()
		if _, ok := v.server.(*inProcess); ok {
			if err := unix.Unmount(m.mountDir(v.rec.Name), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("volume %q: detach: %w", v.rec.Name, err))
			}
			v.server = nil
		}
		// A server in a process of its own keeps serving: the next Open
		// finds it again.
		v.mu.Unlock()
	}
	errs = append(errs, m.store.close())
	return errors.Join(errs...)
}

// Root returns the state root.
func (m *Manager) Root() string { return m.root }

func (m *Manager) dataDir(name string) string  { return filepath.Join(m.root, "volumes", name) }
func (m *Manager) mountDir(name string) string { return filepath.Join(m.root, "mnt", name) }

// Serving reports whether volume name is a quota'd volume whose FUSE
// server serves it now.
func (m *Manager) Serving(name string) bool {
	v, err := m.get(name)
	if err != nil {
		return false
	}
	return backendOf(v).serving(m, v)
}

// Path returns where volume name is (or will be, once mounted) on the host.
func (m *Manager) Path(name string) (string, error) {
	v, err := m.get(name)
	if err != nil {
		return "", err
	}
	return m.volPath(v), nil
}

// volPath is where v is on the host.
func (m *Manager) volPath(v *vol) string { return backendOf(v).path(m, v) }

func (m *Manager) get(name string) (*vol, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vols[name]
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	return v, nil
}

// Create makes a volume. Creating one that exists succeeds if opts are
// empty or the same (Docker creates named volumes it does not know yet).
func (m *Manager) Create(name string, opts map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	o, err := ParseOptions(opts)
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if v, ok := m.vols[name]; ok {
			same := o
			if same.Backend == "" {
				same.Backend = v.rec.Options.Backend
			}
			if len(opts) == 0 || v.rec.Options == same {
				return nil
			}
			return fmt.Errorf("volume %q: %w (has %s, asked for %s)", name, ErrExists, v.rec.Options, o)
		}
		busy, ok := m.creating[name]
		if !ok {
			break
		}
		// The same name's create is making its file system: its outcome
		// decides this one's.
		m.mu.Unlock()
		<-busy
		m.mu.Lock()
	}
	if err := m.pickBackend(&o); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	v := &vol{rec: Record{Name: name, Options: o, CreatedAt: time.Now().UTC()}, refs: map[string]int{}}
	be := backendOf(v)
	if be.slowMake() {
		// A kernel volume's mkfs and mount (about 20 ms) are made
		// outside m.mu: other volumes' calls go on meanwhile; one for
		// this name waits (it is not in m.vols until made).
		done := make(chan struct{})
		if m.creating == nil {
			m.creating = map[string]chan struct{}{}
		}
		m.creating[name] = done
		m.mu.Unlock()
		err := be.make(context.Background(), m, v)
		m.mu.Lock()
		delete(m.creating, name)
		close(done)
		if err != nil {
			return err
		}
	} else if err := be.make(context.Background(), m, v); err != nil {
		return err
	}
	if err := m.store.put(v.rec); err != nil {
		_ = be.drop(m, v)
		_ = os.RemoveAll(m.dataDir(name))
		return fmt.Errorf("volume %q: record: %w", name, err)
	}
	m.vols[name] = v
	return nil
}

// ensureDir makes the volume's directory (and mountpoint) with its owner
// and mode, refusing anything there that is not a plain directory.
func (m *Manager) ensureDir(v *vol) error {
	o := v.rec.Options
	dirs := []string{m.dataDir(v.rec.Name)}
	if o.Limited() {
		dirs = append(dirs, m.mountDir(v.rec.Name))
	}
	for i, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("volume %q: %w", v.rec.Name, err)
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.rec.Name, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("volume %q: %s is not a directory", v.rec.Name, d)
		}
		if i > 0 {
			continue // the mountpoint keeps 0700; the mount shows the volume's own root
		}
		if err := os.Lchown(d, o.UID, o.GID); err != nil {
			return fmt.Errorf("volume %q: %w", v.rec.Name, err)
		}
		if err := os.Chmod(d, os.FileMode(o.Mode)); err != nil {
			return fmt.Errorf("volume %q: %w", v.rec.Name, err)
		}
	}
	return nil
}

// Remove deletes a volume and its data; refused while it is mounted.
func (m *Manager) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	m.mu.Lock()
	v, ok := m.vols[name]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	v.mu.Lock()
	if n := v.mountsLocked(); n > 0 {
		v.mu.Unlock()
		m.mu.Unlock()
		return fmt.Errorf("volume %q: %w: mounted %d times", name, ErrInUse, n)
	}
	if err := backendOf(v).drop(m, v); err != nil {
		v.mu.Unlock()
		m.mu.Unlock()
		return err
	}
	v.removed = true
	v.mu.Unlock()
	delete(m.vols, name)
	err := m.store.delete(name)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("volume %q: delete record: %w", name, err)
	}
	if err := os.RemoveAll(m.dataDir(name)); err != nil {
		return fmt.Errorf("volume %q: remove data: %w", name, err)
	}
	if err := os.Remove(m.mountDir(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("volume %q: remove mountpoint: %w", name, err)
	}
	os.Remove(m.serverFile(name, ".log")) // its server's, if it had one
	return nil
}

// Mount makes the volume available for caller id and returns its path.
// The first mount of a limited volume starts its FUSE server. The same id
// may mount more than once; each needs an Unmount. A failed Mount counts
// nothing.
func (m *Manager) Mount(name, id string) (string, error) {
	v, err := m.get(name)
	if err != nil {
		return "", err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.removed {
		return "", fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	be := backendOf(v)
	if err := be.mount(context.Background(), m, v); err != nil {
		return "", err
	}
	v.refs[id]++
	return be.path(m, v), nil
}

// Unmount releases one Mount by caller id; the last one stops the FUSE
// server. An id not known (mounts found at start have none) releases one
// of those.
func (m *Manager) Unmount(name, id string) error {
	v, err := m.get(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.refs[id] > 0:
		if v.refs[id]--; v.refs[id] == 0 {
			delete(v.refs, id)
		}
	case v.anon > 0:
		v.anon--
	default:
		return fmt.Errorf("volume %q: not mounted by %q", name, id)
	}
	if v.mountsLocked() == 0 {
		return backendOf(v).unmount(m, v)
	}
	return nil
}

// DropAnonymous forgets the mounts counted at start (whose callers are not
// known) of every volume that referenced reports no container refers to
// any more, and unmounts a volume nothing else mounts. Such a count is left
// when a container was being removed as the previous process died: dockerd
// sent its Unmount to the dead process. It returns the volumes it released.
func (m *Manager) DropAnonymous(referenced func(name string) bool) []string {
	m.mu.Lock()
	vols := slices.Collect(maps.Values(m.vols))
	m.mu.Unlock()
	var released []string
	for _, v := range vols {
		v.mu.Lock()
		if v.anon > 0 && !v.removed && !referenced(v.rec.Name) {
			v.anon = 0
			released = append(released, v.rec.Name)
			if v.mountsLocked() == 0 {
				if err := backendOf(v).unmount(m, v); err != nil {
					m.log.Warn("unmount a volume no container refers to", "volume", v.rec.Name, "error", err)
				}
			}
		}
		v.mu.Unlock()
	}
	return released
}

func (m *Manager) mountFUSELocked(v *vol) error {
	o := v.rec.Options
	if fi, err := os.Lstat(m.mountDir(v.rec.Name)); err != nil || !fi.IsDir() {
		return fmt.Errorf("volume %q: mountpoint %s is not a directory", v.rec.Name, m.mountDir(v.rec.Name))
	}
	if m.serverBinary != "" {
		srv, err := m.startServerLocked(v)
		if err != nil {
			return err
		}
		v.server = srv
		return nil
	}
	q, err := NewQuota(m.dataDir(v.rec.Name), o.Size, o.InodeLimit())
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.rec.Name, err)
	}
	srv, err := MountQuota(m.dataDir(v.rec.Name), m.mountDir(v.rec.Name), q, v.rec.Name, o.Passthrough, o.NoExec())
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.rec.Name, err)
	}
	v.server = &inProcess{srv: srv, q: q, started: time.Now()}
	return nil
}

// serving reports whether s serves its volume now.
func serving(s volumeServer) bool {
	if p, ok := s.(*process); ok {
		return p.alive()
	}
	return s != nil
}

// unmountWait bounds how long an unmount waits for its FUSE server to
// stop: a process outside Docker's view may still hold the file system.
const unmountWait = 5 * time.Second

func (m *Manager) unmountFUSELocked(v *vol) error {
	srv := v.server
	v.server = nil
	if p, ok := srv.(*process); ok && !p.alive() {
		return nil // died; its mount was detached then
	}
	return srv.unmount(m, v.rec.Name)
}
