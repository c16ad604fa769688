package clicmd

import (
	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/runcli"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "run a command in a warm sandbox, like docker run, served from a pool",
	ArgsUsage: "IMAGE [CMD [ARG...]]   (with --pool: [CMD [ARG...]])",
	Description: `run takes a sandbox from the pool of IMAGE (a configured pool of that image,
or one made on demand, kept warm from the second run on) or from --pool, runs
the command in it through the sandbox's agent, and streams its stdin, stdout
and stderr as it runs. Signals the CLI gets (Ctrl-C: SIGINT) are delivered to
the command. The exit code is the command's own; 125 when ol-shim or Docker
failed, 126 when the command cannot be invoked, 127 when it is not found.

What runs is what docker run would start: the image's ENTRYPOINT (or
--entrypoint's program; --entrypoint "" for none) followed by CMD ARG..., or
by the image's CMD when no command is given (and --entrypoint is not).

Each run gets a fresh sandbox, destroyed afterwards (--rm, the default);
--reuse puts it back in the pool instead. stdin is sent with -i, or when it is
not a terminal (a pipe or a file); -i=false sends none.`,
	UseShortOptionHandling: true,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "pool", Usage: "pool to take the sandbox from"},
		&cli.BoolFlag{Name: "reuse", Usage: "return the sandbox to the pool afterwards"},
		&cli.BoolFlag{Name: "rm", Value: true, Usage: "destroy the sandbox afterwards (the default; see --reuse)"},
		&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "send stdin to the command"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "run the command on a pseudo-terminal"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE for the command (repeatable)"},
		&cli.StringFlag{Name: "entrypoint", Usage: "run this program instead of the image's ENTRYPOINT (\"\": none), as docker run's --entrypoint"},
		&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working directory in the sandbox"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "user[:group] or uid[:gid] to run as in the sandbox"},
		&cli.DurationFlag{Name: "timeout", Usage: "stop the command after this long (default: no limit but the host's)"},
	},
	Action: func(c *cli.Context) error {
		code, err := runAction(c)
		switch {
		case err != nil:
			return cli.Exit(err.Error(), code)
		case code != 0:
			return cli.Exit("", code)
		}
		return nil
	},
}

// runAction runs the command and returns its exit code; an error is
// printed, with the code. It is internal/runcli's run, which ol-shim serves
// without this package.
func runAction(c *cli.Context) (int, error) {
	cl, err := apiClient(c)
	if err != nil {
		return agent.CodeFailed, err
	}
	o := runcli.Options{Socket: c.String("socket"), Dial: cl.Dial, Call: api.RunCall{RunRequest: api.RunRequest{
		Pool: c.String("pool"), Env: c.StringSlice("env"), WorkingDir: c.String("workdir"),
		User: c.String("user"), TTY: c.Bool("tty"),
	}}}
	if c.IsSet("entrypoint") {
		o.Call.Entrypoint = runcli.Entrypoint(c.String("entrypoint"))
	}
	if c.IsSet("interactive") {
		i := c.Bool("interactive")
		o.Interactive = &i
	}
	if err := runcli.Check(&o, c.Args().Slice(), c.Bool("reuse"), c.IsSet("rm"), c.Bool("rm"), c.Duration("timeout"), c.IsSet("timeout")); err != nil {
		return agent.CodeFailed, err
	}
	return runcli.Run(o)
}
