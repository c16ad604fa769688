package ociruntime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/internal/runcli"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api/wire"
)

// Serving a container from a pool.
//
// At create, a container whose bundle needs nothing a warm sandbox lacks
// (no mounts but the engine's own, a process to run) is offered to
// ol-shimd, which looks at dockerd's record of it (network none, no
// volume, device or added capability, an image with a pool) and answers
// serve or not. Served, the runtime keeps its own state beside runc's
// (ROOT/ID/ol-shim.json), and starts a relay: a process of its own (the
// container's "init" for the engine: its pid goes in --pid-file, the
// engine's shim reaps it) that holds the container's stdio (or a terminal
// whose master went to --console-socket) and waits for start. At start it
// runs the bundle's process (args, env, cwd, uid:gid, terminal) in a warm
// sandbox of the pool through ol-shimd, as `ol-shim run` does, relaying
// stdio and signals, and exits with the command's code. kill signals the
// relay (which hands the signal to the command), state and ps report it,
// delete removes the state. Anything else, or an ol-shimd that does not
// answer within CheckTimeout, goes to runc.

// CheckTimeout bounds create's question to ol-shimd: past it the
// container goes to runc.
const CheckTimeout = time.Second

// stateName is the runtime's own state of a served container, in runc's
// directory of it.
const stateName = "ol-shim.json"

// served is what the runtime keeps of a container it serves.
type served struct {
	ID         string    `json:"id"`
	Bundle     string    `json:"bundle"`
	Image      string    `json:"image"`
	Socket     string    `json:"socket"`
	Relay      int       `json:"relay"`
	RelayStart uint64    `json:"relay_start"`
	Created    time.Time `json:"created"`
	// Sandbox serves it, once its relay runs (docker exec runs there).
	Sandbox string `json:"sandbox,omitempty"`
}

// spec is what the runtime reads of a bundle's config.json.
type spec struct {
	Process *struct {
		Terminal bool     `json:"terminal"`
		Args     []string `json:"args"`
		Env      []string `json:"env"`
		Cwd      string   `json:"cwd"`
		User     struct {
			UID uint32 `json:"uid"`
			GID uint32 `json:"gid"`
		} `json:"user"`
	} `json:"process"`
	Mounts []struct {
		Destination string `json:"destination"`
	} `json:"mounts"`
}

// maxConfig bounds a bundle's config.json.
const maxConfig = 16 << 20

// engineMounts are the mounts an engine gives every container: a bundle
// with only these needs nothing a sandbox lacks.
var engineMounts = map[string]bool{"/proc": true, "/dev": true, "/dev/pts": true, "/sys": true, "/sys/fs/cgroup": true,
	"/dev/mqueue": true, "/dev/shm": true, "/etc/resolv.conf": true, "/etc/hostname": true, "/etc/hosts": true}

