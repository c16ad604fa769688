// Package clicmd is ol-shim's command line shared by its two programs: the
// client commands (run, status, pool, version), the global flags, the Docker
// CLI plugin protocol and how errors become exit codes.
//
// ol-shim (cmd/ol-shim) is the client users type. It links this package and
// the API and agent clients only, so a run starts in a few milliseconds; it
// hands the daemon's commands (serve, demo, init, volume-server) to ol-shimd
// next to it by exec, keeping its process ID. ol-shimd (cmd/ol-shimd) has
// every command, the daemon's among them, and is the binary that runs as
// the service, as each sandbox's init and as each volume's server.
package clicmd

import (
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

// Version is set at build time with
// -ldflags "-X github.com/open-lambda/ol-shim/internal/clicmd.Version=...".
var Version = "dev"

// NewApp is the command line with the client commands and the given
// daemon commands.
func NewApp(daemon ...*cli.Command) *cli.App {
	cmds := []*cli.Command{statusCommand, runCommand, poolCommand}
	cmds = append(cmds, daemon...)
	cmds = append(cmds, versionCommand)
	return &cli.App{
		Name:    "ol-shim",
		Usage:   "warm pools of paused containers for serverless functions",
		Version: Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: api.DefaultSocket, EnvVars: []string{"OL_SHIM_SOCKET"}, Usage: "the daemon's API socket"},
		},
		Commands: cmds,
		// Errors are printed once, by Main.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// apiClient is the client of the daemon every client command uses.
func apiClient(c *cli.Context) *api.Client {
	return api.NewClient(c.String("socket"))
}
