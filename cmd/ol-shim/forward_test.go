package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// build builds the client into a new directory, with ol-shimd beside it
// when daemon is true.
func build(t *testing.T, daemon bool) string {
	t.Helper()
	dir := t.TempDir()
	pkgs := []string{"."}
	if daemon {
		pkgs = append(pkgs, "../ol-shimd")
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "ol-shim")
}

// TestDaemonCommandsHandedOn: ol-shim runs a daemon command as ol-shimd in
// the same process (a supervisor's PID stays right), and says what is
// missing when ol-shimd is not there.
func TestDaemonCommandsHandedOn(t *testing.T) {
	bin := build(t, true)
	out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--config") {
		t.Fatalf("ol-shim serve --help: %v\n%s", err, out)
	}

	// init's command prints its parent's PID: ol-shimd's, which must be
	// the PID of the ol-shim process started here.
	var stdout bytes.Buffer
	cmd := exec.Command(bin, "init", "--", "/bin/sh", "-c", "echo $PPID")
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("ol-shim init -- sh: %v", err)
	}
	if got := strings.TrimSpace(stdout.String()); got != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("init's child's parent is %s, want the ol-shim process %d", got, cmd.Process.Pid)
	}

	alone := build(t, false)
	t.Setenv("PATH", "/nonexistent")
	out, err = exec.Command(alone, "serve").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(string(out), "ol-shimd: the program with ol-shim's other commands is neither next to") {
		t.Errorf("ol-shim serve without ol-shimd: %v\n%s", err, out)
	}
	// The hot path needs no ol-shimd: --version, and a run (here one
	// whose daemon is not there, which it says). `ol-shim version`, the
	// client's and the server's, is ol-shimd's.
	if out, err := exec.Command(alone, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "ol-shim version ") {
		t.Errorf("ol-shim --version without ol-shimd: %v\n%s", err, out)
	}
	out, err = exec.Command(alone, "--socket", "/nonexistent/ol-shim.sock", "run", "--pool", "p", "true").CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(string(out), "ol-shim daemon unreachable at /nonexistent/ol-shim.sock") {
		t.Errorf("ol-shim run with no daemon: %v\n%s", err, out)
	}
}

// TestOtherCommandsHandedOn: status, pool and help are ol-shimd's, reached
// through ol-shim with the same arguments (the socket flag too).
func TestOtherCommandsHandedOn(t *testing.T) {
	bin := build(t, true)
	out, err := exec.Command(bin, "--socket", "/nonexistent/x.sock", "status").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/x.sock") {
		t.Errorf("ol-shim --socket X status: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "status") || !strings.Contains(string(out), "pool") {
		t.Errorf("ol-shim --help: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "run", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--reuse") {
		t.Errorf("ol-shim run --help: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "run", "--no-such-flag", "x", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no-such-flag") {
		t.Errorf("ol-shim run --no-such-flag: %v\n%s", err, out)
	}
}

// TestClientIsLean: the client links neither the CLI framework nor an HTTP
// package (their package inits are what made it slow to start).
func TestClientIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "net/http" || pkg == "crypto/tls" || strings.HasPrefix(pkg, "github.com/urfave/cli") || strings.HasPrefix(pkg, "github.com/moby/") {
			t.Errorf("ol-shim links %s", pkg)
		}
	}
}

// TestUsageErrorsExit125: every usage error exits 125, as docker's own
// errors do, and says what was wrong: an unknown command or flag, a
// missing or malformed argument, in the client's own commands (run) and in
// those it hands to ol-shimd.
func TestUsageErrorsExit125(t *testing.T) {
	bin := build(t, true)
	for _, args := range [][]string{
		{"nosuch"}, {"status", "--bogus"}, {"pool", "rm"}, {"pool", "create"}, {"pool", "warm", "fn", "many"},
		{"pool", "ls", "--bogus"}, {"volume", "grow"}, {"completion", "tcsh"}, {"run"}, {"run", "--bogus", "img"},
	} {
		cmd := exec.Command(bin, append([]string{"--socket", "/nonexistent/ol-shim.sock"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.HasPrefix(stderr.String(), "ol-shim: ") {
			t.Errorf("ol-shim %s: %v, stderr %q; want exit 125 and the reason", strings.Join(args, " "), err, stderr.String())
		}
	}
}

// TestCompletionWords: zsh's completion (urfave/cli's) asks the program
// for the words that may come next: a command's subcommands, or the flags
// that start with what was typed.
func TestCompletionWords(t *testing.T) {
	bin := build(t, true)
	out, err := exec.Command(bin, "pool", "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(out), "inspect\n") || !strings.Contains(string(out), "create\n") {
		t.Errorf("words after pool: %v: %q", err, out)
	}
	out, err = exec.Command(bin, "pool", "create", "--pids", "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(out), "--pids-limit") {
		t.Errorf("flags of pool create starting --pids: %v: %q", err, out)
	}
}
