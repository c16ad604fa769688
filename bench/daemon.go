package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
)

// The bench daemon's volume driver and plugin socket: its own, so that an
// installed ol-shim on the same host is not touched.
const (
	pluginName   = "ol-shim-bench"
	pluginSocket = "/run/ol-shim-bench/plugin.sock"
	pluginSpec   = "/etc/docker/plugins/" + pluginName + ".json"
)

// daemon is an `ol-shim serve` process of the bench.
type daemon struct {
	bin, dir, root, socket, config string
	cmd                            *exec.Cmd
	exited                         chan struct{}
	logFile                        *os.File
	c                              *api.Client
}

func newDaemon(bin, dir, config string) (*daemon, error) {
	d := &daemon{bin: bin, dir: dir, root: filepath.Join(dir, "root"), socket: filepath.Join(dir, "api.sock"),
		config: filepath.Join(dir, "config.toml")}
	d.c = api.NewClient(d.socket)
	if err := d.setConfig(config); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return nil, err
	}
	d.logFile = f
	return d, nil
}

func (d *daemon) setConfig(config string) error {
	return os.WriteFile(d.config, []byte(config), 0o644)
}

// start runs the daemon and returns how long it took to answer on its API
// socket (serve opens the API after it has reconciled).
func (d *daemon) start(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	d.cmd = exec.Command(d.bin, "serve", "--config", d.config, "--root", d.root, "--socket", d.socket,
		"--plugin-socket", pluginSocket, "--plugin-name", pluginName, "--socket-group", "",
		"--memory-budget", "90%", "--destroy-on-exit")
	d.cmd.Stdout, d.cmd.Stderr = d.logFile, d.logFile
	if err := d.cmd.Start(); err != nil {
		return 0, err
	}
	cmd, exited := d.cmd, make(chan struct{})
	d.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if _, err := d.c.Status(ctx); err == nil {
			return time.Since(begin), nil
		}
		select {
		case <-exited:
			return 0, fmt.Errorf("ol-shim serve exited (%v); log: %s", d.cmd.ProcessState, d.logFile.Name())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("ol-shim serve did not answer within 10 minutes; log: %s", d.logFile.Name())
		}
	}
}

// stop signals the daemon and waits for it to exit.
func (d *daemon) stop(sig syscall.Signal, wait time.Duration) error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	p := d.cmd.Process
	p.Signal(sig) // an error means it is gone already; exited tells
	select {
	case <-d.exited:
		d.cmd = nil
		return nil
	case <-time.After(wait):
		return fmt.Errorf("ol-shim serve (pid %d) still runs %v after %v", p.Pid, wait, sig)
	}
}

// reload sends SIGHUP: the daemon rereads its config and applies it.
func (d *daemon) reload() error {
	return d.cmd.Process.Signal(syscall.SIGHUP)
}

// rss is the daemon's resident set size in bytes.
func (d *daemon) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", d.cmd.Process.Pid)
}

// idle sums the idle sandboxes of the pools whose names start with prefix.
func (d *daemon) idle(ctx context.Context, prefix string) (idle, creates int, err error) {
	pools, err := d.c.Pools(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range pools {
		if strings.HasPrefix(p.Name, prefix) {
			idle += p.Stats.Idle
			creates += int(p.Stats.Creates)
		}
	}
	return idle, creates, nil
}

// waitIdle waits until the pools named prefix* hold want idle sandboxes,
// printing progress, and returns how long that took.
func (d *daemon) waitIdle(ctx context.Context, prefix string, want int, limit time.Duration) (time.Duration, error) {
	begin := time.Now()
	last := -50 // so that 0 is printed
	for {
		n, _, err := d.idle(ctx, prefix)
		if err != nil {
			return 0, err
		}
		if n >= want {
			return time.Since(begin), nil
		}
		if n/50 != last/50 {
			step("  %s*: %d/%d idle after %v", prefix, n, want, time.Since(begin).Round(time.Second))
			last = n
		}
		if time.Since(begin) > limit {
			return 0, fmt.Errorf("pools %s*: %d of %d sandboxes idle after %v; log: %s", prefix, n, want, limit, d.logFile.Name())
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pauseVia is how the daemon pauses and resumes sandboxes, as its status
// says.
func (d *daemon) pauseVia(ctx context.Context) string {
	st, err := d.c.Status(ctx)
	if err != nil || st.Docker == nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	return st.Docker.PauseVia
}
