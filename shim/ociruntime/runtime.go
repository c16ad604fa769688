package ociruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// Args is a runc command line: the global flags, the command, and what
// follows it.
type Args struct {
	Root          string // --root: where runc keeps containers' state
	Log           string // --log
	LogFormat     string // --log-format: text or json
	SystemdCgroup bool   // --systemd-cgroup
	Command       string // "create", "pause", ... ("" if none)
	Rest          []string
	// Socket is ol-shimd's API socket (--ol-shim-socket, which
	// daemon.json's runtimeArgs can pass; not runc's).
	Socket string
	// Runc is the command line to hand runc: the runtime's own, without
	// its own flags.
	Runc []string
}

// DefaultRoot is runc's --root where the engine names none.
const DefaultRoot = "/run/runc"

// boolFlags and valueFlags are runc's global flags.
var (
	boolFlags  = map[string]bool{"debug": true, "systemd-cgroup": true, "help": true, "h": true, "version": true, "v": true}
	valueFlags = map[string]bool{"log": true, "log-format": true, "root": true, "criu": true, "rootless": true, "ol-shim-socket": true}
)

// Parse reads a runc command line (without the program's name). Flags it
// does not know make it stop: the caller hands such a line to runc.
func Parse(argv []string) (Args, error) {
	a := Args{Root: DefaultRoot, LogFormat: "text", Socket: wire.DefaultSocket}
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			a.Command, a.Rest = arg, argv[i+1:]
			a.Runc = append(a.Runc, argv[i:]...)
			return a, nil
		}
		start := i
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch {
		case boolFlags[name]:
			if name == "systemd-cgroup" {
				a.SystemdCgroup = !hasValue || value == "true"
			}
			if name == "help" || name == "h" || name == "version" || name == "v" {
				a.Command = "--" + name
			}
		case valueFlags[name]:
			if !hasValue {
				if i+1 >= len(argv) {
					return a, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				value = argv[i]
			}
			switch name {
			case "ol-shim-socket":
				a.Socket = value
				continue
			case "root":
				a.Root = value
			case "log":
				a.Log = value
			case "log-format":
				a.LogFormat = value
			}
		default:
			return a, fmt.Errorf("flag provided but not defined: %s", arg)
		}
		a.Runc = append(a.Runc, argv[start:i+1]...)
	}
	return a, nil
}

// idRE is runc's container ID.
var idRE = regexp.MustCompile(`^[\w+\-.]+$`)

// validID reports whether id is a container id the runtime can keep a
// directory for, as runc's own check: idRE's characters, not "." or
// "..", and a file name's length at most.
func validID(id string) bool {
	return idRE.MatchString(id) && id != "." && id != ".." && len(id) <= 255
}

// maxState bounds runc's state file.
const maxState = 4 << 20

// ErrNoState: the container's state could not be read as runc's; the
// caller hands the command to runc.
var ErrNoState = errors.New("no runc state to read")

// freezerOf returns the freezer of container id under root: the v1
// freezer cgroup's directory, or the v2 cgroup's, and whether it is v2.
func freezerOf(root, id string) (dir string, v2 bool, err error) {
	if !validID(id) {
		return "", false, fmt.Errorf("container id %.80q: %w: not a runc id", id, ErrNoState)
	}
	if !filepath.IsAbs(root) {
		return "", false, fmt.Errorf("root %q: %w: not absolute", root, ErrNoState)
	}
	path := filepath.Join(root, id, "state.json")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w (%w)", path, ErrNoState, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Size > maxState {
		return "", false, fmt.Errorf("%s: %w: not a regular file of root's of at most %d bytes", path, ErrNoState, maxState)
	}
	var state struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.NewDecoder(io.LimitReader(f, maxState)).Decode(&state); err != nil {
		return "", false, fmt.Errorf("%s: %w: %v", path, ErrNoState, err)
	}
	clean := func(p string) bool {
		return p != "" && filepath.Clean(p) == p && strings.HasPrefix(p, "/sys/fs/cgroup/") && !strings.Contains(p, "/../")
	}
	if p := state.CgroupPaths["freezer"]; clean(p) {
		return p, false, nil
	}
	if p := state.CgroupPaths[""]; clean(p) {
		if _, err := os.Stat(filepath.Join(p, "cgroup.freeze")); err == nil {
			return p, true, nil
		}
	}
	return "", false, fmt.Errorf("%s: %w: no freezer among its cgroups", path, ErrNoState)
}

