// Package clicmd is ol-shim's whole command line, as ol-shimd
// (cmd/ol-shimd) serves it: the client commands (run, status, pool,
// version), the daemon's (serve, demo, init, volume-server), the global
// flags, the Docker CLI plugin protocol and how errors become exit codes.
//
// ol-shim (cmd/ol-shim), the client users type, does not link it: it
// serves run and --version itself (internal/runcli, no CLI framework, no
// HTTP package, so a run starts in a few milliseconds) and hands every
// other command to ol-shimd beside it by exec, keeping its process ID.
package clicmd

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

// Version is set at build time with
// -ldflags "-X github.com/open-lambda/ol-shim/internal/clicmd.Version=...".
var Version = "dev"

// NewApp is the command line with the client commands and the given
// daemon commands.
func NewApp(daemon ...*cli.Command) *cli.App {
	cmds := []*cli.Command{statusCommand, runCommand, poolCommand, volumeCommand, runtimeCommand}
	cmds = append(cmds, daemon...)
	cmds = append(cmds, completionCommand, manCommand, versionCommand)
	onUsage(cmds)
	return &cli.App{
		Name:    "ol-shim",
		Usage:   "warm pools of paused containers for serverless functions",
		Version: Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: api.DefaultSocket, EnvVars: []string{"OL_SHIM_SOCKET"}, Usage: "the daemon's API socket"},
			&cli.StringFlag{Name: "host", Aliases: []string{"H"}, EnvVars: []string{"OL_SHIM_HOST"}, Usage: "a remote daemon, tcp://HOST:PORT (its --tls-listen), reached with mutual TLS; or unix://PATH"},
			&cli.StringFlag{Name: "tlscacert", EnvVars: []string{"OL_SHIM_TLSCACERT"}, Usage: "the CA that signed the remote daemon's certificate (PEM)"},
			&cli.StringFlag{Name: "tlscert", EnvVars: []string{"OL_SHIM_TLSCERT"}, Usage: "this client's certificate (PEM), signed by the daemon's client CA"},
			&cli.StringFlag{Name: "tlskey", EnvVars: []string{"OL_SHIM_TLSKEY"}, Usage: "this client's private key (PEM)"},
		},
		Commands: cmds,
		// The words of zsh's completion (see completionCommand).
		EnableBashCompletion: true,
		// Errors are printed once, by Main.
		ExitErrHandler: func(*cli.Context, error) {},
		// Usage errors exit 125, as docker's own do.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return cli.Exit(err.Error(), ExitUsage) },
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "ol-shim: no command %q (ol-shim --help lists them)\n", name)
			os.Exit(ExitUsage)
		},
	}
}

// onUsage makes a flag error of every command, and of its subcommands, a
// usage error.
func onUsage(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return cli.Exit(err.Error(), ExitUsage) }
		}
		onUsage(c.Subcommands)
	}
}

// ExitUsage is the exit code of every usage error (a flag, an argument, a
// command that is not), as docker's CLI uses for its own errors.
const ExitUsage = 125

// usageError is a usage error: printed once, exit ExitUsage.
func usageError(format string, args ...any) error {
	return cli.Exit(fmt.Sprintf(format, args...), ExitUsage)
}

// apiClient is the client of the daemon every client command uses: the
// local socket, or --host.
func apiClient(c *cli.Context) (*api.Client, error) {
	host := c.String("host")
	if host == "" {
		return api.NewClient(c.String("socket")), nil
	}
	addr, tcp, err := api.ParseHost(host)
	if err != nil {
		return nil, cli.Exit(err.Error(), 125)
	}
	if !tcp {
		return api.NewClient(addr), nil
	}
	cl, err := api.NewRemoteClient(api.Remote{Host: host, CACert: c.String("tlscacert"), Cert: c.String("tlscert"), Key: c.String("tlskey")})
	if err != nil {
		return nil, cli.Exit(err.Error(), 125)
	}
	return cl, nil
}
