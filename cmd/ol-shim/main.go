// Command ol-shim is the client of ol-shim, which keeps warm pools of paused
// containers for serverless functions on a Docker host. `ol-shim run` and
// `ol-shim --version` are served here, by a program that initialises only
// what a run needs (internal/runcli); every other command (status, pool,
// help, and the daemon's: serve, demo, init) is ol-shimd's, which ol-shim
// hands its arguments to by exec.
//
// Installed as docker-ol in Docker's cli-plugins directory, the same binary
// is a Docker CLI plugin: `docker ol run -it IMAGE sh` is `ol-shim run -it
// IMAGE sh`.
package main

import (
	"os"
	"path/filepath"

	"github.com/open-lambda/ol-shim/internal/runcli"
)

// Version is set at build time (-X main.Version=...).
var Version = "dev"

func main() {
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == runcli.PluginName {
		// The Docker CLI's plugin protocol: the metadata call, and
		// "docker-ol [DOCKER'S GLOBAL OPTIONS] ol ARGS..." for
		// "docker [GLOBAL OPTIONS] ol ARGS...".
		if len(args) > 0 && args[0] == "docker-cli-plugin-metadata" {
			runcli.PluginMetadata(os.Stdout, Version)
			return
		}
		args = runcli.PluginArgs(args)
	}
	os.Exit(runcli.Main(args, Version, runcli.HandOver))
}