// settleWithin bounds the wait for a freezer to settle.
const settleWithin = 10 * time.Second

// Freeze freezes (or thaws) container id's cgroup and waits until the
// kernel reports it frozen (thawed). ErrNoState means nothing was written.
func Freeze(root, id string, freeze bool) error {
	dir, v2, err := freezerOf(root, id)
	if err != nil {
		return err
	}
	if v2 {
		return setV2(dir, freeze)
	}
	return setV1(dir, freeze)
}

func setV1(dir string, freeze bool) error {
	file := filepath.Join(dir, "freezer.state")
	want := "THAWED"
	if freeze {
		want = "FROZEN"
	}
	deadline := time.Now().Add(settleWithin)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 10*time.Millisecond) {
		if err := os.WriteFile(file, []byte(want), 0); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if strings.TrimSpace(string(b)) == want {
			return nil
		}
		if time.Now().After(deadline) {
			if freeze { // as runc does: a freeze that does not settle is undone
				os.WriteFile(file, []byte("THAWED"), 0)
			}
			return fmt.Errorf("%s: still %s after %v", file, strings.TrimSpace(string(b)), settleWithin)
		}
		time.Sleep(wait)
	}
}

func setV2(dir string, freeze bool) error {
	file, events := filepath.Join(dir, "cgroup.freeze"), filepath.Join(dir, "cgroup.events")
	val, want := "0", "frozen 0"
	if freeze {
		val, want = "1", "frozen 1"
	}
	if err := os.WriteFile(file, []byte(val), 0); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	deadline := time.Now().Add(settleWithin)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 10*time.Millisecond) {
		b, err := os.ReadFile(events)
		if err != nil {
			return fmt.Errorf("%s: %w", events, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if freeze {
				os.WriteFile(file, []byte("0"), 0)
			}
			return fmt.Errorf("%s: not %q after %v", events, want, settleWithin)
		}
		time.Sleep(wait)
	}
}

// Runc returns the runc the runtime hands commands to: $OL_SHIM_RUNC,
// else the first runc on PATH, else /usr/sbin/runc, /usr/bin/runc.
func Runc() (string, error) {
	if p := os.Getenv("OL_SHIM_RUNC"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("runc"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("runc not found (set OL_SHIM_RUNC, or put runc on PATH)")
}

// HandOver execs runc with argv (the runtime's own arguments), in this
// process: it returns only on failure.
func HandOver(argv []string) error {
	runc, err := Runc()
	if err != nil {
		return err
	}
	return syscall.Exec(runc, append([]string{"runc"}, argv...), os.Environ())
}

// LogError writes msg where runc would: stderr, and a's --log file in its
// format.
func LogError(a Args, msg string) {
	fmt.Fprintln(os.Stderr, msg)
	logTo(a, "error", msg)
}

// LogInfo writes msg to a's --log file only.
func LogInfo(a Args, msg string) { logTo(a, "info", msg) }

func logTo(a Args, level, msg string) {
	if a.Log == "" {
		return
	}
	f, err := os.OpenFile(a.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if a.LogFormat == "json" {
		b, _ := json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, now})
		f.Write(append(b, '\n'))
		return
	}
	fmt.Fprintf(f, "time=%q level=%s msg=%q\n", now, level, msg)
}

// IsNoState reports whether err means nothing was written: the command
// goes to runc.
func IsNoState(err error) bool { return errors.Is(err, ErrNoState) }
