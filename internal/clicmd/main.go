package clicmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/runcli"
)

// PluginName is the binary's name as a Docker CLI plugin ("docker ol").
const PluginName = runcli.PluginName

// Main runs app on the process's arguments (as a Docker CLI plugin when
// called docker-ol), prints an error once and exits with its code.
func Main(app *cli.App) {
	args := os.Args
	if filepath.Base(args[0]) == PluginName {
		var done bool
		args, done = cliPlugin(args)
		if done {
			return
		}
		// Help says docker ol, and lists the client's commands only.
		app.Name, app.HelpName = "docker ol", "docker ol"
		for _, c := range app.Commands {
			if daemonOnly[c.Name] {
				c.Hidden = true
			}
		}
	}
	if err := app.Run(args); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintf(os.Stderr, "ol-shim: %s\n", msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
		os.Exit(1)
	}
}

// daemonOnly are the commands of the daemon's host, which `docker ol`
// does not list (they still run).
var daemonOnly = map[string]bool{"serve": true, "demo": true, "init": true, "volume-server": true}

// cliPlugin answers the Docker CLI's plugin protocol: the metadata call,
// and "docker-ol [DOCKER'S GLOBAL OPTIONS] ol ARGS..." (the CLI passes its
// own options, then the plugin's name) for "docker ol ARGS...". It returns
// the arguments to run as ol-shim, or true when it answered alone.
func cliPlugin(args []string) ([]string, bool) {
	if len(args) > 1 && args[1] == "docker-cli-plugin-metadata" {
		runcli.PluginMetadata(os.Stdout, Version)
		return nil, true
	}
	return append([]string{"ol-shim"}, runcli.PluginArgs(args[1:])...), false
}
