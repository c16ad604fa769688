package docker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
)

// Reasons Reconcile gives for removing a container.
const (
	RemovedNotPaused   = "not paused"   // running or stopped at crash time: maybe mid-use
	RemovedUnknownPool = "unknown pool" // no configured pool by that name
	RemovedStaleSpec   = "stale spec"   // made from another version of the pool's spec
	RemovedStaleImage  = "stale image"  // the image tag now names another image
	RemovedBadLabels   = "bad labels"   // labels that do not name a valid sandbox
	RemovedNoRoom      = "no room"      // the pool is full or closed
	RemovedScratchLost = "scratch lost" // its quota'd scratch was served by the previous process
	RemovedOrphanDir   = "orphan scratch"
)

// ScratchLister is a ScratchMaker that can list what it holds.
type ScratchLister interface {
	sandboxset.ScratchMaker
	List(ctx context.Context) ([]string, error)
}

// ReconcilePool is a configured pool that Reconcile may adopt sandboxes into.
type ReconcilePool struct {
	Set     *sandboxset.Set
	Backend *Backend
	// Wrap, if set, wraps each adopted sandbox as the pool's own creates
	// are wrapped (e.g. to charge it to the memory budget).
	Wrap func(sandboxset.Sandbox) sandboxset.Sandbox
	// ScratchLost, if set, reports whether a sandbox's scratch is gone: a
	// quota'd volume whose FUSE server stopped with the previous process.
	// Such a sandbox is removed instead of adopted.
	ScratchLost func(sandboxID string) bool
}

// reconcileWorkers bounds the removals Reconcile runs at once.
const reconcileWorkers = 8

// Reconcile makes Docker agree with the pools after a start: of the
// containers labelled with this instance's root ID, the paused ones whose
// pool is configured with the same spec (and image) are adopted as idle
// sandboxes; every other one is removed with its scratch directory. Scratch
// directories with no adopted sandbox are removed too. Afterwards nothing
// labelled with this root exists that the pools do not hold.
//
// It must run before the pools create sandboxes (make the Sets with MinIdle
// 0 and Warm them afterwards): a scratch directory made meanwhile would look
// orphaned.
func Reconcile(ctx context.Context, d *Docker, scratch ScratchLister, pools map[string]ReconcilePool) (registry.ReconcileReport, error) {
	rep := registry.ReconcileReport{Adopted: map[string]int{}, Removed: map[string]int{}}
	lctx, cancel := d.callCtx(ctx)
	list, err := d.cli.ContainerList(lctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", api.LabelRoot+"="+d.cfg.RootID),
	})
	cancel()
	if err != nil {
		return rep, fmt.Errorf("reconcile: list containers: %w", err)
	}
	imageIDs := map[string]string{} // pool -> image ID now
	for name, p := range pools {
		ictx, cancel := d.callCtx(ctx)
		img, err := d.cli.ImageInspect(ictx, p.Backend.spec.Image)
		cancel()
		if err == nil {
			imageIDs[name] = img.ID
		} else if !cerrdefs.IsNotFound(err) {
			return rep, fmt.Errorf("reconcile: pool %q: inspect image %q: %w", name, p.Backend.spec.Image, err)
		}
	}

	type victim struct {
		c      container.Summary
		reason string
	}
	var victims []victim
	keep := map[string]bool{} // sandbox IDs whose scratch stays
	for _, c := range list.Items {
		if !d.ours(ctx, c.ImageID) {
			continue
		}
		sbID, poolName := c.Labels[api.LabelSandbox], c.Labels[api.LabelPool]
		p := pools[poolName]
		reason := removalReason(c.Labels, string(c.State), c.ImageID, pools, imageIDs)
		if reason == "" {
			var sb sandboxset.Sandbox = d.Attach(sbID, c.ID, scratchSource(c))
			if p.Wrap != nil {
				sb = p.Wrap(sb)
			}
			if err := p.Set.Adopt(sb); err != nil {
				d.log.Warn("reconcile: cannot adopt", "sandbox", sbID, "pool", poolName, "error", err)
				reason = RemovedNoRoom
			} else {
				rep.Adopted[poolName]++
				rep.AdoptedSandboxes = append(rep.AdoptedSandboxes, sbID)
				keep[sbID] = true
				continue
			}
		}
		victims = append(victims, victim{c, reason})
	}

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, reconcileWorkers)
	)
	for _, v := range victims {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sbID := v.c.Labels[api.LabelSandbox]
			err := d.Attach(sbID, v.c.ID, "").remove(ctx)
			if id, ok := scratchOfLabels(v.c.Labels); err == nil && ok {
				err = scratch.Remove(ctx, id)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("reconcile: %w", err))
				return
			}
			rep.Removed[v.reason]++
			d.log.Info("reconcile: removed container", "container", v.c.ID, "sandbox", sbID, "reason", v.reason)
		})
	}
	wg.Wait()

	dirs, err := scratch.List(ctx)
	if err != nil {
		return rep, errors.Join(append(errs, fmt.Errorf("reconcile: %w", err))...)
	}
	for _, id := range dirs {
		if keep[id] {
			continue
		}
		if err := scratch.Remove(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("reconcile: %w", err))
			continue
		}
		rep.Removed[RemovedOrphanDir]++
	}
	return rep, errors.Join(errs...)
}

// removalReason says why reconcile removes a container with these labels,
// state and image, or "" if it adopts it into its pool. Labels come from
// Docker and may be anything: a container is adopted only if every one of
// them checks out.
func removalReason(labels map[string]string, state, imageID string, pools map[string]ReconcilePool, imageIDs map[string]string) string {
	poolName := labels[api.LabelPool]
	p, ok := pools[poolName]
	switch {
	case sandboxset.ValidateSandboxID(labels[api.LabelSandbox]) != nil:
		return RemovedBadLabels
	case state != string(container.StatePaused):
		return RemovedNotPaused
	case !ok:
		return RemovedUnknownPool
	case labels[api.LabelSpec] != p.Backend.hash:
		return RemovedStaleSpec
	case imageID == "" || imageID != imageIDs[poolName]:
		return RemovedStaleImage
	case p.ScratchLost != nil && p.ScratchLost(labels[api.LabelSandbox]):
		return RemovedScratchLost
	}
	return ""
}

// scratchOfLabels returns the scratch (volume or directory) name of a
// sandbox container, from its labels, and false if the label is not a valid
// sandbox ID: a name that could reach out of the scratch root is never
// removed.
func scratchOfLabels(labels map[string]string) (string, bool) {
	id := labels[api.LabelSandbox]
	return id, sandboxset.ValidateSandboxID(id) == nil
}

// scratchSource returns the host path mounted at /host in c.
func scratchSource(c container.Summary) string {
	for _, m := range c.Mounts {
		if m.Destination == ScratchTarget {
			return m.Source
		}
	}
	return ""
}
