package daemon

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
)

// VolumeCount returns the number of the volume plugin's volumes.
func (d *Daemon) VolumeCount() int { return len(d.vols.List()) }

// volumes lists the plugin's volumes as the API shows them, with the
// usage of mounted volumes that have a quota.
func (d *Daemon) volumes() []api.VolumeStatus {
	list := d.vols.List()
	out := make([]api.VolumeStatus, 0, len(list))
	for _, v := range list {
		if v.Options.Limited() && (v.Mounts > 0 || v.Server != nil) {
			if st, err := d.vols.Get(v.Name); err == nil {
				v = st
			}
		}
		out = append(out, d.apiVolume(v))
	}
	return out
}

func (d *Daemon) apiVolume(v scratch.Status) api.VolumeStatus {
	o := v.Options
	vs := api.VolumeStatus{Name: v.Name, Mountpoint: v.Mountpoint, CreatedAt: v.CreatedAt, Mounts: v.Mounts,
		BytesUsed: v.BytesUsed, InodesUsed: v.InodesUsed,
		Options: api.VolumeOptions{Size: o.Size, Inodes: o.InodeLimit(), UID: o.UID, GID: o.GID, Mode: o.Mode, Backend: o.Backend}}
	if s := v.Server; s != nil {
		vs.Server = &api.VolumeServer{PID: s.PID, Version: s.Version, Started: s.Started, InProcess: s.InProcess, Alive: s.Alive,
			Old: !s.InProcess && s.Version != d.cfg.Version, Passthrough: string(s.Passthrough)}
	}
	return vs
}

// grow raises a volume's limits (POST /v1/volumes/{name}/grow).
func (d *Daemon) grow(ctx context.Context, name string, size, inodes int64) (api.VolumeStatus, error) {
	st, err := d.vols.Grow(ctx, name, size, inodes)
	if err != nil {
		return api.VolumeStatus{}, err
	}
	return d.apiVolume(st), nil
}

// CheckStatic refuses a sandboxes' init that needs a dynamic loader: it
// runs inside images that may have none (FROM scratch, musl), where every
// sandbox would die at its start with nothing more said than that its
// container has no process.
func CheckStatic(init string) error {
	f, err := elf.Open(init)
	if err != nil {
		return fmt.Errorf("sandboxes' init %s: %w", init, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := "a dynamic loader"
		if b, err := io.ReadAll(io.LimitReader(p.Open(), 256)); err == nil {
			interp = strings.TrimRight(string(b), "\x00")
		}
		return fmt.Errorf("sandboxes' init %s is dynamically linked: it needs %s, which a sandbox's image may not have; build it static (CGO_ENABLED=0, as make build does) or put a static %s next to the daemon", init, interp, InitBinaryName)
	}
	return nil
}

// FindInit finds the sandboxes' init: ol-shim-init next to this program
// (symlinks resolved), or in ../lib/ol-shim from it; else this program
// itself, which has an init command too.
func FindInit() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary for the sandboxes' init: %w", err)
	}
	if real, err := filepath.EvalSymlinks(self); err == nil {
		self = real
	}
	dir := filepath.Dir(self)
	for _, p := range []string{filepath.Join(dir, InitBinaryName), filepath.Join(dir, "..", "lib", "ol-shim", InitBinaryName)} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return self, nil
}
