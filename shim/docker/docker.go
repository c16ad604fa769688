// Package docker is ol-shim's Docker backend: the sandboxes of every pool
// are containers of one dockerd, and their scratch directories volumes of
// ol-shim's own volume plugin (or plain directories). It is also the one
// place that removes what no pool holds: Reconcile at start, the Provider's
// Watch (sandboxes that die, orphans of an earlier process) while serving,
// RemoveAll at a stop that destroys all.
//
// Files: docker.go (the connection and a pool's Backend), sandbox.go (one
// container), exec.go (docker exec), reconcile.go, world.go (listing
// containers and volumes, dockerd's events), volumescratch.go (scratch as
// volumes), provider.go (the registry's Provider and Janitor).
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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/imageref"
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
	// every sandbox's PID 1 ("ol-shim init"): the run agent, and the idle
	// process of pools that name no command. Empty: pools must name a
	// command, and runs go through docker exec.
	InitBinary string
	// AgentDir, with InitBinary, is the host directory of the sandboxes'
	// control directories (root's alone): AgentDir/<sandbox id> is mounted
	// at agent.SocketDir, where the agent makes its socket.
	AgentDir string
	// VolumeDriver, if set, is the name dockerd knows ol-shim's volume
	// plugin by: sandboxes then get their scratch at /host as a volume of
	// it (see VolumeScratch), not as a bind mount.
	VolumeDriver string
	// Containerd is how pauses and resumes are made: ContainerdAuto (or
	// empty) through dockerd's containerd where it can be found, else
	// Docker's API; ContainerdOff always Docker's API; an absolute path,
	// through the containerd listening there.
	Containerd string
	// HostsFile, if set, is a hosts file (localhost) mounted read-only at
	// /etc/hosts in sandboxes with no network (see WriteHostsFile).
	HostsFile string
	// CallTimeout bounds each Docker call; DefaultCallTimeout if 0.
	CallTimeout time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Docker is a connection to dockerd that makes sandbox containers.
type Docker struct {
	cli      *client.Client
	cfg      DockerConfig
	log      *slog.Logger
	instance string   // api.LabelInstance of what it makes
	tasks    *taskAPI // containerd's task API for pause and resume; nil: Docker's API
	noTasks  string   // why tasks is nil

	impostors atomic.Int64 // sandboxes destroyed because a process posed as their agent
	swept     atomic.Int64 // processes of runs killed by sweeps

	imgMu       sync.Mutex
	imgLabelled map[string]bool // guarded by imgMu: image ID -> its own labels include ol-shim's (see ours)

	rtMu      sync.Mutex
	runtimes  map[string]string // guarded by rtMu: the OCI runtimes dockerd knows, by name: their binary
	rtChecked time.Time         // guarded by rtMu
	root      string            // guarded by rtMu: dockerd's root directory (DockerRootDir)
}

// rootDir returns dockerd's root directory, "" if not known.
func (d *Docker) rootDir() string {
	d.rtMu.Lock()
	defer d.rtMu.Unlock()
	return d.root
}

// OwnRuntime is the name ol-shim's OCI runtime (ol-shim-runtime) is
// registered under in dockerd.
const OwnRuntime = "ol-shim"

