// Command openapi writes the API's reference, api/openapi.yaml, from the
// server's route table and the API's Go types (see server.OpenAPI).
package main

import (
	"fmt"
	"os"

	"github.com/open-lambda/ol-shim/shim/server"
)

func main() {
	if err := os.WriteFile("api/openapi.yaml", []byte(server.OpenAPI("v1")), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
}
