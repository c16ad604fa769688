// Command ol-shim is the client of ol-shim, which keeps warm pools of paused
// containers for serverless functions on a Docker host: run, status, pool
// and version. The daemon's commands (serve, demo, init) are ol-shimd's;
// ol-shim hands them on to it.
//
// Installed as docker-ol in Docker's cli-plugins directory, the same binary
// is a Docker CLI plugin: `docker ol run -it IMAGE sh` is `ol-shim run -it
// IMAGE sh`.
package main

import "github.com/open-lambda/ol-shim/internal/clicmd"

func main() {
	clicmd.Main(clicmd.NewApp(clicmd.Forwarders()...))
}
