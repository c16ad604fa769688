package ociruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/open-lambda/ol-shim/internal/runcli"
	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// docker exec into a served container: containerd's shim runs
// `runtime exec --process FILE --detach --pid-file FILE [--console-socket
// S] ID`, then waits for the pid it was given, as a child of its own (it is
// the subreaper), for the exec's exit. For a served container the runtime
// starts an exec relay: a process that asks ol-shimd to run the process in
// the sandbox that serves the container (its relay recorded which), beside
// the container's command, with the exec's stdio, and exits with the
// command's code. ol-shimd runs it only while the container's own run
// holds the sandbox; when that run ends, every exec of it is cut off.

// execRelayCommand is the hidden command an exec relay runs as; the run's
// request comes on descriptor 3.
const execRelayCommand = "__ol-shim-exec"

// IsExecRelay reports whether argv is an exec relay's.
func IsExecRelay(argv []string) bool { return len(argv) == 2 && argv[0] == execRelayCommand }

// execArgs are exec's own flags.
type execArgs struct {
	id, process, pidFile, console string
	detach                        bool
}

// execValueFlags are runc exec's flags that take a value; execOnlyRunc of
// them say what --process says, which a served exec takes from --process
// alone.
var (
	execValueFlags = map[string]bool{"process": true, "p": true, "pid-file": true, "console-socket": true, "cwd": true,
		"env": true, "e": true, "user": true, "u": true, "additional-gids": true, "g": true, "process-label": true,
		"apparmor": true, "cap": true, "c": true, "preserve-fds": true, "cgroup": true}
	execOnlyRunc = map[string]bool{"cwd": true, "env": true, "e": true, "user": true, "u": true, "additional-gids": true,
		"g": true, "process-label": true, "apparmor": true, "cap": true, "c": true, "preserve-fds": true, "cgroup": true}
)

func parseExec(rest []string) (execArgs, error) {
	var e execArgs
	var unserved []string
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			if e.id == "" {
				e.id = arg
				continue
			}
			unserved = append(unserved, "a command after the id")
			break
		}
		name, value, has := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if execValueFlags[name] && !has {
			if i+1 >= len(rest) {
				return e, fmt.Errorf("exec: flag %s needs a value", arg)
			}
			i++
			value = rest[i]
		}
		switch {
		case name == "process" || name == "p":
			e.process = value
		case name == "pid-file":
			e.pidFile = value
		case name == "console-socket":
			e.console = value
		case name == "detach" || name == "d":
			e.detach = !has || value == "true"
		case name == "tty" || name == "t", name == "no-new-privs", name == "ignore-paused":
		case execOnlyRunc[name]:
			unserved = append(unserved, "--"+name)
		default:
			unserved = append(unserved, "--"+name)
		}
	}
	switch {
	case e.id == "":
		return e, errors.New("exec: no container id")
	case len(unserved) > 0:
		return e, fmt.Errorf("exec: %s: not supported for a container served from a pool of ol-shim (give the process with --process)", strings.Join(unserved, ", "))
	case e.process == "":
		return e, errors.New("exec: no --process: not supported for a container served from a pool of ol-shim")
	}
	return e, nil
}

// processSpec is what an exec reads of its process file (an OCI process).
type processSpec struct {
	Terminal bool     `json:"terminal"`
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	User     struct {
		UID uint32 `json:"uid"`
		GID uint32 `json:"gid"`
	} `json:"user"`
}

// readProcess reads an exec's process file, as readSpec a bundle's.
func readProcess(path string) (*processSpec, error) {
	var p processSpec
	if err := readJSONFile(path, &p); err != nil {
		return nil, err
	}
	if len(p.Args) == 0 || p.Args[0] == "" {
		return nil, fmt.Errorf("%s: no args", path)
	}
	return &p, nil
}

// sandboxWait bounds how long an exec waits for a container just started
// to have its sandbox.
const sandboxWait = 10 * time.Second

// exec runs an exec of a served container (see above).
func (st *served) exec(a Args) error {
	e, err := parseExec(a.Rest)
	if err != nil {
		return err
	}
	p, err := readProcess(e.process)
	if err != nil {
		return err
	}
	if p.Terminal && e.console == "" {
		return errors.New("exec: a terminal and no console socket")
	}
	for deadline := time.Now().Add(sandboxWait); st.Sandbox == ""; time.Sleep(5 * time.Millisecond) {
		if !st.alive() {
			return fmt.Errorf("exec: container %s is not running", st.ID)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("exec: container %s has no sandbox yet (not started?)", st.ID)
		}
		if cur, ok := loadServed(a.Root, st.ID); ok {
			*st = *cur
		}
	}
	if !st.alive() {
		return fmt.Errorf("exec: container %s is not running", st.ID)
	}
	req := wire.RunRequest{Sandbox: st.Sandbox, Cmd: p.Args, Env: p.Env, WorkingDir: p.Cwd,
		User: fmt.Sprintf("%d:%d", p.User.UID, p.User.GID), TTY: p.Terminal}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return err
	}
	defer rd.Close()
	relay := exec.Command(self, execRelayCommand, st.Socket)
	relay.Stdin, relay.Stdout, relay.Stderr = os.Stdin, os.Stdout, os.Stderr
	relay.ExtraFiles = []*os.File{rd}
	relay.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.Terminal {
		master, tty, err := pty.Open()
		if err != nil {
			wr.Close()
			return err
		}
		defer tty.Close()
		defer master.Close()
		relay.Stdin, relay.Stdout, relay.Stderr = tty, tty, tty
		relay.SysProcAttr.Setctty = true
		relay.SysProcAttr.Ctty = 0
		if err := sendConsole(e.console, master); err != nil {
			wr.Close()
			return fmt.Errorf("console socket %s: %w", e.console, err)
		}
	}
	if err := relay.Start(); err != nil {
		wr.Close()
		return err
	}
	// The request is at most a few MiB (maxConfig bounds the process
	// file); the pipe's reader is the relay, which reads it first.
	_, werr := wr.Write(body)
	wr.Close()
	if werr != nil {
		relay.Process.Kill()
		relay.Wait()
		return fmt.Errorf("exec: hand the process to its relay: %w", werr)
	}
	if e.pidFile != "" {
		if err := writeAtomic(e.pidFile, []byte(fmt.Sprint(relay.Process.Pid))); err != nil {
			relay.Process.Kill()
			relay.Wait()
			return err
		}
	}
	if e.detach {
		relay.Process.Release() // the engine's shim, our parent and subreaper, reaps it
		return nil
	}
	err = relay.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	return err
}

// ExecRelay is an exec's process: it runs the request on descriptor 3 in
// its sandbox, through ol-shimd's API at argv[1], and returns the exit
// code.
func ExecRelay(argv []string) int {
	f := os.NewFile(3, "request")
	var req wire.RunRequest
	err := json.NewDecoder(io.LimitReader(f, 2*maxConfig)).Decode(&req)
	f.Close()
	if err != nil || req.Sandbox == "" {
		fmt.Fprintf(os.Stderr, "ol-shim-runtime: exec relay: request: %v\n", err)
		return 125
	}
	var interactive *bool
	if req.TTY {
		yes := true
		interactive = &yes
	}
	code, err := runcli.Run(runcli.Options{Socket: argv[1], Call: wire.RunCall{RunRequest: req}, Interactive: interactive})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
	}
	return code
}
