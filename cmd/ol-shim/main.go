// Command ol-shim keeps warm pools of paused containers for serverless
// functions on a Docker host.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
		os.Exit(1)
	}
}
