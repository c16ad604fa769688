// Package shim is the ol-shim daemon: the Docker backend for sandbox sets,
// the reconcile that runs at start, and (in time) the pool registry, the HTTP
// API and the volume plugin wiring.
//
// # Docker backend
//
// [Docker] is one connection to dockerd (github.com/moby/moby/client, which
// negotiates down to API 1.40, so Debian's dockerd 20.10 with API 1.41
// works). [Docker.Backend] binds it to one pool's [spec.PoolSpec] and returns a
// sandboxset.Backend whose sandboxes are containers: created and started
// with the pool's limits, no network by default, all capabilities dropped but
// a small default set ([DefaultCapabilities]), no-new-privileges, never
// privileged, the sandbox's scratch directory at /host, and the labels that
// let [Reconcile] find them after a restart. Every Docker call has a timeout.
//
// A pool that names no command runs ol-shim's own idle init: the static
// ol-shim binary bind-mounted read-only at [InitPath] and run as
// "ol-shim init", so images with no shell and no CMD (FROM scratch) work.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// InitPath is where the idle init binary is mounted in containers of pools
// that name no command.
const InitPath = "/.ol-shim/init"

// ScratchTarget is where a sandbox's scratch directory is mounted.
const ScratchTarget = "/host"

// DefaultCallTimeout bounds each Docker call.
const DefaultCallTimeout = 30 * time.Second

// DefaultCapabilities are the only capabilities a sandbox keeps: enough to
// run as root inside and change file ownership and user, nothing that
// reaches the host (no NET_RAW, no SYS_*, no MKNOD, no AUDIT_WRITE).
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID",
}

var (
	// ErrImageNotFound is returned when a pool's image is not present locally
	// and the pool does not allow pulling.
	// It is of class errdefs.ErrNotFound.
	ErrImageNotFound = cerrdefs.ErrNotFound.WithMessage("image not present locally")
	// ErrNotReady is returned when a new sandbox did not become ready in
	// time; the container has been removed.
	// It is of class errdefs.ErrUnavailable.
	ErrNotReady = cerrdefs.ErrUnavailable.WithMessage("sandbox not ready")
)

// DockerConfig configures a connection to dockerd.
type DockerConfig struct {
	// Host is the daemon address (unix:///var/run/docker.sock); empty
	// means DOCKER_HOST or the default.
	Host string
	// RootID labels every container this ol-shim instance creates
	// (api.LabelRoot); Reconcile touches only containers with it. Required.
	RootID string
	// InitBinary is the host path of a static ol-shim binary, mounted as
	// the idle init of pools that name no command.
	InitBinary string
	// VolumeDriver, if set, is the name dockerd knows ol-shim's volume
	// plugin by: sandboxes then get their scratch at /host as a volume of
	// it (see VolumeScratch), not as a bind mount.
	VolumeDriver string
	// CallTimeout bounds each Docker call; DefaultCallTimeout if 0.
	CallTimeout time.Duration
	// MaxCreates bounds the containers being created and started at once,
	// across pools; DefaultMaxCreates if 0. Hundreds at once (20 pools
	// warming 25 sandboxes each) swamp dockerd until its calls time out.
	MaxCreates int
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Docker is a connection to dockerd that makes sandbox containers.
type Docker struct {
	cli      *client.Client
	cfg      DockerConfig
	log      *slog.Logger
	instance string        // api.LabelInstance of what it makes
	creates  chan struct{} // a slot per create in flight (MaxCreates)
}

// DefaultMaxCreates is DockerConfig.MaxCreates if unset: twice the CPUs,
// at least 4.
var DefaultMaxCreates = max(4, 2*runtime.NumCPU())

// NewDocker connects to dockerd and negotiates the API version.
func NewDocker(ctx context.Context, cfg DockerConfig) (*Docker, error) {
	if cfg.RootID == "" || strings.ContainsAny(cfg.RootID, "=,\n") {
		return nil, fmt.Errorf("docker: root ID %q: must be non-empty, without '=', ',' or newlines", cfg.RootID)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.InitBinary != "" {
		abs, err := filepath.Abs(cfg.InitBinary)
		if err != nil {
			return nil, fmt.Errorf("docker: init binary %q: %w", cfg.InitBinary, err)
		}
		if fi, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("docker: init binary: %w", err)
		} else if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("docker: init binary %s: not an executable file", abs)
		}
		cfg.InitBinary = abs
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	if cfg.MaxCreates <= 0 {
		cfg.MaxCreates = DefaultMaxCreates
	}
	d := &Docker{cli: cli, cfg: cfg, log: cfg.Logger, instance: newInstanceID(), creates: make(chan struct{}, cfg.MaxCreates)}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	if _, err := cli.Ping(cctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker: no answer from dockerd at %s: %w", cli.DaemonHost(), err)
	}
	return d, nil
}

// Close closes the connection.
func (d *Docker) Close() error { return d.cli.Close() }

// Client returns the underlying Docker client.
func (d *Docker) Client() *client.Client { return d.cli }

// APIVersion returns the negotiated API version.
func (d *Docker) APIVersion() string { return d.cli.ClientVersion() }

// RootID returns the label value that marks this instance's containers.
func (d *Docker) RootID() string { return d.cfg.RootID }

func (d *Docker) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.CallTimeout)
}

