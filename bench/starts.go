package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// startRuns is how many times each program is started (perf stat -r).
const startRuns = 200

// starts: group 8. How long a program takes to start and exit, as `perf
// stat -r 200` reports it (the mean wall time): the sandboxes' init
// (ol-shim-init, which every cold start runs), the client users type
// (`ol-shim --version`), the daemon's binary, and /bin/true as this
// machine's floor for starting any process.
func (r *run) starts(ctx context.Context) error {
	dir := filepath.Dir(r.bin)
	progs := []struct {
		name string
		argv []string
	}{
		{"/bin/true (the floor: exec of a tiny C program)", []string{"/bin/true"}},
		{"ol-shim-init --version (each sandbox's PID 1 and agent)", []string{filepath.Join(dir, "ol-shim-init"), "--version"}},
		{"ol-shim --version (the client)", []string{r.bin, "--version"}},
		{"ol-shimd --version (the daemon's binary, init before this change)", []string{filepath.Join(dir, "ol-shimd"), "--version"}},
	}
	got := map[string]time.Duration{}
	for _, p := range progs {
		d, how, err := startTime(ctx, p.argv)
		if err != nil {
			return fail(p.name, err)
		}
		got[p.argv[0]] = d
		r.addValue("8. process starts", p.name, fmt.Sprintf("%s (%s)", ms(d), how))
		step("  %s: %v (%s)", p.name, ms(d), how)
	}
	init := got[filepath.Join(dir, "ol-shim-init")]
	r.addTarget("init start (ol-shim-init, perf stat -r 200)", "≤ 2 ms", init <= 2*time.Millisecond, "%s", ms(init))
	cli := got[r.bin]
	r.addTarget("`ol-shim --version` (perf stat -r 200)", "≤ 2 ms", cli <= 2*time.Millisecond, "%s", ms(cli))
	return nil
}

var perfElapsed = regexp.MustCompile(`([0-9.]+) \+- [0-9.]+ seconds time elapsed`)

// startTime is the mean wall time of startRuns starts of argv: perf stat's
// where perf is installed, else timed here (which adds Go's own fork and
// exec).
func startTime(ctx context.Context, argv []string) (time.Duration, string, error) {
	if perf, err := exec.LookPath("perf"); err == nil {
		cmd := exec.CommandContext(ctx, perf, append([]string{"stat", "-r", strconv.Itoa(startRuns)}, argv...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil {
			if m := perfElapsed.FindSubmatch(stderr.Bytes()); m != nil {
				s, err := strconv.ParseFloat(string(m[1]), 64)
				if err == nil {
					return time.Duration(s * float64(time.Second)), fmt.Sprintf("perf stat -r %d", startRuns), nil
				}
			}
		}
	}
	begin := time.Now()
	for range startRuns {
		if err := exec.CommandContext(ctx, argv[0], argv[1:]...).Run(); err != nil {
			return 0, "", fmt.Errorf("%s: %w", argv[0], err)
		}
	}
	return time.Since(begin) / startRuns, fmt.Sprintf("mean of %d timed here", startRuns), nil
}
