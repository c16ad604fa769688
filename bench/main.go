// Command bench measures ol-shim against plain Docker on this host, in one
// run against one dockerd, and writes BENCHMARKS.md with a plot of the
// acquire latency distributions.
//
//	make bench          # the full run (about 20 minutes on 2 cores)
//	make bench-quick    # the same table with fewer repetitions (under 2 minutes)
//
// It needs root, a dockerd answering on /var/run/docker.sock (the Makefile
// starts one), the test images (hack/images.sh) and bin/ol-shim. It starts
// its own ol-shim daemon (state root in a temporary directory, volume driver
// "ol-shim-bench") and leaves nothing behind: every container, volume and
// mount it made is removed before it exits, also when a measurement fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// sizes are the repetitions of one run: full or quick.
type sizes struct {
	rawRounds, coldRounds       int
	hotFor                      time.Duration
	burstRequests, burstClients int
	burstMinIdle                int
	volumeRounds                int
	ioBytes                     int64
	ioFiles                     int
	ioReps                      int // rounds of group 5's I/O, alternating kinds
	microTime                   time.Duration
	scalePools, scalePerPool    int
	statusCalls                 int
}

var full = sizes{
	rawRounds: 300, coldRounds: 30, hotFor: 3 * time.Second,
	burstRequests: 200, burstClients: 16, burstMinIdle: 8,
	volumeRounds: 20, ioBytes: 1 << 30, ioFiles: 10_000, ioReps: 4, microTime: time.Second,
	scalePools: 20, scalePerPool: 25, statusCalls: 20,
}

var quick = sizes{
	rawRounds: 40, coldRounds: 4, hotFor: time.Second,
	burstRequests: 24, burstClients: 16, burstMinIdle: 8,
	volumeRounds: 3, ioBytes: 256 << 20, ioFiles: 2_000, ioReps: 2, microTime: 200 * time.Millisecond,
	scalePools: 4, scalePerPool: 4, statusCalls: 5,
}

func main() {
	testing.Init() // the pool microbenchmarks use testing.Benchmark
	quickMode := flag.Bool("quick", false, "fewer repetitions (under two minutes); writes BENCHMARKS-quick.md unless -out is given")
	out := flag.String("out", "", "report to write (default BENCHMARKS.md, or BENCHMARKS-quick.md with -quick)")
	plotPath := flag.String("plot", "", "PNG plot to write (default docs/bench-acquire.png, or docs/bench-acquire-quick.png with -quick)")
	readme := flag.String("readme", "", "README whose headline block (between <!-- bench:headline --> markers) is rewritten; empty: none")
	bin := flag.String("bin", "bin/ol-shim", "the ol-shim binary to measure")
	image := flag.String("image", "ol-shim-test/busybox:latest", "image to run (a busybox with sleep and true)")
	scale := flag.Int("scale", 0, "sandboxes in the scale test (default 500, or 20 with -quick), spread over -scale-pools pools")
	scalePools := flag.Int("scale-pools", 0, "pools in the scale test (default 20, or 4 with -quick)")
	only := flag.String("only", "", "run only the groups whose name starts with this (e.g. 5 for volumes); the report then holds only those")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")

	sz, mode := full, "full"
	if *quickMode {
		sz, mode = quick, "quick"
	}
	if *scalePools > 0 {
		sz.scalePools = *scalePools
	}
	if *scale > 0 {
		sz.scalePerPool = max(1, *scale/sz.scalePools)
	}
	if *out == "" {
		*out = map[bool]string{false: "BENCHMARKS.md", true: "BENCHMARKS-quick.md"}[*quickMode]
	}
	if *plotPath == "" {
		*plotPath = map[bool]string{false: "docs/bench-acquire.png", true: "docs/bench-acquire-quick.png"}[*quickMode]
	}
	if err := flag.Set("test.benchtime", sz.microTime.String()); err != nil {
		log.Fatal(err)
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root (it mounts FUSE and runs an ol-shim daemon with its volume plugin)")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &run{sz: sz, mode: mode, bin: *bin, image: *image, started: time.Now(), only: *only}
	err := r.all(ctx)
	if cerr := r.cleanup(); cerr != nil {
		log.Printf("cleanup: %v", cerr)
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Fatal(err)
	}
	if err := r.write(*out, *plotPath, *readme); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s and %s in %v", *out, *plotPath, time.Since(r.started).Round(time.Second))
}

// step prints progress: which group runs, and how far it is.
func step(format string, args ...any) {
	log.Printf(format, args...)
}

// fail wraps an error with what was being measured.
func fail(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