// Backend returns a sandboxset.Backend that makes containers for pool from
// spec. The spec is validated here, before any container exists.
func (d *Docker) Backend(pool string, ps spec.PoolSpec) (*Backend, error) {
	if err := spec.ValidatePoolName(pool); err != nil {
		return nil, err
	}
	if err := ps.Validate(); err != nil {
		return nil, fmt.Errorf("pool %q: %w", pool, err)
	}
	if len(ps.Cmd) == 0 && d.cfg.InitBinary == "" {
		return nil, fmt.Errorf("pool %q: %w: no cmd, and no init binary configured to idle with", pool, spec.ErrInvalidSpec)
	}
	return &Backend{d: d, pool: pool, spec: ps, hash: ps.Hash()}, nil
}

// Backend makes the sandbox containers of one pool. It implements
// sandboxset.Backend but not sandboxset.Forker: containers cannot be forked.
type Backend struct {
	d    *Docker
	pool string
	spec spec.PoolSpec
	hash string
}

var (
	_ sandboxset.Backend = (*Backend)(nil)
	_ sandboxset.Sandbox = (*Sandbox)(nil)
)

// Spec returns the pool spec the backend was made for.
func (b *Backend) Spec() spec.PoolSpec { return b.spec }

// SpecHash returns the hash that labels its containers.
func (b *Backend) SpecHash() string { return b.hash }

// ContainerName returns the container name of sandbox id.
func ContainerName(id string) string { return "ol-shim-" + id }

// Create creates and starts a container for spec, waits for readiness if the
// pool declares it, and returns it unpaused. On any error the container is
// removed.
func (b *Backend) Create(ctx context.Context, spec sandboxset.Spec) (sandboxset.Sandbox, error) {
	if err := b.ensureImage(ctx); err != nil {
		return nil, err
	}
	cfg, hc := b.containerConfig(spec)
	select {
	case b.d.creates <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("create container for sandbox %s: waiting for one of %d create slots: %w", spec.ID, cap(b.d.creates), ctx.Err())
	}
	started := false
	defer func() {
		if !started {
			<-b.d.creates
		}
	}()
	cctx, cancel := b.d.callCtx(ctx)
	res, err := b.d.cli.ContainerCreate(cctx, client.ContainerCreateOptions{
		Name:       ContainerName(spec.ID),
		Config:     cfg,
		HostConfig: hc,
	})
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// dockerd may finish the create after giving up on it: remove
			// it by name, or it outlives its pool.
			late := &Sandbox{d: b.d, id: spec.ID, container: ContainerName(spec.ID)}
			if rerr := late.remove(context.WithoutCancel(ctx)); rerr != nil {
				b.d.log.Error("remove a container whose create timed out", "sandbox", spec.ID, "error", rerr)
			}
		}
		return nil, fmt.Errorf("create container for sandbox %s (image %q): %w", spec.ID, b.spec.Image, err)
	}
	sb := &Sandbox{d: b.d, id: spec.ID, container: res.ID, scratch: spec.ScratchDir}
	fail := func(err error) (sandboxset.Sandbox, error) {
		if rerr := sb.remove(context.WithoutCancel(ctx)); rerr != nil {
			b.d.log.Error("remove container after failed create", "container", res.ID, "sandbox", spec.ID, "error", rerr)
		}
		return nil, err
	}
	cctx, cancel = b.d.callCtx(ctx)
	_, err = b.d.cli.ContainerStart(cctx, res.ID, client.ContainerStartOptions{})
	cancel()
	started = true
	<-b.d.creates // readiness waits on the container, not on dockerd
	if err != nil {
		return fail(fmt.Errorf("start container %.12s for sandbox %s: %w", res.ID, spec.ID, err))
	}
	if r := b.spec.Ready; r != nil {
		if err := b.waitReady(ctx, sb, *r); err != nil {
			return fail(err)
		}
	}
	return sb, nil
}

