// Command vmexec runs in the end-to-end test's VM (hack/vm-image.sh) and
// runs the shell scripts the test sends it over a virtio-serial port: one
// JSON request per line ({"id": N, "script": "...", "timeout": seconds}),
// one JSON answer per line ({"id": N, "out": base64 of stdout and stderr,
// "code": exit status}). It is the VM's `docker exec`: the same test code drives the
// Docker-in-Docker host and the VM.
//
//	vmexec /dev/virtio-ports/ol.exec
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

type request struct {
	ID      int    `json:"id"`
	Script  string `json:"script"`
	Timeout int    `json:"timeout"` // seconds; 0: 600
}

type answer struct {
	ID   int    `json:"id"`
	Out  []byte `json:"out"`
	Code int    `json:"code"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vmexec PORT")
		os.Exit(2)
	}
	for {
		if err := serve(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "vmexec:", err)
		}
		// The host has not connected yet, or went away: wait for it.
		time.Sleep(200 * time.Millisecond)
	}
}

// serve answers requests on port until it reads EOF.
func serve(port string) error {
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	in := bufio.NewReader(f)
	enc := json.NewEncoder(f)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return err
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			enc.Encode(answer{Out: []byte(fmt.Sprintf("vmexec: bad request: %v\n", err)), Code: 125})
			continue
		}
		a := run(req)
		a.ID = req.ID
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
}

func run(req request) answer {
	timeout := time.Duration(req.Timeout) * time.Second
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", req.Script)
	cmd.Dir = "/"
	// A script may leave a daemon behind holding its output open: stop
	// waiting for it once the script itself is done.
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return answer{Out: out, Code: 0}
	case ctx.Err() != nil:
		return answer{Out: append(out, fmt.Sprintf("\nvmexec: killed after %v\n", timeout)...), Code: 124}
	case errors.As(err, &ee):
		return answer{Out: out, Code: ee.ExitCode()}
	default:
		return answer{Out: append(out, err.Error()...), Code: 125}
	}
}
