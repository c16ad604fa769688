package main

import (
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:    "ol-shim",
		Usage:   "warm pools of paused containers for serverless functions",
		Version: version,
		Commands: []*cli.Command{
			demoCommand,
			initCommand,
			serveCommand,
			versionCommand,
		},
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
