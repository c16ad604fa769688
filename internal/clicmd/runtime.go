package clicmd

import (
	"fmt"
	"os"
	"path/filepath"

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
	Flags: runtimeFlags,
	Action: func(c *cli.Context) error {
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
