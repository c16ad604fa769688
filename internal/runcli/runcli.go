// Package runcli is `ol-shim run` and `ol-shim --version`, the client's
// hot path, without the CLI framework or an HTTP package: the client
// (cmd/ol-shim) starts by initialising only this, the agent protocol and
// the run's wire format. Every other command, and a run whose arguments
// this parser does not take, is handed to ol-shimd beside it by exec,
// which has the whole command line (internal/clicmd) and says the same
// errors.
package runcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// Options is one `ol-shim run`.
type Options struct {
	Socket string
	// Dial, if set, connects to the daemon instead of Socket (a remote
	// one, over TLS: ol-shimd's run, which a run with --host or
	// OL_SHIM_HOST is handed to).
	Dial func(context.Context) (net.Conn, error)
	Call wire.RunCall
	// Interactive sends stdin; nil: when stdin is a pipe or a file.
	Interactive *bool
	// Hello, if set, is called with the daemon's hello (the pool and
	// sandbox the run landed in).
	Hello func(agent.Hello)
}

// Run runs the command and returns its exit code; an error is to be
// printed, with the code. It is the last thing its process does: the
// signals it forwards stay caught (and unforwarded) once it returns.
func Run(o Options) (int, error) {
	req := o.Call
	stdinTerm := term.IsTerminal(int(os.Stdin.Fd()))
	// Without -i, stdin goes along when it is a pipe or a file (not a
	// terminal, and not /dev/null, which the command gets anyway).
	interactive := !stdinTerm && !isDevNull(os.Stdin)
	if o.Interactive != nil {
		interactive = *o.Interactive
	}
	outFd := int(os.Stdout.Fd())
	if req.TTY {
		if w, h, err := term.GetSize(outFd); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
	}
	sio := agent.Stdio{Stdout: os.Stdout, Stderr: os.Stderr, Hello: o.Hello}
	if interactive {
		sio.Stdin = os.Stdin
	}
	// The start frame goes with the request: the daemon reads it once it
	// has a sandbox and upgraded the connection.
	start, err := agent.StartFrame(agent.Start{}, sio)
	if err != nil {
		return agent.CodeFailed, err
	}
	var conn io.ReadWriteCloser
	if o.Dial != nil {
		conn, err = wire.DialRunWith(context.Background(), o.Dial, req, start)
	} else {
		conn, err = wire.DialRun(context.Background(), o.Socket, req, start)
	}
	if err != nil {
		return agent.CodeFailed, err
	}
	defer conn.Close()
	// Signals go to the command, as docker run's sig-proxy does; on a
	// terminal in raw mode Ctrl-C is a byte for the remote terminal. Each
	// signal caught, and each given back, is a round trip to the runtime's
	// signal-mask thread: a terminal's size changes are caught only with a
	// terminal, and the signals stay caught after the run, the last thing
	// its process does (giving the seven back cost 0.2 ms of its exit).
	sigs := make(chan os.Signal, 16)
	caught := []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}
	if req.TTY {
		caught = append(caught, syscall.SIGWINCH)
	}
	signal.Notify(sigs, caught...)
	toSend := make(chan int, 16)
	resize := make(chan agent.Resize, 4)
	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH {
				if w, h, err := term.GetSize(outFd); err == nil && req.TTY {
					select {
					case resize <- agent.Resize{Rows: uint16(h), Cols: uint16(w)}:
					default:
					}
				}
				continue
			}
			select {
			case toSend <- int(s.(syscall.Signal)):
			default:
			}
		}
	}()
	sio.Signals, sio.Resize = toSend, resize
	if req.TTY && interactive && stdinTerm {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return agent.CodeFailed, fmt.Errorf("run: terminal raw mode: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
	}
	x, err := agent.RunStarted(context.Background(), agent.NewConn(conn), sio)
	var e *agent.Error
	switch {
	case errors.As(err, &e):
		return e.Code, errors.New(e.Message)
	case err != nil:
		return agent.CodeFailed, err
	}
	return x.Code, nil
}

// isDevNull reports whether f is the null device.
func isDevNull(f *os.File) bool {
	var st, null unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && unix.Stat(os.DevNull, &null) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}

