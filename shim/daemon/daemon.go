// Package daemon is the ol-shim daemon as a library: New builds it from its
// settings, ServePlugin, ServeAPI and ServeMetrics serve it on listeners
// the caller opened, Reload applies a new config file, Stop ends it. The
// serve command only parses flags and opens listeners, so tests and other
// programs start the same daemon in-process.
//
// # Start order
//
// New opens the state root's volumes first (detaching FUSE mounts a crash
// left, rebuilding mount counts from Docker if it answers): dockerd may be
// starting and waiting for the volume plugin to restore containers with
// ol-shim volumes, so the plugin must serve before anything waits for
// dockerd. Start then waits for dockerd, builds the registry on the Docker
// provider and reconciles; only then does the API serve.
package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-lambda/ol-shim/internal/serve"
	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/docker"
	"github.com/open-lambda/ol-shim/shim/metrics"
	"github.com/open-lambda/ol-shim/shim/mock"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/server"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Backends a daemon can run on.
const (
	BackendDocker = "docker"
	BackendMock   = "mock"
)

// Scratch modes: where a sandbox's /host comes from.
const (
	ScratchVolume = "volume" // a volume of ol-shim's own volume plugin (quotas work)
	ScratchBind   = "bind"   // a plain directory under the state root
)

// Config is what a daemon is made from: serve's resolved settings and the
// config file.
type Config struct {
	// Root is the state root.
	Root string
	// Backend is BackendDocker or BackendMock.
	Backend string
	// Scratch is ScratchVolume or ScratchBind.
	Scratch string
	// PluginName is the volume driver name dockerd knows the plugin by.
	PluginName string
	// DockerHost is dockerd's address; empty: DOCKER_HOST or the default.
	DockerHost string
	// Containerd is how sandboxes are paused and resumed
	// (docker.DockerConfig.Containerd): auto, off or a socket path.
	Containerd string
	// InitBinary is the static ol-shim binary mounted into sandboxes as
	// their init; empty: this process's own executable.
	InitBinary string
	// ScratchBackend is the default backend of quota'd volumes: auto (the
	// default), kernel or fuse (scratch.Config.Backend).
	ScratchBackend string
	// VolumeServer, if set, is the ol-shim binary that serves each quota'd
	// volume in a process of its own ("volume-server"), which outlives the
	// daemon; empty: quota'd volumes are served in this process and stop
	// with it.
	VolumeServer string
	// Budget is the memory budget in bytes; 0: none.
	Budget int64
	// Lease is how long an acquired sandbox lives unless renewed.
	Lease time.Duration
	// DestroyOnExit destroys every sandbox at Stop instead of leaving idle
	// ones paused for the next start.
	DestroyOnExit bool
	// File is the config file's content: pools and [adhoc].
	File config.Config
	// Metrics enables ServeMetrics.
	Metrics bool
	// TLSProxies are the certificate subjects (e.g. "CN=haproxy") of front
	// ends whose requests ServeAPITLS takes to be for the client they name
	// in serve.ClientHeader.
	TLSProxies []string
	// PluginOnly serves the volume plugin and nothing else: no Docker
	// connection, no pools, no API.
	PluginOnly bool
	// Version is reported by the status.
	Version string
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Limits bound the API's and the metrics' sockets; serve.DefaultLimits
	// if zero.
	Limits serve.Limits
	// Notify, if set, is told the daemon's state as it changes (systemd's
	// STATUS=...).
	Notify func(status string)
}

// Daemon is a running ol-shim daemon.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	vols    *scratch.Manager
	metrics *metrics.Metrics

	docker *docker.Docker     // set by Start with the Docker backend
	pools  *poolStore         // set by Start with the Docker backend: pools made through the API
	reg    *registry.Registry // set by Start

	proxies serve.Proxies // the TLS front ends trusted now (Config.TLSProxies, SetTLSProxies)

	mu      sync.Mutex
	servers []*http.Server // guarded by mu: API and metrics servers
	plugin  []net.Listener // guarded by mu
	wrapped []net.Listener // guarded by mu: every socket served, as serve.Listener wrapped it
	stopped bool           // guarded by mu
}