// refreshRuntimes asks dockerd which OCI runtimes it knows, at most every
// 10 s (and always if force).
func (d *Docker) refreshRuntimes(ctx context.Context, force bool) {
	d.rtMu.Lock()
	due := force || time.Since(d.rtChecked) > 10*time.Second
	if due {
		d.rtChecked = time.Now()
	}
	d.rtMu.Unlock()
	if !due {
		return
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	res, err := d.cli.Info(cctx, client.InfoOptions{})
	if err != nil {
		return
	}
	rts := map[string]string{}
	for name, r := range res.Info.Runtimes {
		rts[name] = r.Path
	}
	d.rtMu.Lock()
	d.runtimes = rts
	if filepath.IsAbs(res.Info.DockerRootDir) {
		d.root = res.Info.DockerRootDir
	}
	d.rtMu.Unlock()
}

// DefaultRuntime is the OCI runtime of sandboxes whose pool names none:
// ol-shim's where dockerd knows it (pause and resume then run no runc
// process), else dockerd's default ("").
func (d *Docker) DefaultRuntime() string {
	d.rtMu.Lock()
	defer d.rtMu.Unlock()
	if _, ok := d.runtimes[OwnRuntime]; ok {
		return OwnRuntime
	}
	return ""
}

// Runtime says which OCI runtime sandboxes get by default, for the status.
func (d *Docker) Runtime() string {
	d.rtMu.Lock()
	defer d.rtMu.Unlock()
	if p, ok := d.runtimes[OwnRuntime]; ok {
		return OwnRuntime + " (" + p + ")"
	}
	return "dockerd's default (ol-shim-runtime not registered: ol-shim runtime install)"
}

// Impostors returns how many sandboxes were destroyed because a process in
// them answered on the agent's socket.
func (d *Docker) Impostors() int64 { return d.impostors.Load() }

// Swept returns how many processes that outlived their runs were killed.
func (d *Docker) Swept() int64 { return d.swept.Load() }

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
	if cfg.AgentDir != "" {
		if cfg.InitBinary == "" {
			return nil, errors.New("docker: an agent directory needs the init binary that serves it")
		}
		if err := os.MkdirAll(cfg.AgentDir, 0o700); err != nil {
			return nil, fmt.Errorf("docker: agent directory: %w", err)
		}
		if err := os.Chmod(cfg.AgentDir, 0o700); err != nil {
			return nil, fmt.Errorf("docker: agent directory: %w", err)
		}
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	d := &Docker{cli: cli, cfg: cfg, log: cfg.Logger, instance: newInstanceID()}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cctx, cancel := d.callCtx(ctx)
	defer cancel()
	if _, err := cli.Ping(cctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker: no answer from dockerd at %s: %w", cli.DaemonHost(), err)
	}
	d.refreshRuntimes(ctx, true)
	d.tasks, d.noTasks = newTaskAPI(cfg.Containerd, cli.DaemonHost())
	if d.tasks != nil {
		d.log.Info("pausing and resuming sandboxes through containerd's task API", "socket", d.tasks.socket, "namespace", containerdNamespace)
	} else {
		d.log.Info("pausing and resuming sandboxes through dockerd", "why", d.noTasks)
	}
	return d, nil
}

// PauseVia says how sandboxes are paused and resumed: "containerd (SOCKET)"
// or "dockerd (why not containerd)".
func (d *Docker) PauseVia() string {
	if s := d.tasks.using(); s != "" {
		return "containerd task API (" + s + ")"
	}
	why := d.noTasks
	if why == "" {
		why = "containerd refused"
	}
	return "dockerd (" + why + ")"
}

// Close closes the connection.
func (d *Docker) Close() error {
	d.tasks.close()
	return d.cli.Close()
}

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
	if err := imageref.Spec(ps); err != nil {
		return nil, fmt.Errorf("pool %q: %w", pool, err)
	}
	if len(ps.Cmd) == 0 && d.cfg.InitBinary == "" {
		return nil, fmt.Errorf("pool %q: %w: no cmd, and no init binary configured to idle with", pool, spec.ErrInvalidSpec)
	}
	ps = ps.WithDefaults()
	return &Backend{d: d, pool: pool, spec: ps, hash: ps.Hash()}, nil
}

// Backend makes the sandbox containers of one pool. It implements
// sandboxset.Backend but not sandboxset.Forker: containers cannot be forked.
type Backend struct {
	d    *Docker
	pool string
	spec spec.PoolSpec
	hash string
	// The image's ENTRYPOINT and CMD as last inspected (each create
	// inspects it): what a run starts, as docker run would.
	image atomic.Pointer[imageCommand]
}

type imageCommand struct{ entrypoint, cmd []string }

// ImageCommand returns the ENTRYPOINT and CMD of the pool's image, as a
// create last found them; before any create (a new ad-hoc pool, a pool
// adopted at start) it makes sure of the image as a create would, pulling
// it if the pool may.
func (b *Backend) ImageCommand(ctx context.Context) (entrypoint, cmd []string, err error) {
	ic := b.image.Load()
	if ic == nil {
		if err := b.ensureImage(ctx); err != nil {
			return nil, nil, err
		}
		ic = b.image.Load()
	}
	return ic.entrypoint, ic.cmd, nil
}

