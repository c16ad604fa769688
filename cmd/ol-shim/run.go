package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "run a command in a warm sandbox, like docker run, served from a pool",
	ArgsUsage: "IMAGE CMD [ARG...]   (with --pool: CMD [ARG...])",
	Description: `run takes a sandbox from the pool of IMAGE (a configured pool of that image,
or one made on demand) or from --pool, runs the command in it, and passes its
stdout, stderr and exit code through; stdin too, when it is not a terminal. The
sandbox is destroyed afterwards and the pool refills in the background;
--reuse puts it back instead.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "pool", Usage: "pool to take the sandbox from"},
		&cli.BoolFlag{Name: "reuse", Usage: "return the sandbox to the pool afterwards"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE for the command (repeatable)"},
		&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working directory in the sandbox"},
		&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (default: the daemon's)"},
	},
	Action: func(c *cli.Context) error {
		args := c.Args().Slice()
		req := api.RunCall{RunRequest: api.RunRequest{
			Pool: c.String("pool"), Env: c.StringSlice("env"), WorkingDir: c.String("workdir"), Reuse: c.Bool("reuse"),
		}}
		if req.Pool == "" {
			if len(args) == 0 {
				return fmt.Errorf("run: name an IMAGE (or --pool) and a command")
			}
			req.Image, args = args[0], args[1:]
		}
		if len(args) == 0 {
			return fmt.Errorf("run: no command: sandboxes idle in ol-shim's init, so name what to run")
		}
		req.Cmd = args
		if d := c.Duration("timeout"); d < 0 || (d == 0 && c.IsSet("timeout")) {
			return fmt.Errorf("--timeout %v: want a positive duration like 30s", d)
		} else if d > 0 {
			req.Timeout = d.String()
		}
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
			in, err := io.ReadAll(io.LimitReader(os.Stdin, api.MaxBody/2))
			if err != nil {
				return fmt.Errorf("run: read stdin: %w", err)
			}
			req.Stdin = in
			if req.Stdin == nil {
				req.Stdin = []byte{}
			}
		}
		res, err := apiClient(c).Run(c.Context, req)
		if err != nil {
			return err
		}
		c.App.Writer.Write(res.Stdout)
		c.App.ErrWriter.Write(res.Stderr)
		if res.Truncated {
			fmt.Fprintf(c.App.ErrWriter, "ol-shim: output truncated at %d bytes\n", api.MaxOutput)
		}
		if res.ExitCode != 0 {
			return cli.Exit("", res.ExitCode)
		}
		return nil
	},
}