// New validates cfg and opens the state root's volumes. Nothing serves
// until the Serve methods are called.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	switch cfg.Backend {
	case BackendDocker, BackendMock:
	default:
		return nil, fmt.Errorf("%w: backend %q: want docker or mock", config.ErrInvalidConfig, cfg.Backend)
	}
	switch cfg.Scratch {
	case ScratchVolume, ScratchBind:
	default:
		return nil, fmt.Errorf("%w: scratch %q: want volume or bind", config.ErrInvalidConfig, cfg.Scratch)
	}
	if err := config.CheckContainerd(cfg.Containerd); err != nil {
		return nil, fmt.Errorf("%w: containerd: %v", config.ErrInvalidConfig, err)
	}
	if cfg.PluginName == "" {
		cfg.PluginName = api.DefaultPluginName
	}
	if cfg.Limits == (serve.Limits{}) {
		cfg.Limits = serve.DefaultLimits
		cfg.Limits.MaxBody = api.MaxBody
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger}
	d.proxies.Set(cfg.TLSProxies)
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Metrics {
		d.metrics = metrics.NewMetrics(cfg.Version)
	}
	// Mount counts come from Docker if it answers now; if it does not, no
	// container runs.
	var inUse func(context.Context) (map[string]int, error)
	if cfg.Backend == BackendDocker && !cfg.PluginOnly {
		inUse = func(ctx context.Context) (map[string]int, error) {
			dk, err := docker.NewDocker(ctx, docker.DockerConfig{Host: cfg.DockerHost, RootID: RootID(cfg.Root), CallTimeout: 3 * time.Second})
			if err != nil {
				return nil, err
			}
			defer dk.Close()
			return dk.VolumesInUse(ctx, cfg.PluginName)
		}
	}
	vols, err := scratch.Open(ctx, scratch.Config{Root: cfg.Root, InUse: inUse, Logger: d.log, ServerBinary: cfg.VolumeServer, Backend: cfg.ScratchBackend})
	if err != nil {
		return nil, err
	}
	d.vols = vols
	return d, nil
}

// RootID names a state root in container and volume labels
// (api.LabelRoot).
func RootID(root string) string {
	sum := sha256.Sum256([]byte(root))
	return "r" + hex.EncodeToString(sum[:6])
}

// VolumeServerConfig configures the server of one quota'd volume.
type VolumeServerConfig = scratch.ServerConfig

// ServeVolume serves one quota'd volume in this process until it is
// unmounted: what "ol-shim volume-server" runs (see Config.VolumeServer).
func ServeVolume(ctx context.Context, cfg VolumeServerConfig) error {
	return scratch.ServeVolume(ctx, cfg)
}

// DefaultRoot is the state root unless told otherwise.
const DefaultRoot = scratch.DefaultRoot

// Listen makes the unix socket at path, owned by root and group, mode
// 0660, replacing a stale socket.
func Listen(path, group string) (net.Listener, error) { return scratch.Listen(path, group) }

// ServePlugin serves the volume plugin on l until Stop; it returns the
// listener's error.
func (d *Daemon) ServePlugin(l net.Listener) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return errors.New("daemon stopped")
	}
	d.plugin = append(d.plugin, l)
	wl := serve.Listener(l, scratch.PluginLimits)
	d.wrapped = append(d.wrapped, wl)
	d.mu.Unlock()
	return serve.Server(scratch.NewDriver(d.vols, d.log).Handler(), scratch.PluginLimits).Serve(wl)
}

