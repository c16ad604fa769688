package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Provider serves a registry's pools from dockerd. A pool's backend is a
// Backend of one Docker connection; its sandboxes' scratch is a volume of
// ol-shim's own volume driver (with its quotas) when the connection names
// one, plain directories under the state root otherwise. It is also the
// pools' janitor: the one place that removes what no pool holds, at start
// (Reconcile), while serving (Watch) and at a stop that destroys all
// (RemoveAll).
type Provider struct {
	d    *Docker
	vols *scratch.Manager // nil: bind-mounted directories
	dirs sandboxset.DirScratch
	log  *slog.Logger

	mu      sync.Mutex
	adopted map[string]bool // guarded by mu: sandbox IDs adopted at the last Reconcile
}

var (
	_ registry.Provider       = (*Provider)(nil)
	_ registry.Runner         = (*Provider)(nil)
	_ registry.Janitor        = (*Provider)(nil)
	_ registry.ImageCommander = (*Backend)(nil)
)

// NewProvider returns the provider of d's sandboxes. vols, if set, is the
// volume manager behind d's volume driver (DockerConfig.VolumeDriver);
// without it scratch directories are made under root/scratch.
func NewProvider(d *Docker, root string, vols *scratch.Manager) (*Provider, error) {
	if (vols != nil) != (d.cfg.VolumeDriver != "") {
		return nil, errors.New("docker provider: a volume manager goes with a volume driver, and only with one")
	}
	p := &Provider{d: d, vols: vols, log: d.log, adopted: map[string]bool{}}
	if vols == nil {
		dir := filepath.Join(root, "scratch")
		// Root's alone, as the volumes' directories are (see scratch.Open).
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("scratch root: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("scratch root: %w", err)
		}
		p.dirs = sandboxset.DirScratch{Root: dir}
	}
	return p, nil
}

// Pool returns the backend of pool name and the maker of its scratch.
func (p *Provider) Pool(name string, pc spec.PoolConfig) (sandboxset.Backend, sandboxset.ScratchMaker, error) {
	b, err := p.d.Backend(name, pc.Spec())
	if err != nil {
		return nil, nil, err
	}
	// A pool that runs as a numeric user gets a /host it owns: it could
	// not write a root-owned one.
	uid, gid, owned := numericUser(pc.User)
	if p.vols == nil {
		dirs := p.dirs
		if owned {
			dirs.UID, dirs.GID = int(uid), int(gid)
		}
		return b, dirs, nil
	}
	opts := scratch.QuotaOptions(int64(pc.ScratchSize), pc.ScratchInodes, pc.ScratchExec)
	if owned {
		opts[scratch.OptUID] = strconv.FormatUint(uint64(uid), 10)
		opts[scratch.OptGID] = strconv.FormatUint(uint64(gid), 10)
	}
	vs, err := p.d.VolumeScratch(opts, p.vols.Path)
	if err != nil {
		return nil, nil, err
	}
	return b, vs, nil
}

// numericUser parses a pool's user as "UID:GID", two numbers other than
// root's; false for anything else (a name, or root).
func numericUser(u string) (uid, gid uint32, ok bool) {
	uid, gid, err := spec.ParseNumericUser(u)
	return uid, gid, err == nil
}

// Describe returns sb's container ID and scratch directory.
func (p *Provider) Describe(sb sandboxset.Sandbox) (string, string) {
	if ds, ok := AsDocker(sb); ok {
		return ds.ContainerID(), ds.ScratchDir()
	}
	return "", ""
}

// Session connects to sb's agent, or to docker exec where it does not
// answer.
func (p *Provider) Session(ctx context.Context, sb sandboxset.Sandbox) (io.ReadWriteCloser, string, error) {
	ds, ok := AsDocker(sb)
	if !ok {
		panic(fmt.Sprintf("docker provider: run in sandbox %s, not one of its own", sb.ID()))
	}
	return ds.Session(ctx)
}

// scratch returns what removes any sandbox's scratch: its volume, or its
// directory.
func (p *Provider) scratch() ScratchLister {
	if p.vols == nil {
		return p.dirs
	}
	vs, err := p.d.VolumeScratch(nil, p.vols.Path)
	if err != nil {
		panic(err) // NewProvider checked that the driver is set
	}
	return vs
}

