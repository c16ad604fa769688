// Command ol-shimd is ol-shim with the daemon's commands: serve (the
// service), demo, init (PID 1 of every sandbox, bind-mounted into it) and
// volume-server (one per quota'd volume), besides every client command.
// Users type ol-shim, which hands these commands on to ol-shimd.
package main

import (
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/clicmd"
)

func main() {
	clicmd.Main(newApp())
}

func newApp() *cli.App {
	return clicmd.NewApp(serveCommand, demoCommand, initCommand, volumeServerCommand)
}