// Check checks a run's options as the command line gives them.
func Check(o *Options, args []string, reuse, rmSet, rm bool, timeout time.Duration, timeoutSet bool) error {
	if reuse && rmSet && rm {
		return errors.New("run: --rm and --reuse: choose one")
	}
	if rmSet && !rm && !reuse {
		// docker run --rm=false keeps the container; a run's sandbox is
		// kept only by --reuse, which says what it keeps and for whom.
		return errors.New("run: --rm=false: a run's sandbox is destroyed after it unless --reuse gives it back to its pool; say --reuse")
	}
	o.Call.Reuse = reuse
	if o.Call.Pool == "" {
		if len(args) == 0 {
			return errors.New("run: name an IMAGE (or --pool)")
		}
		o.Call.Image, args = args[0], args[1:]
	}
	// No command: the image's CMD, as docker run has it (the daemon knows
	// the image, and says if it has none).
	o.Call.Cmd = args
	if timeout < 0 || (timeout == 0 && timeoutSet) {
		return fmt.Errorf("--timeout %v: want a positive duration like 30s", timeout)
	} else if timeout > 0 {
		o.Call.Timeout = timeout.String()
	}
	return nil
}

// errHandOver: the arguments are not the hot path's to parse (another
// command, help, a flag it does not know): ol-shimd takes them.
var errHandOver = errors.New("hand over to ol-shimd")

// Parse parses ol-shim's arguments (after the program name) for the hot
// path: [--socket PATH] run [FLAGS] IMAGE CMD... or --version. It returns
// errHandOver for anything else. version is true for --version.
func Parse(args []string) (o Options, version bool, err error) {
	o.Socket = wire.DefaultSocket
	if s := os.Getenv("OL_SHIM_SOCKET"); s != "" {
		o.Socket = s
	}
	host := os.Getenv("OL_SHIM_HOST")
	// Global flags: only --socket and --host (-H).
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		switch {
		case name == "version" || name == "v":
			if len(args) == 1 && !hasVal {
				return o, true, nil
			}
			return o, false, errHandOver
		case name == "socket" || name == "host" || name == "H":
			if !hasVal {
				if len(args) < 2 {
					return o, false, errHandOver
				}
				val, args = args[1], args[1:]
			}
			if name == "socket" {
				o.Socket = val
			} else {
				host = val
			}
			args = args[1:]
		default:
			return o, false, errHandOver
		}
	}
	// --host wins over --socket, as in ol-shimd. A unix:// host is a local
	// socket; a remote daemon (tcp://, mutual TLS) or anything else is
	// ol-shimd's to reach, or to refuse.
	if host != "" {
		path, ok := strings.CutPrefix(host, "unix://")
		if !ok || path == "" {
			return o, false, errHandOver
		}
		o.Socket = path
	}
	if len(args) == 0 {
		return o, false, errHandOver
	}
	if args[0] != "run" {
		return o, false, errHandOver
	}
	args = args[1:]
	var (
		reuse, rm, rmSet, timeoutSet bool
		timeout                      time.Duration
	)
	rm = true
	boolVal := func(val string, hasVal bool) (bool, error) {
		if !hasVal {
			return true, nil
		}
		switch val {
		case "true", "1", "t", "T", "TRUE", "True":
			return true, nil
		case "false", "0", "f", "F", "FALSE", "False":
			return false, nil
		}
		return false, errHandOver
	}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			args = args[1:]
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		dashes := 1
		if strings.HasPrefix(a, "--") {
			dashes = 2
		}
		name, val, hasVal := strings.Cut(a[dashes:], "=")
		// Short options may be combined (-it): each a bool flag.
		if dashes == 1 && len(name) > 1 && !hasVal && allShortBools(name) {
			for _, c := range name {
				switch c {
				case 'i':
					t := true
					o.Interactive = &t
				case 't':
					o.Call.TTY = true
				}
			}
			args = args[1:]
			continue
		}
		str := func() (string, error) {
			if hasVal {
				args = args[1:]
				return val, nil
			}
			if len(args) < 2 {
				return "", errHandOver
			}
			v := args[1]
			args = args[2:]
			return v, nil
		}
		var err error
		switch name {
		case "pool":
			o.Call.Pool, err = str()
		case "entrypoint":
			var v string
			if v, err = str(); err == nil {
				o.Call.Entrypoint = Entrypoint(v)
			}
		case "workdir", "w":
			o.Call.WorkingDir, err = str()
		case "user", "u":
			o.Call.User, err = str()
		case "env", "e":
			var v string
			if v, err = str(); err == nil {
				o.Call.Env = append(o.Call.Env, v)
			}
		case "timeout":
			var v string
			if v, err = str(); err == nil {
				timeoutSet = true
				if timeout, err = time.ParseDuration(v); err != nil {
					err = errHandOver
				}
			}
		case "reuse", "rm", "interactive", "i", "tty", "t":
			var b bool
			if b, err = boolVal(val, hasVal); err == nil {
				args = args[1:]
				switch name {
				case "reuse":
					reuse = b
				case "rm":
					rm, rmSet = b, true
				case "interactive", "i":
					o.Interactive = &b
				case "tty", "t":
					o.Call.TTY = b
				}
			}
		default:
			err = errHandOver // --help, an unknown flag: ol-shimd says it
		}
		if err != nil {
			return o, false, err
		}
	}
	if err := Check(&o, args, reuse, rmSet, rm, timeout, timeoutSet); err != nil {
		return o, false, err
	}
	return o, false, nil
}