// Reconcile adopts into the pools the paused sandboxes an earlier process
// left that fit them, and removes every other container and scratch of
// this state root (see the package function Reconcile). Sandboxes of pools
// whose scratch has a quota are adopted only if their volume's server still
// serves (it runs in a process of its own, which outlives the daemon).
func (p *Provider) Reconcile(ctx context.Context, pools map[string]registry.AdoptPool) (registry.ReconcileReport, error) {
	rp := map[string]ReconcilePool{}
	for name, ap := range pools {
		b, ok := ap.Backend.(*Backend)
		if !ok {
			panic(fmt.Sprintf("docker provider: pool %q has a backend it did not make", name))
		}
		rp[name] = ReconcilePool{Set: ap.Set, Backend: b, Wrap: ap.Wrap}
		if p.vols != nil && ap.Config.Quotad() {
			// Adopted if its volume's server outlived the previous process.
			rp[name] = ReconcilePool{Set: ap.Set, Backend: b, Wrap: ap.Wrap, ScratchLost: func(id string) bool { return !p.vols.Serving(id) }}
		}
	}
	rep, err := Reconcile(ctx, p.d, p.scratch(), rp)
	p.mu.Lock()
	p.adopted = map[string]bool{}
	for _, id := range rep.AdoptedSandboxes {
		p.adopted[id] = true
	}
	p.mu.Unlock()
	if err == nil {
		p.d.sweepCtl(rep.AdoptedSandboxes)
	}
	return rep, err
}

// When Watch sweeps orphans and tops the pools up.
const (
	orphanSweepFirst = 5 * time.Second
	orphanSweepEvery = 30 * time.Second
)

// Watch drops idle sandboxes whose containers die (dockerd's events) and,
// each time dockerd's events come back after a loss (a dockerd restart kills
// every container), those lost meanwhile; their pools refill to min_idle.
// Soon after the start and then every orphanSweepEvery, it removes orphans
// (see sweepOrphans) and tops pools up. It runs until ctx ends.
func (p *Provider) Watch(ctx context.Context, h registry.Host) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTimer(orphanSweepFirst)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.sweepOrphans(ctx, h)
				h.TopUp()
				t.Reset(orphanSweepEvery)
			}
		}
	})
	alive := func(state string) bool { return state == "running" || state == "paused" }
	containerOf := func(sb sandboxset.Sandbox) string {
		if ds, ok := AsDocker(sb); ok {
			return ds.ContainerID()
		}
		return ""
	}
	p.d.WatchDeaths(ctx, func(ctx context.Context) error {
		listed := time.Now()
		states, err := p.d.ContainerStates(ctx)
		if err != nil {
			return err
		}
		// A container missing from the list is lost only if its sandbox was
		// idle before the list was taken: one made since is not in it.
		h.DropIdle(func(sb sandboxset.Sandbox, idleSince time.Time) bool {
			c, ok := states[containerOf(sb)]
			return (ok && !alive(c.State)) || (!ok && idleSince.Before(listed))
		})
		p.removeDead(ctx, h, states)
		h.Refill() // a refill that failed while dockerd was away
		return nil
	}, func(id string) {
		h.DropIdle(func(sb sandboxset.Sandbox, _ time.Time) bool { return containerOf(sb) == id })
	})
}

