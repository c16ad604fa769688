package main

import (
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:    "ol-shim",
		Usage:   "warm pools of paused containers for serverless functions",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: api.DefaultSocket, EnvVars: []string{"OL_SHIM_SOCKET"}, Usage: "the daemon's API socket"},
		},
		Commands: []*cli.Command{
			serveCommand,
			statusCommand,
			runCommand,
			poolCommand,
			demoCommand,
			initCommand,
			volumeServerCommand,
			versionCommand,
		},
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// apiClient is the client of the daemon every client command uses.
func apiClient(c *cli.Context) *api.Client {
	return api.NewClient(c.String("socket"))
}