// readSpec reads bundle's config.json.
func readSpec(bundle string) (*spec, error) {
	var s spec
	if err := readJSONFile(filepath.Join(bundle, "config.json"), &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// readJSONFile decodes the engine's JSON file at path into v: a regular
// file of at most maxConfig bytes. O_NONBLOCK: a FIFO there would
// otherwise hold the open until something writes to it; it is then
// refused as not a regular file.
func readJSONFile(path string, v any) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxConfig {
		return fmt.Errorf("%s: not a regular file of at most %d bytes", path, maxConfig)
	}
	if err := json.NewDecoder(io.LimitReader(f, maxConfig)).Decode(v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// createArgs are create's own flags.
type createArgs struct {
	bundle, pidFile, console, id string
}

func parseCreate(rest []string) (createArgs, error) {
	c := createArgs{bundle: "."}
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		if !strings.HasPrefix(arg, "-") {
			if c.id != "" {
				return c, fmt.Errorf("create: more than one container id")
			}
			c.id = arg
			continue
		}
		name, value, has := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch name {
		case "bundle", "b", "pid-file", "console-socket":
			if !has {
				if i+1 >= len(rest) {
					return c, fmt.Errorf("create: flag %s needs a value", arg)
				}
				i++
				value = rest[i]
			}
			switch name {
			case "bundle", "b":
				c.bundle = value
			case "pid-file":
				c.pidFile = value
			case "console-socket":
				c.console = value
			}
		case "no-pivot", "no-new-keyring":
		default:
			return c, fmt.Errorf("create: flag %s: not served", arg)
		}
	}
	if c.id == "" {
		return c, errors.New("create: no container id")
	}
	return c, nil
}

// TryCreate serves create from a pool if it can: it reports false (and
// why) when the container is to go to runc, having changed nothing.
func TryCreate(a Args) (bool, string, error) {
	c, err := parseCreate(a.Rest)
	if err != nil {
		return false, err.Error(), nil
	}
	if !validID(c.id) || !filepath.IsAbs(a.Root) {
		return false, "not a container id of its own", nil
	}
	bundle, err := filepath.Abs(c.bundle)
	if err != nil {
		return false, err.Error(), nil
	}
	s, err := readSpec(bundle)
	if err != nil {
		return false, err.Error(), nil
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return false, "no process", nil
	}
	for _, m := range s.Mounts {
		if !engineMounts[m.Destination] {
			return false, "mount at " + m.Destination, nil
		}
	}
	if s.Process.Terminal && c.console == "" {
		return false, "a terminal and no console socket", nil
	}
	socket := a.Socket
	check, err := askServe(socket, c.id, processUser(s))
	if err != nil {
		return false, fmt.Sprintf("ol-shimd at %s: %v", socket, err), nil
	}
	if !check.Serve {
		return false, check.Why, nil
	}
	dir := filepath.Join(a.Root, c.id)
	if err := os.MkdirAll(a.Root, 0o711); err != nil {
		return true, "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return true, "", fmt.Errorf("container %s: %w", c.id, err)
	}
	fail := func(err error) (bool, string, error) {
		os.RemoveAll(dir)
		return true, "", err
	}
	if err := unix.Mkfifo(filepath.Join(dir, "start.fifo"), 0o600); err != nil {
		return fail(err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	relay := exec.Command(self, relayCommand, a.Root, c.id)
	relay.Stdin, relay.Stdout, relay.Stderr = os.Stdin, os.Stdout, os.Stderr
	relay.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var master *os.File
	if s.Process.Terminal {
		m, tty, err := pty.Open()
		if err != nil {
			return fail(err)
		}
		defer tty.Close()
		master = m
		defer master.Close()
		relay.Stdin, relay.Stdout, relay.Stderr = tty, tty, tty
		relay.SysProcAttr.Setctty = true
		relay.SysProcAttr.Ctty = 0
		if err := sendConsole(c.console, master); err != nil {
			return fail(fmt.Errorf("console socket %s: %w", c.console, err))
		}
	}
	st := served{ID: c.id, Bundle: bundle, Image: check.Image, Socket: socket, Created: time.Now().UTC()}
	if err := relay.Start(); err != nil {
		return fail(err)
	}
	st.Relay = relay.Process.Pid
	st.RelayStart, _ = startTime(st.Relay)
	if err := saveState(dir, st); err != nil {
		relay.Process.Kill()
		return fail(err)
	}
	if c.pidFile != "" {
		if err := writeAtomic(c.pidFile, []byte(strconv.Itoa(st.Relay))); err != nil {
			relay.Process.Kill()
			return fail(err)
		}
	}
	relay.Process.Release() // the engine's shim, our parent and subreaper, reaps it
	return true, "", nil
}

// sendConsole sends a terminal's master to the engine's console socket,
// as runc does.
func sendConsole(path string, master *os.File) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	_, _, err = uc.WriteMsgUnix([]byte(master.Name()), unix.UnixRights(int(master.Fd())), nil)
	return err
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".ol-shim.tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func saveState(dir string, st served) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, stateName), b)
}

// loadServed reads the runtime's state of container id under root, if it
// serves it: a regular file of root's, not a symlink.
func loadServed(root, id string) (*served, bool) {
	if !validID(id) || !filepath.IsAbs(root) {
		return nil, false
	}
	path := filepath.Join(root, id, stateName)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var fst unix.Stat_t
	if unix.Fstat(fd, &fst) != nil || fst.Mode&unix.S_IFMT != unix.S_IFREG || fst.Uid != 0 || fst.Size > 1<<20 {
		return nil, false
	}
	var st served
	if json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&st) != nil || st.ID != id || st.Relay <= 1 {
		return nil, false
	}
	return &st, true
}

// startTime is /proc/PID/stat's start time of pid.
func startTime(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// alive reports whether st's relay still runs (the same process).
func (st *served) alive() bool {
	t, ok := startTime(st.Relay)
	return ok && t == st.RelayStart
}

// status is runc's word for st's state.
func (st *served) status(root string) string {
	switch {
	case !st.alive():
		return "stopped"
	case fileExists(filepath.Join(root, st.ID, "start.fifo")):
		return "created"
	default:
		return "running"
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// askServe asks ol-shimd whether to serve container id, over its API
// socket, within CheckTimeout.
func askServe(socket, id, user string) (check struct {
	Serve bool   `json:"serve"`
	Image string `json:"image"`
	Pool  string `json:"pool"`
	Why   string `json:"why"`
}, err error) {
	c, err := net.DialTimeout("unix", socket, CheckTimeout)
	if err != nil {
		return check, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(CheckTimeout))
	body, _ := json.Marshal(struct {
		ID   string `json:"id"`
		User string `json:"user"`
	}{id, user})
	fmt.Fprintf(c, "POST /v1/runtime/check HTTP/1.1\r\nHost: ol-shim\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(io.LimitReader(c, 64<<10))
	line, err := br.ReadString('\n')
	if err != nil {
		return check, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return check, fmt.Errorf("answer %q", strings.TrimSpace(line))
	}
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return check, err
		}
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	rest, _ := io.ReadAll(br)
	if f[1] != "200" {
		return check, fmt.Errorf("%s %s", f[1], bytes.TrimSpace(rest))
	}
	if err := json.Unmarshal(bytes.TrimSpace(rest), &check); err != nil {
		return check, err
	}
	return check, nil
}

// relayCommand is the hidden command a relay runs as.
const relayCommand = "__ol-shim-relay"

// IsRelay reports whether argv is a relay's.
func IsRelay(argv []string) bool { return len(argv) == 3 && argv[0] == relayCommand }

// Relay is a served container's process: it waits for start, then runs the
// bundle's process in a sandbox of the pool and returns its exit code.
func Relay(argv []string) int {
	root, id := argv[1], argv[2]
	st, ok := loadServed(root, id)
	fifo := filepath.Join(root, id, "start.fifo")
	f, err := os.OpenFile(fifo, os.O_RDONLY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim-runtime: relay of %s: %v\n", id, err)
		return 125
	}
	var b [1]byte
	n, _ := f.Read(b[:])
	f.Close()
	os.Remove(fifo)
	if n != 1 {
		return 137 // deleted before start
	}
	if !ok {
		// The state is written after the relay starts: read it again.
		if st, ok = loadServed(root, id); !ok {
			fmt.Fprintf(os.Stderr, "ol-shim-runtime: relay of %s: no state\n", id)
			return 125
		}
	}
	s, err := readSpec(st.Bundle)
	if err != nil || s.Process == nil {
		fmt.Fprintf(os.Stderr, "ol-shim-runtime: relay of %s: %v\n", id, err)
		return 125
	}
	p := s.Process
	noEntrypoint := []string{}
	interactive := true
	call := wire.RunCall{RunRequest: wire.RunRequest{
		Image: st.Image, Cmd: p.Args, Entrypoint: &noEntrypoint, Env: p.Env, WorkingDir: p.Cwd,
		User: processUser(s), TTY: p.Terminal,
		// Back to its pool after the run, every process of it killed, as
		// after ol-shim run --reuse: for root (the runtime) only.
		Reuse: true,
	}}
	dir := filepath.Join(root, id)
	hello := func(h agent.Hello) {
		st.Sandbox = h.Sandbox
		if err := saveState(dir, *st); err != nil {
			fmt.Fprintf(os.Stderr, "ol-shim-runtime: relay of %s: record its sandbox (docker exec needs it): %v\n", id, err)
		}
	}
	code, err := runcli.Run(runcli.Options{Socket: st.Socket, Call: call, Interactive: &interactive, Hello: hello})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ol-shim: %v\n", err)
	}
	return code
}

// processUser is who the container's process runs as, "UID:GID", as the
// engine resolved it in the container's image.
func processUser(s *spec) string {
	return fmt.Sprintf("%d:%d", s.Process.User.UID, s.Process.User.GID)
}

// Start lets a served container's relay go.
func (st *served) start(root string) error {
	fifo := filepath.Join(root, st.ID, "start.fifo")
	deadline := time.Now().Add(10 * time.Second)
	for {
		fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte{1})
			unix.Close(fd)
			return err
		}
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("container %s: already started", st.ID)
		}
		if !errors.Is(err, unix.ENXIO) || time.Now().After(deadline) || !st.alive() {
			return fmt.Errorf("container %s: start: %v", st.ID, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// parseSignal reads runc kill's signal: a number, or a name with or
// without SIG.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(s), "SIG"))
	if sig == 0 {
		return 0, fmt.Errorf("unknown signal %q", s)
	}
	return sig, nil
}

// Served answers a runc command for a container the runtime serves, and
// reports false if id is not one (the command goes to runc).
func Served(a Args) (bool, error) {
	var id string
	var flags, args []string
	for i := 0; i < len(a.Rest); i++ {
		r := a.Rest[i]
		switch {
		case a.Command == "ps" && (r == "--format" || r == "-f") && i+1 < len(a.Rest):
			flags = append(flags, "--format="+a.Rest[i+1])
			i++
		case strings.HasPrefix(r, "-"):
			flags = append(flags, r)
		case id == "":
			id = r
		default:
			args = append(args, r) // kill's signal
		}
	}
	if a.Command == "exec" {
		// Its flags take values: the id is the first argument that is
		// neither a flag nor a flag's value.
		e, err := parseExec(a.Rest)
		if err != nil {
			_, ok := loadServed(a.Root, e.id)
			return ok, err
		}
		id = e.id
	}
	st, ok := loadServed(a.Root, id)
	if !ok {
		return false, nil
	}
	has := func(names ...string) bool {
		for _, f := range flags {
			for _, n := range names {
				if f == n {
					return true
				}
			}
		}
		return false
	}
	switch a.Command {
	case "start":
		return true, st.start(a.Root)
	case "state":
		b, _ := json.MarshalIndent(map[string]any{
			"ociVersion": "1.0.2", "id": st.ID, "pid": st.Relay, "status": st.status(a.Root), "bundle": st.Bundle,
			"rootfs": filepath.Join(st.Bundle, "rootfs"), "created": st.Created, "owner": "",
			"annotations": map[string]string{"io.ol-shim.image": st.Image},
		}, "", "  ")
		fmt.Println(string(b))
		return true, nil
	case "kill":
		sig := syscall.SIGTERM
		if len(args) > 0 {
			s, err := parseSignal(args[0])
			if err != nil {
				return true, err
			}
			sig = s
		}
		if !st.alive() {
			return true, errors.New("container not running")
		}
		return true, syscall.Kill(st.Relay, sig)
	case "delete":
		if st.alive() {
			if !has("--force", "-f", "--force=true") {
				return true, fmt.Errorf("cannot delete container %s that is not stopped: %s", st.ID, st.status(a.Root))
			}
			syscall.Kill(st.Relay, syscall.SIGKILL)
		}
		return true, os.RemoveAll(filepath.Join(a.Root, st.ID))
	case "ps":
		pids := []int{}
		if st.alive() {
			pids = append(pids, st.Relay)
		}
		if has("--format=json") {
			b, _ := json.Marshal(pids)
			fmt.Println(string(b))
			return true, nil
		}
		fmt.Println("PID")
		for _, p := range pids {
			fmt.Println(p)
		}
		return true, nil
	case "update":
		return true, nil // the sandbox has its pool's limits
	case "exec":
		return true, st.exec(a)
	case "pause", "resume", "checkpoint", "restore", "events":
		return true, fmt.Errorf("%s: not supported for container %s, served from a pool of ol-shim (run it with --runtime runc)", a.Command, st.ID)
	}
	return false, nil
}