// sweepOrphans removes the containers and scratch volumes of this root that
// an earlier ol-shim process made and no pool adopted (reconcile at start
// removes those it sees, but a process killed with creates in flight leaves
// them to dockerd, which may finish them after the reconcile), and those
// this process made for sandboxes no pool knows any more (a create that
// failed after dockerd made the container, as dockerd went away).
func (p *Provider) sweepOrphans(ctx context.Context, h registry.Host) {
	p.mu.Lock()
	adopted := maps.Clone(p.adopted)
	p.mu.Unlock()
	orphan := func(sandbox, instance string) bool {
		if instance != p.d.Instance() {
			return !adopted[sandbox]
		}
		return !h.Knows(sandbox)
	}
	states, err := p.d.ContainerStates(ctx)
	if err != nil {
		p.log.Debug("orphan sweep: list containers", "error", err)
		return
	}
	for id, c := range states {
		if orphan(c.Sandbox, c.Instance) {
			p.removeContainer(ctx, id, c.Sandbox, "an orphan an earlier process made")
		}
	}
	if p.vols == nil {
		return
	}
	if refs, err := p.d.VolumesReferenced(ctx, p.d.cfg.VolumeDriver); err == nil {
		if released := p.vols.DropAnonymous(func(name string) bool { return refs[name] }); len(released) > 0 {
			p.log.Info("orphan sweep: released mounts of containers removed as the previous process died", "volumes", released)
		}
	}
	vs := p.scratch().(*VolumeScratch)
	vols, err := vs.ListMade(ctx)
	if err != nil {
		p.log.Debug("orphan sweep: list volumes", "error", err)
		return
	}
	for name, instance := range vols {
		if !orphan(name, instance) {
			continue
		}
		if err := vs.Remove(ctx, name); err != nil {
			p.log.Warn("orphan sweep: remove a volume an earlier process made", "volume", name, "error", err)
			continue
		}
		p.log.Info("orphan sweep: removed a volume an earlier process made", "volume", name)
	}
	// Sandbox scratch volumes dockerd never recorded: a create cut off
	// after the plugin made the volume and before dockerd had its answer
	// (the process was killed). No container can mount one by its
	// labels, no pool knows it: remove it.
	for _, v := range p.vols.List() {
		if !v.Options.Sandbox || v.Mounts > 0 {
			continue
		}
		if _, labelled := vols[v.Name]; labelled || h.Knows(v.Name) || time.Since(v.CreatedAt) < orphanSweepFirst {
			continue
		}
		if err := vs.Remove(ctx, v.Name); err != nil {
			p.log.Warn("orphan sweep: remove a scratch volume dockerd never recorded", "volume", v.Name, "error", err)
			continue
		}
		p.log.Info("orphan sweep: removed a scratch volume dockerd never recorded", "volume", v.Name)
	}
}

// removeDead removes the stopped containers of this root that no lease
// holds, with their scratch: sandboxes whose destroy failed because dockerd
// was going away as they died. A leased one is left to its holder, whose
// release reports it.
func (p *Provider) removeDead(ctx context.Context, h registry.Host, states map[string]ContainerState) {
	for id, c := range states {
		if c.State != "exited" && c.State != "dead" || h.Leased(c.Sandbox) {
			continue
		}
		p.removeContainer(ctx, id, c.Sandbox, "dead, and no pool held it")
	}
}

// RemoveAll removes every container and scratch volume labelled with this
// root that is left once the pools are closed (a destroy that failed): a
// stop that destroys all leaves nothing.
func (p *Provider) RemoveAll(ctx context.Context) error {
	states, err := p.d.ContainerStates(ctx)
	if err != nil {
		return fmt.Errorf("destroy all: list containers: %w", err)
	}
	for id, c := range states {
		p.removeContainer(ctx, id, c.Sandbox, "left after the pools closed")
	}
	vs, ok := p.scratch().(*VolumeScratch)
	if !ok {
		return nil
	}
	vols, err := vs.ListMade(ctx)
	if err != nil {
		return fmt.Errorf("destroy all: list volumes: %w", err)
	}
	var errs []error
	for name := range vols {
		errs = append(errs, vs.Remove(ctx, name))
	}
	return errors.Join(errs...)
}

// removeContainer removes a container that no pool holds, and its
// sandbox's scratch, and logs why.
func (p *Provider) removeContainer(ctx context.Context, id, sandbox, why string) {
	err := p.d.Attach(sandbox, id, "").Destroy(ctx, why)
	if _, ok := scratchOfLabels(map[string]string{api.LabelSandbox: sandbox}); err == nil && ok {
		err = p.scratch().Remove(ctx, sandbox)
	}
	if err != nil {
		p.log.Warn("remove a container no pool holds", "container", id, "sandbox", sandbox, "why", why, "error", err)
		return
	}
	p.log.Info("removed a container no pool holds", "container", id, "sandbox", sandbox, "why", why)
}
