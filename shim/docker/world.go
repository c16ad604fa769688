package docker

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
)

// What dockerd holds for this state root, and its events: what reconcile,
// the janitor and the volume plugin ask of Docker.

// VolumesInUse counts, per volume of the given driver, the running
// containers that mount it. The volume plugin rebuilds its mount counts
// from it at start.
func (d *Docker) VolumesInUse(ctx context.Context, driver string) (map[string]int, error) {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list running containers: %w", err)
	}
	out := map[string]int{}
	for _, c := range res.Items {
		for _, m := range c.Mounts {
			if m.Type == mount.TypeVolume && m.Driver == driver {
				out[m.Name]++
			}
		}
	}
	return out, nil
}

// VolumesReferenced returns the volumes of a driver that a container, in
// any state, refers to.
func (d *Docker) VolumesReferenced(ctx context.Context, driver string) (map[string]bool, error) {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := map[string]bool{}
	for _, c := range res.Items {
		for _, m := range c.Mounts {
			if m.Type == mount.TypeVolume && m.Driver == driver {
				out[m.Name] = true
			}
		}
	}
	return out, nil
}

// VolumeNames lists the volumes of a driver, by name.
func (d *Docker) VolumeNames(ctx context.Context, driver string) ([]string, error) {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	res, err := d.cli.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("driver", driver)})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, v := range res.Items {
		names = append(names, v.Name)
	}
	return names, nil
}

// ContainerState is what ContainerStates tells of one container.
type ContainerState struct {
	State    string // "running", "paused", "exited", ...
	Sandbox  string // its sandbox ID (label)
	Instance string // the ol-shim process that made it (label)
}

// ContainerStates returns every container of this state root, by ID.
func (d *Docker) ContainerStates(ctx context.Context) (map[string]ContainerState, error) {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", api.LabelRoot+"="+d.cfg.RootID)})
	if err != nil {
		return nil, err
	}
	out := make(map[string]ContainerState, len(res.Items))
	for _, c := range res.Items {
		if !d.ours(ctx, c.ImageID) {
			continue
		}
		out[c.ID] = ContainerState{State: string(c.State), Sandbox: c.Labels[api.LabelSandbox], Instance: c.Labels[api.LabelInstance]}
	}
	return out, nil
}

// WatchDeaths calls died with the ID of each of this root's containers that
// dies, until ctx ends. Each time it (re)subscribes to dockerd's events,
// it first calls resync, which catches up on what happened while it was
// not listening (a dockerd restart kills every container). While dockerd
// is away it retries every second.
func (d *Docker) WatchDeaths(ctx context.Context, resync func(context.Context) error, died func(containerID string)) {
	log := d.log
	connected := true
	for ctx.Err() == nil {
		sub := d.cli.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).
			Add("type", "container").Add("event", "die").Add("label", api.LabelRoot+"="+d.cfg.RootID)})
		err := resync(ctx)
		if err == nil && !connected {
			log.Info("dockerd is back: checked the idle sandboxes")
		}
		connected = err == nil
	watch:
		for err == nil {
			select {
			case m := <-sub.Messages:
				died(m.Actor.ID)
			case err = <-sub.Err:
				break watch
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if connected {
			log.Warn("lost dockerd's events; retrying every second", "error", err)
			connected = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// RemoveVolume removes volume name through dockerd; one already gone is
// removed.
func (d *Docker) RemoveVolume(ctx context.Context, name string) error {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	if _, err := d.cli.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}