func (b *Backend) keepImageCommand(res client.ImageInspectResult) {
	ic := &imageCommand{}
	if cfg := res.Config; cfg != nil {
		ic.entrypoint, ic.cmd = slices.Clip(cfg.Entrypoint), slices.Clip(cfg.Cmd)
	}
	b.image.Store(ic)
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
	if b.d.agentOn() {
		if err := b.makeCtl(spec.ID); err != nil {
			return nil, err
		}
	}
	b.d.refreshRuntimes(ctx, false) // at most every 10 s: a runtime registered since is used
	// How many creates are in flight at once is the pool layer's to
	// bound (sandboxset.Limiter: the registry's max_creates, over all
	// pools): the one limiter.
	cfg, hc := b.containerConfig(spec)
	// dockerd finishes a create whose caller went away, so a create given
	// up part way (its pool closed, its client gone) is waited for here,
	// not cut: its container is then removed by its ID. Cut, removing it by
	// name could come before dockerd made it, and it would outlive its pool.
	// Only the call's own timeout cuts it (dockerd hung).
	cctx, cancel := b.d.callCtx(context.WithoutCancel(ctx))
	res, err := b.d.cli.ContainerCreate(cctx, client.ContainerCreateOptions{
		Name:       ContainerName(spec.ID),
		Config:     cfg,
		HostConfig: hc,
	})
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// dockerd may still finish it: removed by name, at best.
			late := &Sandbox{d: b.d, id: spec.ID, container: ContainerName(spec.ID)}
			if rerr := late.remove(context.WithoutCancel(ctx)); rerr != nil {
				b.d.log.Error("remove a container whose create timed out", "sandbox", spec.ID, "error", rerr)
			}
		} else {
			b.d.removeCtl(spec.ID)
		}
		return nil, fmt.Errorf("create container for sandbox %s (image %q): %w", spec.ID, b.spec.Image, err)
	}
	sb := &Sandbox{d: b.d, id: spec.ID, container: res.ID, scratch: spec.ScratchDir, fresh: len(b.spec.Cmd) > 0 && b.d.cfg.InitBinary != ""}
	fail := func(err error) (sandboxset.Sandbox, error) {
		if rerr := sb.remove(context.WithoutCancel(ctx)); rerr != nil {
			b.d.log.Error("remove container after failed create", "container", res.ID, "sandbox", spec.ID, "error", rerr)
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("create container for sandbox %s: given up: %w", spec.ID, err))
	}
	cctx, cancel = b.d.callCtx(ctx)
	_, err = b.d.cli.ContainerStart(cctx, res.ID, client.ContainerStartOptions{})
	cancel()
	sandboxset.Started(ctx) // readiness waits on the container, not on dockerd
	if err != nil {
		return fail(fmt.Errorf("start container %.12s for sandbox %s: %w", res.ID, spec.ID, err))
	}
	if r := b.spec.Ready; r != nil {
		if err := b.waitReady(ctx, sb, *r); err != nil {
			return fail(err)
		}
	}
	if b.d.agentOn() {
		sb.waitAgent(ctx)
	}
	return sb, nil
}

// ensureImage checks that the image is present, pulling it if the pool
// allows, and keeps its ENTRYPOINT and CMD.
func (b *Backend) ensureImage(ctx context.Context) error {
	if err := b.inspectImage(ctx); err == nil || !cerrdefs.IsNotFound(err) {
		return err
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
	return b.inspectImage(ctx)
}

// inspectImage inspects the pool's image and keeps its ENTRYPOINT and CMD.
// An image whose own labels include ol-shim's is refused: a container
// inherits its image's labels, and ol-shim knows its containers by labels
// no image may carry (see ours).
func (b *Backend) inspectImage(ctx context.Context) error {
	cctx, cancel := b.d.callCtx(ctx)
	defer cancel()
	res, err := b.d.cli.ImageInspect(cctx, b.spec.Image)
	if err != nil {
		return fmt.Errorf("pool %q: inspect image %q: %w", b.pool, b.spec.Image, err)
	}
	if res.Config != nil {
		if k, ok := ourLabel(res.Config.Labels); ok {
			return fmt.Errorf("pool %q: image %q: %w: it carries the label %s, which only ol-shim sets on the containers it makes", b.pool, b.spec.Image, cerrdefs.ErrInvalidArgument, k)
		}
	}
	b.keepImageCommand(res)
	return nil
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
		return &api.DockerHealth{Error: err.Error(), PauseVia: d.PauseVia()}
	}
	d.refreshRuntimes(ctx, false)
	return &api.DockerHealth{OK: true, Version: v.Version, APIVersion: d.APIVersion(), PauseVia: d.PauseVia(), Runtime: d.Runtime()}
}

// hostsContent is what a sandbox with no network finds in /etc/hosts: what
// dockerd writes for a container of network none.
const hostsContent = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
ff00::0	ip6-mcastprefix
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
`