// allShortBools reports whether every letter of s is a short bool flag of
// run.
func allShortBools(s string) bool {
	for _, c := range s {
		if c != 'i' && c != 't' {
			return false
		}
	}
	return true
}

// Main is cmd/ol-shim's main: the hot path, or ol-shimd for the rest
// (handOver execs it and returns only on failure). version is printed as
// "ol-shim version VERSION".
func Main(args []string, version string, handOver func() error) int {
	o, isVersion, err := Parse(args)
	switch {
	case errors.Is(err, errHandOver):
		err = handOver()
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
		return agent.CodeFailed
	case err != nil:
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
		return agent.CodeFailed
	case isVersion:
		fmt.Printf("ol-shim version %s\n", version)
		return 0
	}
	code, err := Run(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
	}
	return code
}

// DaemonBinary is the program with the whole command line, next to the
// client.
const DaemonBinary = "ol-shimd"

// HandOver execs ol-shimd (next to this program, symlinks resolved, so the
// docker-ol plugin link finds it too; else on PATH) with this process's
// arguments. It returns only on failure.
func HandOver() error {
	path := ""
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		p := filepath.Join(filepath.Dir(self), DaemonBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			path = p
		}
	}
	if path == "" {
		p, err := exec.LookPath(DaemonBinary)
		if err != nil {
			return fmt.Errorf("%s: the program with ol-shim's other commands is neither next to this one nor on PATH (make install puts both in place)", DaemonBinary)
		}
		path = p
	}
	err := syscall.Exec(path, os.Args, os.Environ())
	return fmt.Errorf("exec %s: %v", path, err)
}

// PluginName is the client's name as a Docker CLI plugin ("docker ol").
const PluginName = "docker-ol"

// dockerValueFlags are the docker CLI's global options that take a value.
var dockerValueFlags = map[string]bool{"--config": true, "-c": true, "--context": true, "-H": true, "--host": true,
	"-l": true, "--log-level": true, "--tlscacert": true, "--tlscert": true, "--tlskey": true}

// PluginArgs returns ol-shim's own arguments from a Docker CLI plugin's:
// the docker CLI calls it as `docker-ol [GLOBAL OPTIONS] ol [ARGS]`, and
// its global options (-D, --context NAME, -H HOST, ...) are Docker's, never
// ol-shim's. Arguments not in that form are returned as they are.
func PluginArgs(args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "ol":
			return args[i+1:]
		case !strings.HasPrefix(a, "-"):
			return args
		case dockerValueFlags[a]:
			i++ // its value
		}
	}
	return args
}

// PluginMetadata writes the Docker CLI plugin protocol's metadata answer.
func PluginMetadata(w io.Writer, version string) error {
	return json.NewEncoder(w).Encode(struct {
		SchemaVersion    string
		Vendor           string
		Version          string
		ShortDescription string
		URL              string
	}{"0.1.0", "ol-shim", version, "Run commands in warm sandboxes from ol-shim's pools", "https://github.com/open-lambda/ol-shim"})
}

// Entrypoint is the run's entrypoint for docker run's --entrypoint v: the
// program v (no arguments of its own), or none for "".
func Entrypoint(v string) *[]string {
	ep := []string{}
	if v != "" {
		ep = append(ep, v)
	}
	return &ep
}
