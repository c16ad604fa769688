package clicmd

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/spec"
)

var poolCommand = &cli.Command{
	Name:  "pool",
	Usage: "list, create, change and remove pools of the running daemon",
	Subcommands: []*cli.Command{
		poolLsCommand,
		poolCreateCommand,
		poolRmCommand,
		poolWarmCommand,
		poolShrinkCommand,
	},
}

var poolLsCommand = &cli.Command{
	Name:  "ls",
	Usage: "list the pools",
	Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
	Action: func(c *cli.Context) error {
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Status(c.Context)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return json.NewEncoder(c.App.Writer).Encode(st.Pools)
		}
		st.Leases, st.Volumes = nil, nil
		printStatus(c.App.Writer, st)
		return nil
	},
}

var poolCreateCommand = &cli.Command{
	Name:      "create",
	Usage:     "create or replace a pool",
	ArgsUsage: "NAME IMAGE [CMD...]",
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE (repeatable)"},
		&cli.StringFlag{Name: "memory", Usage: "memory limit, e.g. 256M (default 256M)"},
		&cli.Float64Flag{Name: "cpus", Usage: "CPU limit, e.g. 0.5"},
		&cli.Int64Flag{Name: "pids", Usage: "process limit"},
		&cli.IntFlag{Name: "min-idle", Usage: "idle sandboxes kept ready"},
		&cli.IntFlag{Name: "max-size", Usage: "most sandboxes at once (0: no limit)"},
		&cli.DurationFlag{Name: "idle-ttl", Usage: "destroy idle sandboxes unused this long"},
		&cli.DurationFlag{Name: "pause-grace", Usage: "keep a returned sandbox unpaused this long"},
		&cli.StringFlag{Name: "ready-socket", Usage: "ready when this unix socket under /host accepts, e.g. ol.sock"},
		&cli.StringFlag{Name: "scratch-size", Usage: "quota of each sandbox's /host, e.g. 64M"},
		&cli.BoolFlag{Name: "read-only-rootfs", Usage: "mount the image read-only (/host stays writable)"},
		&cli.BoolFlag{Name: "recycle", Usage: "after a run, make the sandbox as new and keep it instead of destroying it (needs --read-only-rootfs)"},
		&cli.StringFlag{Name: "file", Usage: "read the pool from this JSON file (- for stdin) instead of flags"},
	},
	Action: func(c *cli.Context) error {
		var pc spec.PoolConfig
		args := c.Args().Slice()
		if f := c.String("file"); f != "" {
			if len(args) != 1 {
				return fmt.Errorf("pool create --file: want exactly NAME")
			}
			var b []byte
			var err error
			if f == "-" {
				b, err = io.ReadAll(os.Stdin)
			} else {
				b, err = os.ReadFile(f)
			}
			if err != nil {
				return fmt.Errorf("pool create: %w", err)
			}
			if err := json.Unmarshal(b, &pc); err != nil {
				return fmt.Errorf("pool create: %s: %w", f, err)
			}
		} else {
			if len(args) < 2 {
				return usageError("pool create: want NAME IMAGE [CMD...]")
			}
			pc = spec.PoolConfig{
				Image: args[1], Cmd: args[2:], Env: c.StringSlice("env"), CPUs: c.Float64("cpus"), Pids: c.Int64("pids"),
				MinIdle: c.Int("min-idle"), MaxSize: c.Int("max-size"),
				IdleTTL: spec.Duration(c.Duration("idle-ttl")), PauseGrace: spec.Duration(c.Duration("pause-grace")),
				ReadOnlyRootfs: c.Bool("read-only-rootfs"), Recycle: c.Bool("recycle"),
			}
			for flag, dst := range map[string]*spec.Size{"memory": &pc.Memory, "scratch-size": &pc.ScratchSize} {
				if v := c.String(flag); v != "" {
					if err := dst.UnmarshalText([]byte(v)); err != nil {
						return fmt.Errorf("--%s: %w", flag, err)
					}
				}
			}
			if s := c.String("ready-socket"); s != "" {
				pc.Ready = &spec.ReadyConfig{Socket: s}
			}
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		p, err := cl.PutPool(c.Context, args[0], pc)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "pool %s: image %s, min idle %d\n", p.Name, p.Image, p.Config.MinIdle)
		return nil
	},
}

var poolRmCommand = &cli.Command{
	Name:      "rm",
	Usage:     "remove a pool (idle sandboxes at once, leased ones when released)",
	ArgsUsage: "NAME",
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return usageError("pool rm: want NAME")
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		return cl.DeletePool(c.Context, c.Args().First())
	},
}

func countArgs(c *cli.Context, verb string) (string, int, error) {
	if c.NArg() != 2 {
		return "", 0, usageError("pool %s: want NAME N", verb)
	}
	n, err := strconv.Atoi(c.Args().Get(1))
	if err != nil || n < 0 {
		return "", 0, usageError("pool %s: N %q: want a count >= 0", verb, c.Args().Get(1))
	}
	return c.Args().First(), n, nil
}

var poolWarmCommand = &cli.Command{
	Name:      "warm",
	Usage:     "keep N idle sandboxes ready, and make them now",
	ArgsUsage: "NAME N",
	Action: func(c *cli.Context) error {
		name, n, err := countArgs(c, "warm")
		if err != nil {
			return err
		}
		start := time.Now()
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		p, err := cl.Warm(c.Context, name, n)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "pool %s: %d idle (%v)\n", p.Name, p.Stats.Idle, time.Since(start).Round(time.Millisecond))
		return nil
	},
}

var poolShrinkCommand = &cli.Command{
	Name:      "shrink",
	Usage:     "destroy idle sandboxes down to N",
	ArgsUsage: "NAME N",
	Action: func(c *cli.Context) error {
		name, n, err := countArgs(c, "shrink")
		if err != nil {
			return err
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		p, err := cl.Shrink(c.Context, name, n)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "pool %s: %d idle\n", p.Name, p.Stats.Idle)
		return nil
	},
}
