package main

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/clicmd"
	"github.com/open-lambda/ol-shim/shim/daemon"
)

// volumeServerCommand is the FUSE server of one quota'd volume, started by
// the daemon in a session of its own so that it outlives the daemon. Not
// for users: hidden from help.
var volumeServerCommand = &cli.Command{
	Name:   "volume-server",
	Usage:  "serve one quota'd volume through FUSE (started by ol-shim serve)",
	Hidden: true,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "name", Required: true},
		&cli.StringFlag{Name: "data", Required: true, Usage: "the volume's data directory"},
		&cli.StringFlag{Name: "mountpoint", Required: true},
		&cli.StringFlag{Name: "socket", Required: true, Usage: "control socket"},
		&cli.Int64Flag{Name: "size", Usage: "byte quota; 0: none"},
		&cli.Int64Flag{Name: "inodes", Usage: "inode quota; 0: none"},
		&cli.IntFlag{Name: "fuse-fd", Usage: "the /dev/fuse descriptor of the volume's mount, made by the daemon (the server then confines itself to an empty root)"},
		&cli.BoolFlag{Name: "passthrough", Usage: "let the kernel read files opened read-only (FUSE passthrough), where it can"},
	},
	Action: func(c *cli.Context) error {
		// One Go processor, unless GOMAXPROCS says otherwise. A FUSE
		// server's handlers are short stretches between syscalls; with a
		// second processor the runtime wakes an idle CPU for nearly every
		// request (futex calls per file created, read back and removed:
		// 10 with two processors, 2 with one), and one client's small
		// files ran 2.4 times faster with one (README, Scratch volumes).
		// Syscalls that block still hand the processor on.
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(1)
		}
		log, err := newLogger("info")
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return daemon.ServeVolume(ctx, daemon.VolumeServerConfig{
			Name: c.String("name"), DataDir: c.String("data"), Mountpoint: c.String("mountpoint"), Socket: c.String("socket"),
			MaxBytes: c.Int64("size"), MaxInodes: c.Int64("inodes"), Passthrough: c.Bool("passthrough"), FuseFD: c.Int("fuse-fd"), Version: clicmd.Version, Logger: log,
		})
	},
}
