package clicmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/ociruntime"
)

var runtimeCommand = &cli.Command{
	Name:  "runtime",
	Usage: "register ol-shim's OCI runtime (ol-shim-runtime) with dockerd, or take it off",
	Description: `ol-shim-runtime is runc-compatible: dockerd calls it as it would runc. It
answers pause and resume by writing the container's freezer itself (no runc
process) and hands every other command to runc, unchanged. Registered, pools
make their sandboxes with it, and "docker run --runtime=ol-shim" works as with
runc. install adds {"runtimes": {"ol-shim": {"path": BINARY}}} to daemon.json,
keeping every other key and the file's owner and mode, and reloads dockerd
(SIGHUP); uninstall takes the entry off. A daemon.json that is not JSON is
refused, left as it is.`,
	Subcommands: []*cli.Command{runtimeInstallCommand, runtimeUninstallCommand, runtimeStatusCommand},
}

var runtimeFlags = []cli.Flag{
	&cli.StringFlag{Name: "daemon-json", Value: ociruntime.DaemonJSON, Usage: "dockerd's configuration file"},
	&cli.StringFlag{Name: "name", Value: ociruntime.Name, Usage: "the runtime's name in dockerd"},
	&cli.BoolFlag{Name: "no-reload", Usage: "do not send dockerd SIGHUP"},
}

var runtimeInstallCommand = &cli.Command{
	Name:  "install",
	Usage: "register ol-shim-runtime in daemon.json and reload dockerd",
	Flags: append([]cli.Flag{&cli.StringFlag{Name: "path", Usage: "the runtime binary (default: ol-shim-runtime beside this program, else /usr/lib/ol-shim/ol-shim-runtime)"}}, runtimeFlags...),
	Action: func(c *cli.Context) error {
		bin := c.String("path")
		if bin == "" {
			bin = runtimeBinary()
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			return cli.Exit(fmt.Sprintf("runtime binary %q: %v", bin, err), 125)
		}
		var args []string
		if sock := c.String("socket"); sock != api.DefaultSocket {
			// The runtime asks the daemon at create whether to serve a
			// container from a pool: where this one listens.
			args = append(args, "--ol-shim-socket="+sock)
		}
		changed, err := ociruntime.Register(c.String("daemon-json"), c.String("name"), abs, args...)
		if err != nil {
			return cli.Exit(err.Error(), 125)
		}
		return reloadAfter(c, changed, fmt.Sprintf("registered runtime %q: %s in %s", c.String("name"), abs, c.String("daemon-json")))
	},
}

var runtimeUninstallCommand = &cli.Command{
	Name:  "uninstall",
	Usage: "take ol-shim-runtime off daemon.json and reload dockerd",
	Flags: append(slices.Clone(runtimeFlags), &cli.BoolFlag{Name: "force", Usage: "even while containers run under the runtime (dockerd can then no longer pause, kill or remove them until it restarts)"}),
	Action: func(c *cli.Context) error {
		if !c.Bool("force") {
			// A runtime registered with runtimeArgs is run through a
			// wrapper dockerd writes (DockerRootDir/runtimes/NAME) and
			// drops at the reload that takes the runtime off: a container
			// made with it can then be neither paused nor killed, its shim
			// calling a program that is gone.
			ids, err := containersOfRuntime(c.Context, c.String("name"))
			if err != nil {
				return cli.Exit(fmt.Sprintf("runtime %q: which containers run under it: %v (--force takes it off all the same)", c.String("name"), err), 1)
			}
			if len(ids) > 0 {
				return cli.Exit(fmt.Sprintf("runtime %q: %d containers run under it (%s); dockerd could no longer pause, kill or remove them: remove them first (for ol-shim's sandboxes: stop ol-shim, or remove their pools), or --force", c.String("name"), len(ids), strings.Join(ids[:min(len(ids), 5)], ", ")), 1)
			}
		}
		changed, err := ociruntime.Unregister(c.String("daemon-json"), c.String("name"))
		if err != nil {
			return cli.Exit(err.Error(), 125)
		}
		return reloadAfter(c, changed, fmt.Sprintf("runtime %q taken off %s", c.String("name"), c.String("daemon-json")))
	},
}

var runtimeStatusCommand = &cli.Command{
	Name:  "status",
	Usage: "say whether daemon.json registers ol-shim-runtime",
	Flags: runtimeFlags[:2],
	Action: func(c *cli.Context) error {
		p, err := ociruntime.Registered(c.String("daemon-json"), c.String("name"))
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		if p == "" {
			fmt.Fprintf(c.App.Writer, "runtime %q: not registered in %s\n", c.String("name"), c.String("daemon-json"))
			return cli.Exit("", 1)
		}
		fmt.Fprintf(c.App.Writer, "runtime %q: %s (%s)\n", c.String("name"), p, c.String("daemon-json"))
		return nil
	},
}

// containersOfRuntime lists (short IDs) the containers dockerd holds,
// running or not, that were made with runtime name, where they depend on
// dockerd's wrapper of it (none without one).
func containersOfRuntime(ctx context.Context, name string) ([]string, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return nil, err
	}
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(info.Info.DockerRootDir, "runtimes", name)); err != nil {
		return nil, nil // no wrapper: its containers keep the runtime's own path
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ct := range list.Items {
		res, err := cli.ContainerInspect(ctx, ct.ID, client.ContainerInspectOptions{})
		if err != nil {
			continue // gone meanwhile
		}
		if hc := res.Container.HostConfig; hc != nil && hc.Runtime == name {
			ids = append(ids, ct.ID[:min(len(ct.ID), 12)])
		}
	}
	return ids, nil
}

func reloadAfter(c *cli.Context, changed bool, done string) error {
	if !changed {
		fmt.Fprintln(c.App.Writer, "nothing to change: "+done)
		return nil
	}
	fmt.Fprintln(c.App.Writer, done)
	if c.Bool("no-reload") {
		return nil
	}
	if err := ociruntime.ReloadDockerd(); err != nil {
		return cli.Exit("the file is written, but dockerd was not reloaded: "+err.Error(), 1)
	}
	fmt.Fprintln(c.App.Writer, "dockerd reloaded (SIGHUP)")
	return nil
}

// runtimeBinary is where ol-shim-runtime is: beside this program, else
// where the package puts it.
func runtimeBinary() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "ol-shim-runtime")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/usr/lib/ol-shim/ol-shim-runtime"
}