// ensureImage checks that the image is present, pulling it if the pool
// allows.
func (b *Backend) ensureImage(ctx context.Context) error {
	cctx, cancel := b.d.callCtx(ctx)
	defer cancel()
	_, err := b.d.cli.ImageInspect(cctx, b.spec.Image)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("pool %q: inspect image %q: %w", b.pool, b.spec.Image, err)
	}
	if b.spec.Pull != spec.PullMissing {
		return fmt.Errorf("pool %q: image %q: %w (pull policy %q; load or build it first)", b.pool, b.spec.Image, ErrImageNotFound, spec.PullNever)
	}
	resp, err := b.d.cli.ImagePull(ctx, b.spec.Image, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("pool %q: pull image %q: %w", b.pool, b.spec.Image, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pool %q: pull image %q: %w", b.pool, b.spec.Image, err)
	}
	return nil
}

func (b *Backend) containerConfig(spec sandboxset.Spec) (*container.Config, *container.HostConfig) {
	s := b.spec
	cfg := &container.Config{
		Image:      s.Image,
		Env:        s.Env,
		WorkingDir: s.WorkingDir,
		User:       s.User,
		Labels: map[string]string{
			api.LabelManaged:  "true",
			api.LabelRoot:     b.d.cfg.RootID,
			api.LabelPool:     b.pool,
			api.LabelSandbox:  spec.ID,
			api.LabelSpec:     b.hash,
			api.LabelInstance: b.d.instance,
		},
	}
	mounts := []mount.Mount{{Type: mount.TypeBind, Source: spec.ScratchDir, Target: ScratchTarget}}
	if drv := b.d.cfg.VolumeDriver; drv != "" {
		mounts[0] = mount.Mount{Type: mount.TypeVolume, Source: spec.ID, Target: ScratchTarget,
			VolumeOptions: &mount.VolumeOptions{DriverConfig: &mount.Driver{Name: drv}}}
	}
	if len(s.Cmd) > 0 {
		cfg.Cmd = s.Cmd
		// The pool's command replaces the image's: clear its entrypoint.
		cfg.Entrypoint = []string{}
	} else {
		cfg.Entrypoint = []string{InitPath, "init"}
		cfg.Cmd = []string{}
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: b.d.cfg.InitBinary, Target: InitPath, ReadOnly: true})
	}
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.NetworkMode()),
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		CapAdd:         DefaultCapabilities,
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: s.ReadOnlyRootfs,
		Mounts:         mounts,
	}
	if s.MemoryBytes > 0 {
		hc.Memory = s.MemoryBytes
		hc.MemorySwap = s.MemoryBytes // swap off
	}
	if s.CPUs > 0 {
		hc.CPUPeriod = 100_000
		hc.CPUQuota = int64(s.CPUs * 100_000)
	}
	if s.PidsLimit > 0 {
		pl := s.PidsLimit
		hc.PidsLimit = &pl
	}
	return cfg, hc
}

