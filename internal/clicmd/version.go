package clicmd

import (
	"fmt"
	"runtime"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the client's and the daemon's versions, as docker version",
	Flags: []cli.Flag{&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "json, or a Go template over {Client, Server} (e.g. '{{.Server.Version}}')"}},
	Action: func(c *cli.Context) error {
		type side struct {
			Version    string `json:"version"`
			APIVersion string `json:"api_version,omitempty"`
			GoVersion  string `json:"go_version,omitempty"`
			OS         string `json:"os,omitempty"`
			Arch       string `json:"arch,omitempty"`
			Backend    string `json:"backend,omitempty"`
		}
		v := struct {
			Client side  `json:"client"`
			Server *side `json:"server,omitempty"`
		}{Client: side{Version: Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}}
		var serverErr error
		if cl, err := apiClient(c); err != nil {
			serverErr = err
		} else if st, err := cl.Status(c.Context); err != nil {
			serverErr = err
		} else {
			v.Server = &side{Version: st.Version, Backend: st.Backend}
		}
		if f := c.String("format"); f != "" {
			if err := printFormatted(c.App.Writer, f, []any{v}, f == "json"); err != nil {
				return err
			}
		} else {
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 1, ' ', 0)
			fmt.Fprintf(w, "Client:\n Version:\t%s\n Go version:\t%s\n OS/Arch:\t%s/%s\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if v.Server != nil {
				fmt.Fprintf(w, "\nServer:\n Version:\t%s\n Backend:\t%s\n", v.Server.Version, v.Server.Backend)
			}
			w.Flush()
		}
		if serverErr != nil {
			return cli.Exit(serverErr.Error(), 1)
		}
		return nil
	},
}
