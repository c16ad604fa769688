// Command ol-shim keeps warm pools of paused containers for serverless
// functions on a Docker host.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
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