// waitReady waits until the readiness file exists or the socket accepts a
// connection, the container stops, or the timeout passes.
func (b *Backend) waitReady(ctx context.Context, sb *Sandbox, r spec.Readiness) error {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = spec.DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := "file /host/" + r.File
	check := func() bool {
		_, err := os.Stat(filepath.Join(sb.scratch, r.File))
		return err == nil
	}
	if r.Socket != "" {
		what = "a connection on /host/" + r.Socket
		sock := filepath.Join(sb.scratch, r.Socket)
		check = func() bool {
			c, err := net.DialTimeout("unix", sock, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		}
	}
	wait := 500 * time.Microsecond
	lastInspect := time.Now()
	for !check() {
		if time.Since(lastInspect) > 100*time.Millisecond {
			lastInspect = time.Now()
			if running, state, err := sb.running(ctx); err == nil && !running {
				return fmt.Errorf("sandbox %s: %w: container %.12s is %s before %s", sb.id, ErrNotReady, sb.container, state, what)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s: %w: no %s within %v", sb.id, ErrNotReady, what, timeout)
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
	return nil
}

// Attach returns the Sandbox of an existing container, for Reconcile to hand
// to a Set.
func (d *Docker) Attach(sandboxID, containerID, scratchDir string) *Sandbox {
	return &Sandbox{d: d, id: sandboxID, container: containerID, scratch: scratchDir}
}

// AsDocker returns the Docker sandbox inside sb, or false if sb is not one.
func AsDocker(sb sandboxset.Sandbox) (*Sandbox, bool) {
	s, ok := registry.Innermost(sb).(*Sandbox)
	return s, ok
}

// Sandbox is a sandbox container.
type Sandbox struct {
	d         *Docker
	id        string
	container string
	scratch   string
}

// ID returns the sandbox ID.
func (s *Sandbox) ID() string { return s.id }

// ContainerID returns the Docker container ID.
func (s *Sandbox) ContainerID() string { return s.container }

// ScratchDir returns the host path mounted at /host.
func (s *Sandbox) ScratchDir() string { return s.scratch }

// Pause freezes the container.
func (s *Sandbox) Pause(ctx context.Context) error {
	ctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	if _, err := s.d.cli.ContainerPause(ctx, s.container, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
	return nil
}

// Unpause resumes the container; it fails if the container died while
// paused.
func (s *Sandbox) Unpause(ctx context.Context) error {
	cctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	if _, err := s.d.cli.ContainerUnpause(cctx, s.container, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("unpause sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
	return nil
}

// Destroy force-removes the container, paused or not. A container that is
// already gone counts as removed. The scratch directory (or volume) belongs
// to the Set's ScratchMaker, which removes it next.
func (s *Sandbox) Destroy(ctx context.Context, reason string) error {
	s.d.log.Debug("destroy sandbox", "sandbox", s.id, "container", s.container, "reason", reason)
	return s.remove(ctx)
}

// remove force-removes the container. A call that times out (a dockerd
// swamped by hundreds of creates) is tried again while ctx has time left:
// a container whose removal gave up would outlive its pool. Three tries at
// most.
func (s *Sandbox) remove(ctx context.Context) error {
	for try := 1; ; try++ {
		cctx, cancel := s.d.callCtx(ctx)
		_, err := s.d.cli.ContainerRemove(cctx, s.container, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		switch {
		case err == nil || cerrdefs.IsNotFound(err):
			return nil
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && try < 3:
			s.d.log.Warn("removing a container timed out; trying again", "sandbox", s.id, "container", s.container)
			continue
		}
		return fmt.Errorf("remove sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
}

func (s *Sandbox) running(ctx context.Context) (bool, string, error) {
	ctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	res, err := s.d.cli.ContainerInspect(ctx, s.container, client.ContainerInspectOptions{})
	if err != nil {
		return false, "", err
	}
	st := res.Container.State
	if st == nil {
		return false, "unknown", nil
	}
	return st.Running, string(st.Status), nil
}

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

// Instance returns the api.LabelInstance of what this connection makes.
func (d *Docker) Instance() string { return d.instance }

func newInstanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Health asks dockerd for its version: what `ol-shim status` shows of it.
func (d *Docker) Health(ctx context.Context) *api.DockerHealth {
	ctx, cancel := d.callCtx(ctx)
	defer cancel()
	v, err := d.cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return &api.DockerHealth{Error: err.Error()}
	}
	return &api.DockerHealth{OK: true, Version: v.Version, APIVersion: d.APIVersion()}
}
