package clicmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/shim/api"
)

var statusCommand = &cli.Command{
	Name:  "status",
	Usage: "show the daemon's pools, leased sandboxes, volumes and Docker's health",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Usage: "table (the default), json, or a Go template over the status, as docker info's (e.g. '{{.Version}} {{len .Pools}}')"},
		&cli.BoolFlag{Name: "json", Usage: "--format json"},
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
		st, err := cl.Status(c.Context)
		if err != nil {
			return err
		}
		switch format {
		case "table":
			printStatus(c.App.Writer, st)
			return nil
		case "json":
			enc := json.NewEncoder(c.App.Writer)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return printFormatted(c.App.Writer, format, []api.StatusResponse{st}, false)
	},
}

func printStatus(out io.Writer, st api.StatusResponse) {
	docker := "no docker (mock backend)"
	if h := st.Docker; h != nil {
		if h.OK {
			docker = fmt.Sprintf("dockerd %s, API %s", h.Version, h.APIVersion)
		} else {
			docker = "dockerd UNREACHABLE: " + h.Error
		}
	}
	budget := "no memory budget"
	if st.MemoryTotal > 0 {
		budget = fmt.Sprintf("memory %s of %s budget", human(st.MemoryUsed), human(st.MemoryTotal))
	}
	on := ""
	if st.Host != "" {
		on = " on " + st.Host
	}
	fmt.Fprintf(out, "ol-shim %s%s, %s backend; %s; %s\n", st.Version, on, st.Backend, docker, budget)
	if h := st.StateRoot; h != nil {
		fmt.Fprintf(out, "state root %s: %s free of %s", h.Path, human(h.Free), human(h.Size))
		if h.Warning != "" {
			fmt.Fprintf(out, "; WARNING: %s", h.Warning)
		}
		fmt.Fprintln(out)
	}
	if st.Docker != nil && st.Docker.Runtime != "" {
		fmt.Fprintf(out, "OCI runtime: %s\n", st.Docker.Runtime)
	}
	if st.Docker != nil && st.Docker.PauseVia != "" {
		fmt.Fprintf(out, "pause and resume: %s\n", st.Docker.PauseVia)
	}
	if sc := st.Scratch; sc != nil {
		fmt.Fprintf(out, "scratch volumes: %s backend (%s)\n", sc.Backend, sc.Reason)
	}
	if l := st.Limits; l != nil {
		fmt.Fprintf(out, "limits: %d sandboxes per pool, %d ad-hoc pools, sandboxes default to %d pids and %g CPUs; pull %s, networks %s; API bodies %s, %d connections per socket, headers within %s\n",
			l.MaxPoolSize, l.MaxAdHocPools, l.DefaultPids, l.DefaultCPUs, allowed(l.AllowPull), allowed(l.AllowNetworks), human(l.MaxBody), l.MaxConns, l.HeaderTimeout)
	}
	fmt.Fprintln(out)

	printPools(out, st.Pools)

	if len(st.Leases) > 0 {
		fmt.Fprintln(out)
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "LEASE\tPOOL\tSANDBOX\tCONTAINER\tEXPIRES IN")
		for _, l := range st.Leases {
			fmt.Fprintf(w, "%s\t%s\t%s\t%.12s\t%s\n", l.ID, l.Pool, l.SandboxID, l.ContainerID, time.Until(l.Expires).Round(time.Second))
		}
		w.Flush()
	}

	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VOLUME\tUSED\tQUOTA\tINODES\tMOUNTS\tSERVER")
	if len(st.Volumes) == 0 {
		fmt.Fprintln(w, "(none)")
	}
	for _, v := range st.Volumes {
		used, quota, inodes := "-", "none", "-"
		if v.Options.Limited() && v.Mounts > 0 {
			used = human(v.BytesUsed)
			inodes = fmt.Sprint(v.InodesUsed)
		}
		if v.Options.Size > 0 {
			quota = human(v.Options.Size)
		}
		if v.Options.Inodes > 0 {
			inodes += fmt.Sprintf(" of %d", v.Options.Inodes)
		}
		server := "-"
		if v.Options.Backend == "kernel" {
			server = "kernel (ext4 on a loop device)"
		}
		if s := v.Server; s != nil {
			switch {
			case !s.Alive:
				server = fmt.Sprintf("DEAD (pid %d)", s.PID)
			case s.InProcess:
				server = "in the daemon"
			default:
				server = fmt.Sprintf("pid %d, up %s, %s", s.PID, time.Since(s.Started).Round(time.Second), s.Version)
				if s.Old {
					server += " (OLD: serves until its last unmount)"
				}
			}
			if s.Alive && s.Passthrough != "" {
				server += "; reads: passthrough " + s.Passthrough
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, used, quota, strings.TrimSpace(inodes), v.Mounts, server)
	}
	w.Flush()
}

// printPools prints the pools' table.
func printPools(out io.Writer, pools []api.PoolStatus) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POOL\tIMAGE\tIDLE\tIN USE\tCREATING\tTARGET/MAX\tHOT\tWARM\tCOLD\tP50 WARM\tP50 COLD\tDESTROYED")
	if len(pools) == 0 {
		fmt.Fprintln(w, "(none)")
	}
	for _, p := range pools {
		s := p.Stats
		name := p.Name
		if p.AdHoc {
			name += " (ad hoc)"
		}
		maxSize := "-"
		if s.MaxSize > 0 {
			maxSize = fmt.Sprint(s.MaxSize)
		}
		// The target of idle sandboxes follows demand; the configured
		// min_idle is its floor.
		target := fmt.Sprint(s.MinIdle)
		if s.MinIdle != p.Config.MinIdle {
			target = fmt.Sprintf("%d (min_idle %d)", s.MinIdle, p.Config.MinIdle)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s/%s\t%d\t%d\t%d\t%s\t%s\t%d\n", name, p.Image, s.Idle, s.InUse, s.Creating,
			target, maxSize, s.HotHits, s.WarmHits, s.ColdMisses, dur(s.Latency["warm"].P50, s.WarmHits), dur(s.Latency["cold"].P50, s.ColdMisses), s.Destroyed())
	}
	w.Flush()
}

func dur(d time.Duration, n uint64) string {
	if n == 0 {
		return "-"
	}
	if d > time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func allowed(b bool) string {
	if b {
		return "allowed"
	}
	return "refused"
}
