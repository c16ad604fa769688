package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/docker"
	"github.com/open-lambda/ol-shim/shim/spec"
)

var demoCommand = &cli.Command{
	Name:  "demo",
	Usage: "run one pool through cold, warm and hot acquires and print what each cost",
	Description: `demo makes a pool, acquires and releases sandboxes from it, prints the
latency of every acquire and the pool's counters, then closes the pool, leaving
nothing behind. With --backend mock no Docker is needed; with --backend docker
the sandboxes are real containers of --image running ol-shim's idle init (the
binary must be the static one from make build).`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "backend", Value: "mock", Usage: "sandbox backend: mock or docker"},
		&cli.StringFlag{Name: "image", Value: "ol-shim-test/runtime:latest", Usage: "docker backend: local image the pool runs"},
		&cli.IntFlag{Name: "rounds", Value: 5, Usage: "acquire/release rounds"},
		&cli.IntFlag{Name: "min-idle", Value: 0, Usage: "idle sandboxes kept ready"},
		&cli.DurationFlag{Name: "pause-grace", Value: 0, Usage: "keep a released sandbox unpaused this long"},
		&cli.DurationFlag{Name: "create-latency", Value: 300 * time.Millisecond, Usage: "mock backend: time a create takes"},
		&cli.DurationFlag{Name: "unpause-latency", Value: 2 * time.Millisecond, Usage: "mock backend: time an unpause takes"},
	},
	Action: func(c *cli.Context) error {
		if c.Int("rounds") < 1 {
			return fmt.Errorf("--rounds %d: must be at least 1", c.Int("rounds"))
		}
		var backend sandboxset.Backend
		switch b := c.String("backend"); b {
		case "mock":
			m := sandboxset.NewMockBackend()
			m.SetLatency(sandboxset.OpCreate, c.Duration("create-latency"))
			m.SetLatency(sandboxset.OpUnpause, c.Duration("unpause-latency"))
			backend = m
		case "docker":
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary for the idle init: %w", err)
			}
			d, err := docker.NewDocker(c.Context, docker.DockerConfig{RootID: fmt.Sprintf("demo-%d", os.Getpid()), InitBinary: self})
			if err != nil {
				return err
			}
			defer d.Close()
			if backend, err = d.Backend("demo", spec.PoolSpec{Image: c.String("image")}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("--backend %q: unknown backend (valid: mock, docker)", b)
		}
		dir, err := os.MkdirTemp("", "ol-shim-demo-")
		if err != nil {
			return fmt.Errorf("scratch root: %w", err)
		}
		defer os.RemoveAll(dir)
		set, err := sandboxset.New(sandboxset.Config{
			Name:       "demo",
			Backend:    backend,
			Scratch:    sandboxset.DirScratch{Root: dir},
			MinIdle:    c.Int("min-idle"),
			PauseGrace: c.Duration("pause-grace"),
		})
		if err != nil {
			return err
		}
		defer set.Close(context.Background())

		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ROUND\tOUTCOME\tACQUIRE\tSANDBOX")
		for i := range c.Int("rounds") {
			start := time.Now()
			ref, err := set.GetOrCreateUnpaused(c.Context)
			if err != nil {
				return err
			}
			d := time.Since(start)
			if d > time.Millisecond {
				d = d.Round(time.Microsecond)
			}
			fmt.Fprintf(w, "%d\t%s\t%v\t%s\n", i+1, ref.Outcome(), d, ref.Sandbox().ID())
			if err := ref.Put(); err != nil {
				return err
			}
		}
		w.Flush()
		st := set.Stats()
		fmt.Fprintf(c.App.Writer, "\nhot %d, warm %d, cold %d; created %d, idle %d\n", st.HotHits, st.WarmHits, st.ColdMisses, st.Creates, st.Idle)
		return set.Close(context.Background())
	},
}