// Start connects to dockerd (waiting for it until ctx ends: under systemd
// ol-shim starts before docker.service), builds the registry and makes the
// configured pools, reconciling Docker with them.
func (d *Daemon) Start(ctx context.Context) error {
	if d.cfg.Backend == BackendDocker {
		// Pools made through the API are kept across restarts (the mock
		// backend keeps no sandboxes, so it keeps no pools either).
		ps, err := openPoolStore(d.cfg.Root)
		if err != nil {
			return err
		}
		d.pools = ps
	}
	reg, err := d.newRegistry(ctx)
	if err != nil {
		return err
	}
	d.reg = reg
	if _, err := reg.Start(ctx, d.cfg.File.Pools); err != nil {
		reg.Close(context.Background(), false)
		return err
	}
	return nil
}

// newRegistry connects to the backend and builds the registry on it.
func (d *Daemon) newRegistry(ctx context.Context) (*registry.Registry, error) {
	f := d.cfg.File.Daemon
	rc := registry.Config{Root: d.cfg.Root, Budget: d.cfg.Budget, Lease: d.cfg.Lease, AdHoc: d.cfg.File.AdHoc, Logger: d.log,
		MaxPoolSize: f.MaxPoolSize, MaxCreates: f.MaxCreates, AllowPull: f.AllowPull, AllowNetworks: f.AllowNetworks,
		MaxScratchSize: int64(f.MaxScratchSize), MaxPids: f.MaxPids}
	if d.cfg.Backend == BackendDocker {
		switch u := f.SandboxUser; u {
		case spec.SandboxUserImage:
		case "":
			rc.SandboxUser = spec.DefaultSandboxUser
		default:
			rc.SandboxUser = u
		}
		if u := rc.SandboxUser; u != "" {
			if err := spec.CheckNoHostAccount(u); err != nil {
				return nil, fmt.Errorf("%w: [daemon] sandbox_user %w", config.ErrInvalidConfig, err)
			}
		}
	}
	if d.pools != nil {
		rc.Store = d.pools
	}
	if d.metrics != nil {
		rc.Observe = d.metrics.Observe
	}
	if d.cfg.Backend == BackendDocker {
		init := d.cfg.InitBinary
		if init == "" {
			var err error
			if init, err = FindInit(); err != nil {
				return nil, err
			}
			if filepath.Base(init) != InitBinaryName {
				d.log.Warn("no "+InitBinaryName+" next to this program: sandboxes start with the daemon's own binary as their init, which starts slower", "init", init)
			}
		}
		if err := CheckStatic(init); err != nil {
			return nil, err
		}
		hosts, err := docker.WriteHostsFile(filepath.Join(d.cfg.Root, "hosts"))
		if err != nil {
			return nil, err
		}
		dc := docker.DockerConfig{Host: d.cfg.DockerHost, RootID: RootID(d.cfg.Root), InitBinary: init, AgentDir: filepath.Join(d.cfg.Root, "agents"), Logger: d.log,
			Containerd: d.cfg.Containerd, HostsFile: hosts}
		var vols *scratch.Manager
		if d.cfg.Scratch == ScratchVolume {
			dc.VolumeDriver, vols = d.cfg.PluginName, d.vols
		}
		dk, err := d.waitDocker(ctx, dc)
		if err != nil {
			return nil, err
		}
		p, err := docker.NewProvider(dk, d.cfg.Root, vols)
		if err != nil {
			dk.Close()
			return nil, err
		}
		d.docker = dk
		rc.Provider, rc.Janitor = p, p
	}
	if rc.Provider == nil {
		mp, err := mock.New(d.cfg.Root)
		if err != nil {
			return nil, err
		}
		rc.Provider = mp
	}
	reg, err := registry.New(rc)
	if err != nil {
		return nil, err
	}
	if d.metrics != nil {
		var docker func(context.Context) *api.DockerHealth
		if d.cfg.Backend == BackendDocker {
			docker = func(ctx context.Context) *api.DockerHealth {
				if d.docker == nil {
					return nil
				}
				return d.docker.Health(ctx)
			}
		}
		d.metrics.Watch(reg.Status, d.volumes, docker)
	}
	return reg, nil
}

