package clicmd

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

var poolCommand = &cli.Command{
	Name:  "pool",
	Usage: "list, create, change and remove pools of the running daemon",
	Subcommands: []*cli.Command{
		poolLsCommand,
		poolInspectCommand,
		poolCreateCommand,
		poolRmCommand,
		poolWarmCommand,
		poolShrinkCommand,
	},
}

var poolLsCommand = &cli.Command{
	Name:    "ls",
	Aliases: []string{"list"},
	Usage:   "list the pools",
	Flags: []cli.Flag{
		formatFlag,
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print the pools' names only"},
		&cli.BoolFlag{Name: "json", Hidden: true, Usage: "--format json"},
	},
	Action: func(c *cli.Context) error {
		format, err := outputFormat(c)
		if err != nil {
			return err
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		pools, err := cl.Pools(c.Context)
		if err != nil {
			return err
		}
		switch {
		case c.Bool("quiet"):
			for _, p := range pools {
				fmt.Fprintln(c.App.Writer, p.Name)
			}
			return nil
		case format == "table":
			printPools(c.App.Writer, pools)
			return nil
		}
		return printFormatted(c.App.Writer, format, pools, true)
	},
}

var poolInspectCommand = &cli.Command{
	Name:      "inspect",
	Usage:     "show one or more pools in full: config and counters (JSON, or --format)",
	ArgsUsage: "NAME...",
	Flags:     []cli.Flag{&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "json (the default), or a Go template, as docker inspect's (e.g. '{{.Stats.Idle}}')"}},
	Action: func(c *cli.Context) error {
		if c.NArg() == 0 {
			return usageError("pool inspect: want NAME...")
		}
		for _, a := range c.Args().Slice() {
			if strings.HasPrefix(a, "-") {
				return usageError("pool inspect: %s: flags go before the pool names (pool inspect --format F NAME...)", a)
			}
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		var pools []api.PoolStatus
		for _, name := range c.Args().Slice() {
			p, err := cl.Pool(c.Context, name)
			if err != nil {
				return err
			}
			pools = append(pools, p)
		}
		format := c.String("format")
		if format == "" || format == "json" {
			enc := json.NewEncoder(c.App.Writer)
			enc.SetIndent("", "    ")
			return enc.Encode(pools)
		}
		return printFormatted(c.App.Writer, format, pools, false)
	},
}

var poolCreateCommand = &cli.Command{
	Name:      "create",
	Usage:     "create or replace a pool",
	ArgsUsage: "NAME IMAGE [CMD...]",
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE (repeatable)"},
		&cli.StringFlag{Name: "memory", Aliases: []string{"m"}, Usage: "memory limit, as docker's, e.g. 256m, 1.5g", DefaultText: "256M"},
		&cli.Float64Flag{Name: "cpus", Usage: "CPU limit, e.g. 0.5", DefaultText: fmt.Sprintf("%g, or the host's CPUs if fewer", spec.DefaultCPUs)},
		&cli.Int64Flag{Name: "pids-limit", Usage: "process limit", DefaultText: fmt.Sprint(spec.DefaultPidsLimit)},
		&cli.Int64Flag{Name: "pids", Hidden: true, Usage: "--pids-limit"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as NAME, UID or UID:GID in the container", DefaultText: "the daemon's sandbox_user"},
		&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working directory in the container", DefaultText: "the image's"},
		&cli.StringFlag{Name: "network", Usage: "network mode, as docker's (none, or a network the daemon allows)", DefaultText: "none"},
		&cli.StringFlag{Name: "pull", Usage: "never, or missing: pull the image if absent (where the daemon allows)", DefaultText: "never"},
		&cli.StringFlag{Name: "runtime", Usage: "the OCI runtime of its sandboxes, any dockerd knows (runc, runsc, ...)", DefaultText: "ol-shim where registered, else runc"},
		&cli.IntFlag{Name: "min-idle", Usage: "idle sandboxes kept ready"},
		&cli.IntFlag{Name: "max-size", Usage: "most sandboxes at once", DefaultText: "the daemon's max_pool_size"},
		&cli.DurationFlag{Name: "idle-ttl", Usage: "destroy idle sandboxes unused this long", DefaultText: "never"},
		&cli.DurationFlag{Name: "pause-grace", Usage: "keep a returned sandbox unpaused this long", DefaultText: "0s: paused at once"},
		&cli.StringFlag{Name: "ready-socket", Usage: "ready when this unix socket under /host accepts, e.g. ol.sock"},
		&cli.StringFlag{Name: "scratch-size", Usage: "quota of each sandbox's /host, e.g. 64M"},
		&cli.Int64Flag{Name: "scratch-inodes", Usage: "inode quota of each sandbox's /host", DefaultText: "one per 4 KiB of --scratch-size"},
		&cli.BoolFlag{Name: "read-only", Usage: "mount the image read-only, as docker's (/host stays writable)"},
		&cli.BoolFlag{Name: "read-only-rootfs", Hidden: true, Usage: "--read-only"},
		&cli.BoolFlag{Name: "recycle", Usage: "after a run, make the sandbox as new and keep it instead of destroying it (needs --read-only)"},
		&cli.StringFlag{Name: "file", Usage: "read the pool from this JSON file (- for stdin) instead of flags"},
	},
	Action: func(c *cli.Context) error {
		var pc spec.PoolConfig
		args := c.Args().Slice()
		if f := c.String("file"); f != "" {
			if len(args) != 1 {
				return usageError("pool create --file: want exactly NAME")
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
			pids := c.Int64("pids-limit")
			if !c.IsSet("pids-limit") {
				pids = c.Int64("pids")
			}
			pc = spec.PoolConfig{
				Image: args[1], Cmd: args[2:], Env: c.StringSlice("env"), CPUs: c.Float64("cpus"), Pids: pids,
				MinIdle: c.Int("min-idle"), MaxSize: c.Int("max-size"),
				IdleTTL: spec.Duration(c.Duration("idle-ttl")), PauseGrace: spec.Duration(c.Duration("pause-grace")),
				ReadOnlyRootfs: c.Bool("read-only") || c.Bool("read-only-rootfs"), Recycle: c.Bool("recycle"),
				User: c.String("user"), WorkingDir: c.String("workdir"), Network: c.String("network"), Pull: c.String("pull"),
				Runtime: c.String("runtime"), ScratchInodes: c.Int64("scratch-inodes"),
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
