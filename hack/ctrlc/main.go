// Command ctrlc checks what the README promises of `make run`: Ctrl-C stops
// ol-shim first, cleanly, and only then the dockerd that the target started.
// It runs hack/with-docker.sh around a command that, on SIGINT, waits a
// moment and reports whether dockerd still answers; it starts them in a
// process group of their own, as a terminal's foreground job is, and sends
// SIGINT to the whole group once dockerd answers, as Ctrl-C does. It needs
// root and no dockerd running: with-docker.sh must be the one to start it.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ctrlc: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("ctrlc: Ctrl-C reached the command while dockerd kept answering; dockerd stopped after the command")
}

func answers() bool { return exec.Command("docker", "info").Run() == nil }

func run() error {
	if answers() {
		if os.Getenv("CI") != "" {
			return fmt.Errorf("a dockerd already answers: stop it first (with-docker.sh must start its own)")
		}
		fmt.Println("ctrlc: skipped: a dockerd already answers, and with-docker.sh must start its own (CI fails here instead)")
		os.Exit(0)
	}
	// Catching SIGINT here makes it default (not ignored) in the children,
	// even where this program was started with it ignored.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT)
	cmd := exec.Command("bash", "hack/with-docker.sh", "sh", "-c",
		// (The sleep in the background ignores SIGINT, as background jobs of
		// a shell without job control do: the trap stops it, and it holds
		// none of the output pipes.)
		`trap 'kill $p; sleep 3; if docker info >/dev/null 2>&1; then echo DOCKER-STILL-UP; else echo DOCKER-DOWN; fi; exit 0' INT; sleep 300 </dev/null >/dev/null 2>&1 & p=$!; wait`)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !answers() {
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return fmt.Errorf("dockerd did not answer within 2 minutes:\n%s", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("with-docker.sh did not end within 3 minutes of SIGINT:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "DOCKER-STILL-UP") {
		return fmt.Errorf("the command saw dockerd gone right after Ctrl-C (it got the signal too):\n%s", out.String())
	}
	if answers() {
		return fmt.Errorf("dockerd still answers after with-docker.sh ended:\n%s", out.String())
	}
	return nil
}
