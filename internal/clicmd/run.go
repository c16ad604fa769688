package clicmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
)

var runCommand = &cli.Command{
	Name:      "run",
	Usage:     "run a command in a warm sandbox, like docker run, served from a pool",
	ArgsUsage: "IMAGE CMD [ARG...]   (with --pool: CMD [ARG...])",
	Description: `run takes a sandbox from the pool of IMAGE (a configured pool of that image,
or one made on demand, kept warm from the second run on) or from --pool, runs
the command in it through the sandbox's agent, and streams its stdin, stdout
and stderr as it runs. Signals the CLI gets (Ctrl-C: SIGINT) are delivered to
the command. The exit code is the command's own; 125 when ol-shim or Docker
failed, 126 when the command cannot be invoked, 127 when it is not found.

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
// printed, with the code.
func runAction(c *cli.Context) (int, error) {
	args := c.Args().Slice()
	if c.Bool("reuse") && c.IsSet("rm") && c.Bool("rm") {
		return agent.CodeFailed, errors.New("run: --rm and --reuse: choose one")
	}
	req := api.RunCall{RunRequest: api.RunRequest{
		Pool: c.String("pool"), Env: c.StringSlice("env"), WorkingDir: c.String("workdir"),
		User: c.String("user"), Reuse: c.Bool("reuse"), TTY: c.Bool("tty"),
	}}
	if req.Pool == "" {
		if len(args) == 0 {
			return agent.CodeFailed, errors.New("run: name an IMAGE (or --pool) and a command")
		}
		req.Image, args = args[0], args[1:]
	}
	if len(args) == 0 {
		return agent.CodeFailed, errors.New("run: no command: sandboxes idle in ol-shim's init, so name what to run")
	}
	req.Cmd = args
	if d := c.Duration("timeout"); d < 0 || (d == 0 && c.IsSet("timeout")) {
		return agent.CodeFailed, fmt.Errorf("--timeout %v: want a positive duration like 30s", d)
	} else if d > 0 {
		req.Timeout = d.String()
	}
	stdinTerm := term.IsTerminal(int(os.Stdin.Fd()))
	// Without -i, stdin goes along when it is a pipe or a file (not a
	// terminal, and not /dev/null, which the command gets anyway).
	interactive := c.Bool("interactive") || (!c.IsSet("interactive") && !stdinTerm && !isDevNull(os.Stdin))
	outFd := int(os.Stdout.Fd())
	if req.TTY {
		if w, h, err := term.GetSize(outFd); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
	}

	conn, err := apiClient(c).RunStream(context.Background(), req)
	if err != nil {
		return agent.CodeFailed, err
	}
	defer conn.Close()

	sio := agent.Stdio{Stdout: c.App.Writer, Stderr: c.App.ErrWriter}
	if interactive {
		sio.Stdin = os.Stdin
	}
	// Signals go to the command, as docker run's sig-proxy does. On a
	// terminal in raw mode Ctrl-C is a byte for the remote terminal.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	toSend := make(chan int, 16)
	resize := make(chan agent.Resize, 4)
	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH {
				if w, h, err := term.GetSize(outFd); err == nil && req.TTY {
					select {
					case resize <- agent.Resize{Rows: uint16(h), Cols: uint16(w)}:
					default:
					}
				}
				continue
			}
			select {
			case toSend <- int(s.(syscall.Signal)):
			default:
			}
		}
	}()
	sio.Signals, sio.Resize = toSend, resize
	if req.TTY && interactive && stdinTerm {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return agent.CodeFailed, fmt.Errorf("run: terminal raw mode: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
	}
	x, err := agent.Run(context.Background(), agent.NewConn(conn), agent.Start{}, sio)
	var e *agent.Error
	switch {
	case errors.As(err, &e):
		return e.Code, errors.New(e.Message)
	case err != nil:
		return agent.CodeFailed, err
	}
	return x.Code, nil
}

// isDevNull reports whether f is the null device.
func isDevNull(f *os.File) bool {
	var st, null unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && unix.Stat(os.DevNull, &null) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}
