package docker

import (
	"context"
	"fmt"
	"maps"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
)

// VolumeScratch makes each sandbox's scratch directory a volume of
// ol-shim's own volume driver, created and removed through Docker so that
// Docker tracks it like any volume: `docker volume ls` shows it, labelled
// with this instance's root and the sandbox. A volume with a size or inode
// limit has that quota, enforced by the volume plugin's backend (the
// kernel's ext4 on a loop device, or FUSE; see package scratch).
type VolumeScratch struct {
	d *Docker
	// Options are the volume options of every sandbox's scratch (size,
	// inodes, uid, gid, mode).
	Options map[string]string
	// Path maps a volume name to its host path (the volume manager's
	// Path); if nil, the Mountpoint Docker reports is used.
	Path func(name string) (string, error)
}

var _ ScratchLister = (*VolumeScratch)(nil)

// VolumeScratch returns a ScratchMaker whose scratch directories are
// volumes of the driver configured as DockerConfig.VolumeDriver.
func (d *Docker) VolumeScratch(opts map[string]string, path func(string) (string, error)) (*VolumeScratch, error) {
	if d.cfg.VolumeDriver == "" {
		return nil, fmt.Errorf("volume scratch: no volume driver configured")
	}
	o := maps.Clone(opts)
	if o == nil {
		o = map[string]string{}
	}
	o[scratch.OptSandbox] = "true"
	return &VolumeScratch{d: d, Options: o, Path: path}, nil
}

// Make creates volume id and returns its host path.
func (v *VolumeScratch) Make(ctx context.Context, id string) (string, error) {
	ctx, cancel := v.d.callCtx(ctx)
	defer cancel()
	res, err := v.d.cli.VolumeCreate(ctx, client.VolumeCreateOptions{
		Name:       id,
		Driver:     v.d.cfg.VolumeDriver,
		DriverOpts: v.Options,
		Labels:     map[string]string{api.LabelManaged: "true", api.LabelRoot: v.d.cfg.RootID, api.LabelSandbox: id, api.LabelInstance: v.d.instance},
	})
	if err != nil {
		return "", fmt.Errorf("create scratch volume %s (driver %s): %w", id, v.d.cfg.VolumeDriver, err)
	}
	if v.Path != nil {
		return v.Path(id)
	}
	return res.Volume.Mountpoint, nil
}

// Remove removes volume id through Docker; one already gone is removed.
func (v *VolumeScratch) Remove(ctx context.Context, id string) error {
	if err := v.d.RemoveVolume(ctx, id); err != nil {
		return fmt.Errorf("scratch: %w", err)
	}
	return nil
}

// List returns the scratch volumes labelled with this instance's root.
func (v *VolumeScratch) List(ctx context.Context) ([]string, error) {
	vols, err := v.ListMade(ctx)
	out := make([]string, 0, len(vols))
	for name := range vols {
		out = append(out, name)
	}
	return out, err
}

// ListMade returns the scratch volumes labelled with this root, with the
// api.LabelInstance of the process that made each.
func (v *VolumeScratch) ListMade(ctx context.Context) (map[string]string, error) {
	ctx, cancel := v.d.callCtx(ctx)
	defer cancel()
	res, err := v.d.cli.VolumeList(ctx, client.VolumeListOptions{
		Filters: client.Filters{}.Add("label", api.LabelRoot+"="+v.d.cfg.RootID).Add("driver", v.d.cfg.VolumeDriver),
	})
	if err != nil {
		return nil, fmt.Errorf("list scratch volumes: %w", err)
	}
	out := map[string]string{}
	for _, vol := range res.Items {
		out[vol.Name] = vol.Labels[api.LabelInstance]
	}
	return out, nil
}
