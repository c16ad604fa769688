package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim"
)

// Defaults of the daemon's paths.
const (
	defaultPluginSocket = "/run/ol-shim/plugin.sock"
	defaultPluginName   = "ol-shim"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "run the ol-shim daemon: the scratch volume plugin dockerd talks to",
	Description: `serve opens the state root (volumes and their records), detaches FUSE mounts
a crash left behind, serves the volumes still in use again, and answers dockerd
on the plugin socket as the "ol-shim" volume driver until SIGTERM or SIGINT.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "root", Value: scratch.DefaultRoot, EnvVars: []string{"OL_SHIM_ROOT"}, Usage: "state root"},
		&cli.StringFlag{Name: "plugin-socket", Value: defaultPluginSocket, EnvVars: []string{"OL_SHIM_PLUGIN_SOCKET"}, Usage: "volume plugin socket dockerd connects to"},
		&cli.StringFlag{Name: "plugin-name", Value: defaultPluginName, EnvVars: []string{"OL_SHIM_PLUGIN_NAME"}, Usage: "the driver name dockerd knows the plugin by (the name of its spec file)"},
		&cli.StringFlag{Name: "socket-group", Value: "docker", EnvVars: []string{"OL_SHIM_SOCKET_GROUP"}, Usage: "group owning the sockets (mode 0660); empty: root"},
		&cli.StringFlag{Name: "docker-host", EnvVars: []string{"DOCKER_HOST"}, Usage: "dockerd address (default unix:///var/run/docker.sock)"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"OL_SHIM_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
	},
	Action: serve,
}

func serve(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Docker, where reachable, says which volumes running containers use.
	var inUse func(context.Context) (map[string]int, error)
	if d, err := shim.NewDocker(ctx, shim.DockerConfig{Host: c.String("docker-host"), RootID: "serve"}); err != nil {
		log.Warn("dockerd not reachable at start; mount counts come from the mount table", "error", err)
	} else {
		defer d.Close()
		driver := c.String("plugin-name")
		inUse = func(ctx context.Context) (map[string]int, error) { return d.VolumesInUse(ctx, driver) }
	}
	m, err := scratch.Open(ctx, scratch.Config{Root: c.String("root"), InUse: inUse, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Error("close volumes", "error", err)
		}
	}()
	l, err := scratch.Listen(c.String("plugin-socket"), c.String("socket-group"))
	if err != nil {
		return err
	}
	defer os.Remove(c.String("plugin-socket"))
	errc := make(chan error, 1)
	go func() { errc <- scratch.NewDriver(m, log).Handler().Serve(l) }()
	log.Info("serving", "plugin_socket", c.String("plugin-socket"), "root", m.Root(), "volumes", len(m.List()))
	select {
	case <-ctx.Done():
		log.Info("stopping")
		l.Close()
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return fmt.Errorf("plugin socket: %w", err)
	}
}
