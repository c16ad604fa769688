package clicmd

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the version of ol-shim",
	Action: func(c *cli.Context) error {
		fmt.Fprintf(c.App.Writer, "ol-shim %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	},
}
