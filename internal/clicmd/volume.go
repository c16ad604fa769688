package clicmd

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

var volumeCommand = &cli.Command{
	Name:        "volume",
	Usage:       "change the volume plugin's volumes (make, list and remove them with docker volume)",
	Subcommands: []*cli.Command{volumeGrowCommand},
}

var volumeGrowCommand = &cli.Command{
	Name:      "grow",
	Usage:     "raise a quota'd volume's size or inode limit, while no container has it (root only)",
	ArgsUsage: "NAME",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "size", Usage: "the new size limit, e.g. 512M"},
		&cli.Int64Flag{Name: "inodes", Usage: "the new inode limit"},
		&cli.BoolFlag{Name: "json", Usage: "print the volume's status as JSON"},
	},
	Action: func(c *cli.Context) error {
		// Flags may come after NAME too (as docker's do).
		fs := flag.NewFlagSet("volume grow", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		size := fs.String("size", c.String("size"), "")
		inodes := fs.Int64("inodes", c.Int64("inodes"), "")
		asJSON := fs.Bool("json", c.Bool("json"), "")
		args := c.Args().Slice()
		if len(args) > 0 {
			if err := fs.Parse(args[1:]); err != nil {
				return cli.Exit("volume grow: "+err.Error(), 125)
			}
			args = append(args[:1], fs.Args()...)
		}
		if len(args) != 1 {
			return cli.Exit("volume grow: want exactly one volume NAME", 125)
		}
		if *size == "" && *inodes == 0 {
			return cli.Exit("volume grow: give --size, --inodes or both", 125)
		}
		cl, err := apiClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Grow(c.Context, args[0], api.GrowRequest{Size: *size, Inodes: *inodes})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(c.App.Writer).Encode(st)
		}
		fmt.Fprintf(c.App.Writer, "%s: size %d bytes, %d inodes (%s backend); %d bytes and %d inodes used\n",
			st.Name, st.Options.Size, st.Options.Inodes, st.Options.Backend, st.BytesUsed, st.InodesUsed)
		return nil
	},
}