// waitDocker connects to dockerd, waiting for it to answer until ctx ends.
func (d *Daemon) waitDocker(ctx context.Context, dc docker.DockerConfig) (*docker.Docker, error) {
	for i := 0; ; i++ {
		dk, err := docker.NewDocker(ctx, dc)
		if err == nil {
			return dk, nil
		}
		if i == 0 {
			d.log.Warn("waiting for dockerd", "error", err)
			d.notify("STATUS=volume plugin serving; waiting for dockerd")
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (start dockerd, or try ol-shim with --backend mock)", err)
		case <-time.After(time.Second):
		}
	}
}

func (d *Daemon) notify(status string) {
	if d.cfg.Notify != nil {
		d.cfg.Notify(status)
	}
}

// Handler returns the API's HTTP handler; Start must have returned.
func (d *Daemon) Handler() http.Handler {
	s := &server.Server{Registry: d.reg, Volumes: d.volumes, Version: d.cfg.Version, Backend: d.cfg.Backend, Limits: d.limits(), Grow: d.grow}
	if b, why := d.vols.Backend(); b != "" {
		s.Scratch = &api.ScratchBackend{Backend: b, Reason: why}
	}
	if d.docker != nil {
		s.Docker = d.docker.Health
		s.ServeCheck = d.docker.ServeCheck
	}
	return s.Handler()
}

// limits are the bounds the status shows.
func (d *Daemon) limits() *api.Limits {
	maxPool, maxAdHoc, pull, nets := d.reg.Limits()
	l := d.cfg.Limits
	ds := spec.PoolSpec{}.WithDefaults()
	return &api.Limits{
		MaxPoolSize: maxPool, MaxAdHocPools: maxAdHoc, MaxBody: l.MaxBody, MaxConns: l.MaxConns,
		HeaderTimeout: l.HeaderTimeout.String(), ReadTimeout: l.ReadTimeout.String(), IdleTimeout: l.IdleTimeout.String(),
		DefaultPids: ds.PidsLimit, DefaultCPUs: ds.CPUs, AllowPull: pull, AllowNetworks: nets,
	}
}

// ServeAPI serves the API on l until Stop; Start must have returned. It
// returns http.ErrServerClosed after Stop.
func (d *Daemon) ServeAPI(l net.Listener) error {
	return d.serve(l, d.Handler())
}

// ServeAPITLS serves the API on l (a TCP listener) over mutual TLS with
// cfg (serve.TLSConfig) until Stop: each client is known by its verified
// certificate's subject, owns the leases it acquires, and is never taken
// for local root. With Config.Metrics, /metrics is served there too, to the
// same clients.
func (d *Daemon) ServeAPITLS(l net.Listener, cfg *tls.Config) error {
	if cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		return errors.New("the API over TCP is served with verified client certificates only")
	}
	h := d.Handler()
	if d.metrics != nil {
		// Prometheus scrapes a cluster's hosts with a client certificate
		// of the cluster's CA, as any other client.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.metrics.Handler())
		mux.Handle("/", h)
		h = mux
	}
	return d.serveOn(serve.TLSListener(l, cfg, d.cfg.Limits), serve.TLSIdentityOf(h, &d.proxies))
}

// ServeMetrics serves Prometheus metrics at /metrics on l until Stop
// (Config.Metrics must be set).
func (d *Daemon) ServeMetrics(l net.Listener) error {
	if d.metrics == nil {
		return errors.New("metrics: not enabled in the daemon's config")
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.metrics.Handler())
	return d.serve(l, mux)
}

func (d *Daemon) serve(l net.Listener, h http.Handler) error {
	return d.serveOn(serve.Listener(l, d.cfg.Limits), h)
}

