package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/clicmd"
	apiserve "github.com/open-lambda/ol-shim/internal/serve"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/config"
	"github.com/open-lambda/ol-shim/shim/daemon"
	"github.com/open-lambda/ol-shim/shim/registry"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "run the ol-shim daemon: pools, the API socket and the scratch volume plugin",
	Description: `serve runs the pool registry (one sandbox set per pool) on the Docker backend
(or --backend mock, to try ol-shim without Docker), the "ol-shim" volume plugin
that serves sandbox scratch directories, and the JSON API on --socket.

At start it detaches FUSE mounts a crash left behind, reconciles Docker with the
configured pools (paused sandboxes of the same spec are adopted, everything else
it labelled is removed), then serves. SIGHUP reloads the config file's pools
and the TLS listener's certificate, key and client CA.
SIGTERM stops accepting, finishes requests in flight, destroys leased sandboxes,
and leaves idle ones paused for the next start (or destroys them all with
--destroy-on-exit).

Settings come from flags, then OL_SHIM_* variables, then the config file
([daemon] table), then defaults.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "config", Value: config.DefaultConfigPath, EnvVars: []string{"OL_SHIM_CONFIG"}, Usage: "config file (pools, [daemon], [adhoc]); may be absent at the default path"},
		&cli.StringFlag{Name: "root", Value: daemon.DefaultRoot, EnvVars: []string{"OL_SHIM_ROOT"}, Usage: "state root"},
		&cli.StringFlag{Name: "socket", Value: api.DefaultSocket, EnvVars: []string{"OL_SHIM_SOCKET"}, Usage: "API socket"},
		&cli.StringFlag{Name: "plugin-socket", Value: api.DefaultPluginSocket, EnvVars: []string{"OL_SHIM_PLUGIN_SOCKET"}, Usage: "volume plugin socket dockerd connects to"},
		&cli.StringFlag{Name: "plugin-name", Value: api.DefaultPluginName, EnvVars: []string{"OL_SHIM_PLUGIN_NAME"}, Usage: "the volume driver name dockerd knows the plugin by"},
		&cli.StringFlag{Name: "plugin-spec-dir", Value: "/etc/docker/plugins", EnvVars: []string{"OL_SHIM_PLUGIN_SPEC_DIR"}, Usage: "where dockerd looks for plugin specs; serve writes <plugin-name>.json there if missing"},
		&cli.StringFlag{Name: "socket-group", Value: "docker", EnvVars: []string{"OL_SHIM_SOCKET_GROUP"}, Usage: "group owning both sockets (mode 0660); empty: root"},
		&cli.StringFlag{Name: "backend", Value: "docker", EnvVars: []string{"OL_SHIM_BACKEND"}, Usage: "sandbox backend: docker or mock"},
		&cli.StringFlag{Name: "scratch", Value: "volume", EnvVars: []string{"OL_SHIM_SCRATCH"}, Usage: "sandbox scratch at /host: volume (through the volume plugin, quotas work) or bind (plain directories)"},
		&cli.StringFlag{Name: "scratch-backend", Value: "auto", EnvVars: []string{"OL_SHIM_SCRATCH_BACKEND"}, Usage: "backend of quota'd volumes that name none: kernel (an ext4 file system per volume on a loop device, at disk speed), fuse (the FUSE quota file system), or auto (kernel where this host can, else fuse); [scratch] backend in the config"},
		&cli.StringFlag{Name: "memory-budget", Value: "80%", EnvVars: []string{"OL_SHIM_MEMORY_BUDGET"}, Usage: "cap on the summed memory limits of live sandboxes: a size (16G) or a share of RAM (80%)"},
		&cli.DurationFlag{Name: "lease", Value: registry.DefaultLease, EnvVars: []string{"OL_SHIM_LEASE"}, Usage: "how long an acquired sandbox lives unless renewed"},
		&cli.BoolFlag{Name: "destroy-on-exit", EnvVars: []string{"OL_SHIM_DESTROY_ON_EXIT"}, Usage: "destroy every sandbox at exit instead of leaving idle ones paused for the next start"},
		&cli.StringFlag{Name: "docker-host", EnvVars: []string{"DOCKER_HOST"}, Usage: "dockerd address (default unix:///var/run/docker.sock)"},
		&cli.StringFlag{Name: "containerd", Value: "auto", EnvVars: []string{"OL_SHIM_CONTAINERD"}, Usage: "how sandboxes are paused and resumed: auto (through dockerd's own containerd, one process hop shorter, where it is found on this host; else through dockerd), off (through dockerd always), or the path of dockerd's containerd socket"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"OL_SHIM_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"OL_SHIM_METRICS_ADDR"}, Usage: "serve Prometheus metrics at this address (e.g. 127.0.0.1:9464); off if empty"},
		&cli.StringFlag{Name: "tls-listen", EnvVars: []string{"OL_SHIM_TLS_LISTEN"}, Usage: "also serve the API, and Prometheus metrics at /metrics, over the network at this address (HOST:PORT), mutual TLS 1.3 only (--tls-cert, --tls-key, --tls-ca); off if empty"},
		&cli.StringFlag{Name: "tls-cert", Aliases: []string{"tlscert"}, EnvVars: []string{"OL_SHIM_TLS_CERT"}, Usage: "the TLS listener's certificate (PEM)"},
		&cli.StringFlag{Name: "tls-key", Aliases: []string{"tlskey"}, EnvVars: []string{"OL_SHIM_TLS_KEY"}, Usage: "the TLS listener's private key (PEM)"},
		&cli.StringFlag{Name: "tls-ca", Aliases: []string{"tlscacert"}, EnvVars: []string{"OL_SHIM_TLS_CA"}, Usage: "the CA (PEM) that must have signed every client's certificate; a client is known by its certificate's subject"},
		&cli.StringSliceFlag{Name: "tls-proxy", EnvVars: []string{"OL_SHIM_TLS_PROXIES"}, Usage: "the certificate subject of a front end (e.g. CN=haproxy) trusted to name the client each request is for in its X-OL-Shim-Client header (repeatable)"},
		&cli.BoolFlag{Name: "purge", Usage: "remove every sandbox and scratch volume this state root made (the volume plugin serves meanwhile), then exit: run it before taking ol-shim off a host"},
		&cli.BoolFlag{Name: "plugin-only", EnvVars: []string{"OL_SHIM_PLUGIN_ONLY"}, Usage: "serve the volume plugin only: no pools, no API, no Docker connection (the managed plugin runs this way)"},
	},
	Action: serve,
}

// settings are serve's resolved settings.
type settings struct {
	root, socket, pluginSocket, pluginName, specDir, group string
	backend, scratchMode, budget, logLevel, dockerHost     string
	scratchBackend, containerd                             string
	tlsListen, tlsCert, tlsKey, tlsCA                      string
	tlsProxies                                             []string
	lease                                                  time.Duration
	destroyOnExit                                          bool
}

// resolve applies flag > env > file > default.
func resolve(c *cli.Context, file config.DaemonConfig, sc config.ScratchConfig) settings {
	str := func(flag, fromFile string) string {
		if c.IsSet(flag) || fromFile == "" {
			return c.String(flag)
		}
		return fromFile
	}
	s := settings{
		root:           str("root", file.Root),
		socket:         str("socket", file.Socket),
		pluginSocket:   str("plugin-socket", file.PluginSocket),
		pluginName:     str("plugin-name", file.PluginName),
		specDir:        c.String("plugin-spec-dir"),
		group:          c.String("socket-group"),
		backend:        str("backend", file.Backend),
		scratchMode:    str("scratch", file.Scratch),
		scratchBackend: str("scratch-backend", sc.Backend),
		budget:         str("memory-budget", file.MemoryBudget),
		logLevel:       str("log-level", file.LogLevel),
		dockerHost:     c.String("docker-host"),
		containerd:     str("containerd", file.Containerd),
		lease:          c.Duration("lease"),
		tlsListen:      str("tls-listen", file.TLSListen),
		tlsCert:        str("tls-cert", file.TLSCert),
		tlsKey:         str("tls-key", file.TLSKey),
		tlsCA:          str("tls-ca", file.TLSCA),
		tlsProxies:     file.TLSProxies,
	}
	if c.IsSet("tls-proxy") {
		s.tlsProxies = c.StringSlice("tls-proxy")
	}
	if !c.IsSet("socket-group") && file.SocketGroup != nil {
		s.group = *file.SocketGroup
	}
	if !c.IsSet("lease") && file.Lease > 0 {
		s.lease = time.Duration(file.Lease)
	}
	s.destroyOnExit = c.Bool("destroy-on-exit") || (!c.IsSet("destroy-on-exit") && file.DestroyOnExit)
	return s
}

func serve(c *cli.Context) error {
	file, err := config.LoadConfig(c.String("config"), c.IsSet("config"))
	if err != nil {
		return err
	}
	s := resolve(c, file.Daemon, file.Scratch)
	log, err := newLogger(s.logLevel)
	if err != nil {
		return err
	}
	budget, err := config.ParseBudget(s.budget, totalRAM())
	if err != nil {
		return err
	}
	root, err := filepath.Abs(s.root)
	if err != nil {
		return fmt.Errorf("root %q: %w", s.root, err)
	}
	purge := c.Bool("purge")
	if purge && s.backend != daemon.BackendDocker {
		return fmt.Errorf("--purge: backend %q keeps nothing to purge", s.backend)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	if c.Bool("plugin-only") {
		self = ""
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(ctx, daemon.Config{
		Root: root, Backend: s.backend, Scratch: s.scratchMode, PluginName: s.pluginName, DockerHost: s.dockerHost, Containerd: s.containerd,
		Budget: budget, Lease: s.lease, DestroyOnExit: s.destroyOnExit, File: file, Version: clicmd.Version, Logger: log,
		Metrics: (c.String("metrics-addr") != "" || s.tlsListen != "") && !purge, PluginOnly: c.Bool("plugin-only"), TLSProxies: s.tlsProxies,
		Notify: func(status string) { notify(status) },
		// Quota'd volumes are served by processes of their own, which
		// outlive this one (not in the managed plugin: its container is
		// the plugin's whole life).
		VolumeServer:   self,
		ScratchBackend: s.scratchBackend,
	})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			if err := d.Stop(context.Background()); err != nil {
				log.Error("stop", "error", err)
			}
		}
	}()
	if c.Bool("plugin-only") {
		return servePluginOnly(ctx, d, s, log)
	}
	if addr := c.String("metrics-addr"); addr != "" && !purge {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("metrics address %q: %w", addr, err)
		}
		go d.ServeMetrics(l)
		log.Info("serving metrics", "addr", l.Addr().String())
	}

	// The volume plugin comes first: dockerd may be starting and waiting
	// for it to restore containers with ol-shim volumes.
	activated, err := activation.ListenersWithNames()
	if err != nil {
		return fmt.Errorf("systemd socket activation: %w", err)
	}
	pl, err := listener(activated, s.pluginSocket, s.group)
	if err != nil {
		return err
	}
	defer pl.Close()
	go d.ServePlugin(pl)
	if len(activated) == 0 {
		wrote, err := ensurePluginSpec(s.specDir, s.pluginName, s.pluginSocket, log)
		if err != nil {
			log.Warn("dockerd may not find the volume plugin", "error", err)
		}
		if wrote {
			// A spec left behind with no plugin serving it makes dockerd
			// stall on volume lookups: take back what this process wrote.
			defer os.Remove(filepath.Join(s.specDir, s.pluginName+".json"))
		}
	}
	if purge {
		return d.Purge(ctx)
	}
	notify(sddaemon.SdNotifyReady, "STATUS=volume plugin serving; starting pools")
	if err := d.Start(ctx); err != nil {
		return err
	}
	al, err := listener(activated, s.socket, s.group)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- d.ServeAPI(al) }()
	var tlsFiles *apiserve.TLSFiles
	if s.tlsListen != "" {
		var err error
		tlsFiles, err = apiserve.NewTLSFiles(s.tlsCert, s.tlsKey, s.tlsCA)
		if err != nil {
			return fmt.Errorf("--tls-listen %s: %w", s.tlsListen, err)
		}
		cfg := tlsFiles.Config()
		tl, err := net.Listen("tcp", s.tlsListen)
		if err != nil {
			return fmt.Errorf("--tls-listen %s: %w", s.tlsListen, err)
		}
		go func() { errc <- d.ServeAPITLS(tl, cfg) }()
		log.Info("serving the API over mutual TLS", "addr", tl.Addr().String(), "ca", s.tlsCA, "proxies", s.tlsProxies)
	}
	log.Info("serving", "socket", s.socket, "plugin_socket", s.pluginSocket, "root", root, "backend", s.backend,
		"pools", d.Pools(), "memory_budget", budget, "socket_activated", len(activated) > 0)
	notify(fmt.Sprintf("STATUS=serving %d pools", d.Pools()))

	return signalLoop(ctx, c, d, s, log, tlsFiles, errc, &stopped)
}

// signalLoop serves until a signal: SIGHUP reloads the config file (pools,
// [adhoc], the trusted proxies) and the TLS files; SIGTERM or SIGINT (ctx)
// stops the daemon, finishing requests in flight (and sets *stopped); an
// API listener's error ends it, leaving the stop to the caller.
func signalLoop(ctx context.Context, c *cli.Context, d *daemon.Daemon, s settings, log *slog.Logger, tlsFiles *apiserve.TLSFiles, errc <-chan error, stopped *bool) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			notify(sddaemon.SdNotifyReloading)
			next, err := config.LoadConfig(c.String("config"), c.IsSet("config"))
			if err != nil {
				log.Error("reload: config refused; keeping the running one", "error", err)
			} else if err := d.Reload(next); err != nil {
				log.Error("reload", "error", err)
			} else {
				log.Info("reloaded", "pools", len(next.Pools))
			}
			if err == nil && !c.IsSet("tls-proxy") {
				d.SetTLSProxies(next.Daemon.TLSProxies)
			}
			if tlsFiles != nil {
				// A renewed certificate or a changed client CA: new
				// handshakes get it; connections made before keep theirs.
				if err := tlsFiles.Reload(); err != nil {
					log.Error("reload: TLS files refused; keeping the certificates in force", "error", err)
				} else {
					log.Info("reloaded the TLS certificate, key and client CA", "cert", s.tlsCert, "ca", s.tlsCA)
				}
			}
			notify(sddaemon.SdNotifyReady)
		case err := <-errc:
			return fmt.Errorf("api socket: %w", err)
		case <-ctx.Done():
			notify(sddaemon.SdNotifyStopping)
			log.Info("stopping: finishing requests in flight")
			sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			*stopped = true
			if err := d.Stop(sctx); err != nil {
				log.Error("stop", "error", err)
			}
			log.Info("stopped", "destroyed_all", s.destroyOnExit)
			return nil
		}
	}
}

// newLogger logs JSON under systemd (which sets JOURNAL_STREAM) and text
// elsewhere.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if os.Getenv("JOURNAL_STREAM") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

// notify tells systemd (Type=notify) about the daemon's state; outside
// systemd it does nothing.
func notify(states ...string) {
	_, _ = sddaemon.SdNotify(false, strings.Join(states, "\n"))
}

// listener returns the socket systemd passed for path (ol-shim.socket
// passes both of the daemon's), or makes one.
func listener(activated map[string][]net.Listener, path, group string) (net.Listener, error) {
	for _, ls := range activated {
		for _, l := range ls {
			if l.Addr().String() == path {
				return l, nil
			}
		}
	}
	l, err := daemon.Listen(path, group)
	if err != nil {
		return nil, err
	}
	return &removeOnClose{Listener: l, path: path}, nil
}

// removeOnClose removes its socket file when closed.
type removeOnClose struct {
	net.Listener
	path string
}

func (l *removeOnClose) Close() error {
	err := l.Listener.Close()
	os.Remove(l.path)
	return err
}

// servePluginOnly serves the volume plugin and nothing else.
func servePluginOnly(ctx context.Context, d *daemon.Daemon, s settings, log *slog.Logger) error {
	pl, err := daemon.Listen(s.pluginSocket, s.group)
	if err != nil {
		return err
	}
	defer os.Remove(s.pluginSocket)
	errc := make(chan error, 1)
	go func() { errc <- d.ServePlugin(pl) }()
	log.Info("serving the volume plugin only", "plugin_socket", s.pluginSocket, "volumes", d.VolumeCount())
	select {
	case <-ctx.Done():
		pl.Close()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("plugin socket: %w", err)
	}
}

// ensurePluginSpec writes dir/name.json pointing at socket unless it
// already does, and reports whether it wrote it.
func ensurePluginSpec(dir, name, socket string, log *slog.Logger) (bool, error) {
	p := filepath.Join(dir, name+".json")
	want := map[string]string{"Name": name, "Addr": "unix://" + socket}
	if b, err := os.ReadFile(p); err == nil {
		var have map[string]string
		if json.Unmarshal(b, &have) == nil && have["Addr"] == want["Addr"] {
			return false, nil
		}
		return false, fmt.Errorf("plugin spec %s points elsewhere (%s); leaving it", p, b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	b, _ := json.Marshal(want)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	if err := writeFileAtomic(p, append(b, '\n'), 0o644); err != nil {
		return false, err
	}
	log.Info("wrote plugin spec for dockerd", "path", p)
	return true, nil
}

// writeFileAtomic writes path whole or not at all: a temporary file in the
// same directory, synced, then renamed over path. A reader (dockerd) never
// sees a half-written spec, even if the process dies mid-write.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing there
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// totalRAM returns the host's memory in bytes.
func totalRAM() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
