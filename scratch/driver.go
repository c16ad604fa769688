package scratch

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// Driver serves a Manager to dockerd as the volume plugin protocol
// (docker.volumedriver/1.0). Errors cross the wire as strings; each names
// the volume and the cause.
type Driver struct {
	m   *Manager
	log *slog.Logger
}

var _ volume.Driver = (*Driver)(nil)

// NewDriver returns a Driver for m that logs each call at debug level (and
// failures at warn) to log, if not nil.
func NewDriver(m *Manager, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Driver{m: m, log: log}
}

// logged logs a call. What dockerd (or anyone who can write to the
// socket) sent is cut to a bounded prefix: a log line never grows with a
// request.
func (d *Driver) logged(call, name, id string, err error) {
	if err != nil {
		d.log.Warn("volume plugin call failed", "call", call, "volume", clip(name), "id", clip(id), "error", clip(err.Error()))
		return
	}
	d.log.Debug("volume plugin call", "call", call, "volume", clip(name), "id", clip(id))
}

// clipAt bounds what a log line or an error message repeats of its input.
const clipAt = 200

// clip cuts s to clipAt bytes, saying how much it left out.
func clip(s string) string {
	if len(s) <= clipAt {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes more)", s[:clipAt], len(s)-clipAt)
}

// Create makes a volume with options size, inodes, uid, gid and mode.
func (d *Driver) Create(r *volume.CreateRequest) error {
	err := d.m.Create(r.Name, r.Options)
	d.logged("create", r.Name, "", err)
	return err
}

// Remove deletes a volume that is not mounted.
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	err := d.m.Remove(r.Name)
	d.logged("remove", r.Name, "", err)
	return err
}

// Mount counts a mount by r.ID and returns the volume's path.
func (d *Driver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	p, err := d.m.Mount(r.Name, r.ID)
	d.logged("mount", r.Name, r.ID, err)
	if err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: p}, nil
}

// Unmount releases a mount by r.ID.
func (d *Driver) Unmount(r *volume.UnmountRequest) error {
	err := d.m.Unmount(r.Name, r.ID)
	d.logged("unmount", r.Name, r.ID, err)
	return err
}

// Path returns the volume's path.
func (d *Driver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	p, err := d.m.Path(r.Name)
	d.logged("path", r.Name, "", err)
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: p}, nil
}

// Get returns a volume with its usage and limits in Status, as `docker
// volume inspect` shows them.
func (d *Driver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	st, err := d.m.Get(r.Name)
	if errors.Is(err, ErrNotFound) {
		// dockerd asks every driver before a create: not a failure.
		d.log.Debug("volume plugin call", "call", "get", "volume", r.Name, "found", false)
	} else {
		d.logged("get", r.Name, "", err)
	}
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: wireVolume(st, true)}, nil
}

// List returns every volume.
func (d *Driver) List() (*volume.ListResponse, error) {
	var out []*volume.Volume
	for _, st := range d.m.List() {
		out = append(out, wireVolume(st, false))
	}
	return &volume.ListResponse{Volumes: out}, nil
}

// Capabilities says volumes are local to this host.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

func wireVolume(st Status, withStatus bool) *volume.Volume {
	v := &volume.Volume{Name: st.Name, Mountpoint: st.Mountpoint, CreatedAt: st.CreatedAt.Format(time.RFC3339)}
	if withStatus {
		v.Status = map[string]any{
			"mounts":      st.Mounts,
			"bytes_used":  st.BytesUsed,
			"inodes_used": st.InodesUsed,
			"size":        st.Options.Size,
			"inodes":      st.Options.Inodes,
			"uid":         st.Options.UID,
			"gid":         st.Options.GID,
			"mode":        fmt.Sprintf("%04o", st.Options.Mode),
			"passthrough": st.Options.Passthrough,
			"backend":     cmp.Or(st.Options.Backend, "none"),
		}
	}
	return v
}

// Listen makes the unix socket at path, owned by root and group, mode 0660,
// replacing a stale socket. An empty group leaves it root:root.
func Listen(path, group string) (net.Listener, error) {
	gid := 0
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if n, nerr := strconv.Atoi(group); nerr == nil {
				gid = n
			} else {
				return nil, fmt.Errorf("socket %s: group %q: %w", path, group, err)
			}
		} else if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("socket %s: group %q: gid %q: %w", path, group, g.Gid, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another process is serving it", path)
		}
		_ = os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}