// serveOn serves h on wl, a listener of package serve (which bounds its
// connections), with the daemon's limits, until Stop.
func (d *Daemon) serveOn(wl net.Listener, h http.Handler) error {
	srv := serve.Server(h, d.cfg.Limits)
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return http.ErrServerClosed
	}
	d.servers = append(d.servers, srv)
	d.wrapped = append(d.wrapped, wl)
	d.mu.Unlock()
	return srv.Serve(wl)
}

// Conns returns the connections open now on every socket served, by the
// socket's address: of root peers, and of others.
func (d *Daemon) Conns() map[string][2]int {
	d.mu.Lock()
	ls := slices.Clone(d.wrapped)
	d.mu.Unlock()
	out := map[string][2]int{}
	for _, l := range ls {
		if root, other, err := serve.Open(l); err == nil {
			c := out[l.Addr().String()]
			out[l.Addr().String()] = [2]int{c[0] + root, c[1] + other}
		}
	}
	return out
}

// Pools returns how many pools the config file configures.
func (d *Daemon) Pools() int { return len(d.cfg.File.Pools) }

// Stop ends the daemon: the API stops accepting and finishes requests in
// flight (until ctx ends), leased sandboxes are destroyed, idle ones left
// paused for the next start (or destroyed, with DestroyOnExit), then the
// volume plugin stops.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	d.stopped = true
	servers, plugin := d.servers, d.plugin
	d.mu.Unlock()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("requests still in flight at exit: %w", err))
			s.Close()
		}
	}
	if d.reg != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		if err := d.reg.Close(cctx, d.cfg.DestroyOnExit); err != nil {
			errs = append(errs, fmt.Errorf("close pools: %w", err))
		}
		cancel()
	}
	if d.docker != nil {
		d.docker.Close()
	}
	if d.pools != nil {
		if err := d.pools.close(); err != nil {
			errs = append(errs, fmt.Errorf("close the pool store: %w", err))
		}
	}
	for _, l := range plugin {
		l.Close()
	}
	if err := d.vols.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close volumes: %w", err))
	}
	return errors.Join(errs...)
}

// Purge removes every sandbox and scratch volume this state root made (its
// reconcile with no pools; the records of pools made through the API
// stay), then reports the volumes users made with the
// driver: they hold users' data, so they are left for the user to remove
// (while ol-shim serves them). The volume plugin must serve meanwhile.
func (d *Daemon) Purge(ctx context.Context) error {
	if d.cfg.Backend != BackendDocker {
		return fmt.Errorf("purge: backend %q keeps nothing to purge", d.cfg.Backend)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reg, err := d.newRegistry(wctx)
	if err != nil {
		return err
	}
	rep, err := reg.Start(ctx, nil)
	if cerr := reg.Close(context.Background(), true); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	d.log.Info("purged", "sandboxes_removed", rep.Removed)
	// The pools made through the API (pools.db) stay, like the config
	// file: they go with the state root (apt purge, make uninstall
	// PURGE=1), and a later install makes them again.
	// Sandbox scratch volumes the reconcile did not see by their labels (one
	// made as the stopped daemon went, say) are ours too, not users' data.
	for _, v := range d.vols.List() {
		if v.Options.Sandbox && v.Mounts == 0 {
			if err := d.docker.RemoveVolume(ctx, v.Name); err != nil {
				return fmt.Errorf("purge: %w", err)
			}
			d.log.Info("purged a sandbox scratch volume", "volume", v.Name)
		}
	}
	left, err := d.docker.VolumeNames(ctx, d.cfg.PluginName)
	if err != nil {
		return fmt.Errorf("purge: list volumes: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("purge: sandboxes removed, but %d volumes of driver %s remain, holding users' data: %s; remove them with `docker volume rm` while ol-shim serves, then purge again",
			len(left), d.cfg.PluginName, strings.Join(left, ", "))
	}
	return nil
}

// InitBinaryName is the lean static binary that is every sandbox's PID 1
// and agent (cmd/ol-shim-init).
const InitBinaryName = "ol-shim-init"
