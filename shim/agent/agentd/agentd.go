package agentd

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/moby/sys/user"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// Server starts processes for the connections it accepts.
type Server struct {
	Reaper *Reaper
	Log    *slog.Logger
	// Env is the environment processes start with, before a start frame's
	// own; the container's, for PID 1.
	Env []string
	// Recycle, if set, answers a recycle frame (see recycle.go): only init
	// can.
	Recycle func() error

	passwd, group string // where users are looked up; "": /etc's (tests set them)
	devNull       string // "": os.DevNull
}

// Serve accepts connections on l until it is closed.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.handle(c)
	}
}

// startTimeout bounds the wait for a connection's start frame.
const startTimeout = 10 * time.Second

func (s *Server) handle(nc net.Conn) {
	defer nc.Close()
	c := agent.NewConn(nc)
	_ = nc.SetReadDeadline(time.Now().Add(startTimeout))
	f, err := c.Read()
	if err != nil {
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	if f.Kind == agent.KindRecycle && s.Recycle != nil {
		done := takeStartSlot()
		err := s.Recycle()
		done()
		if err != nil {
			_ = c.WriteJSON(agent.KindError, agent.Fail(agent.CodeFailed, "recycle: %v", err))
			return
		}
		_ = c.WriteJSON(agent.KindExit, agent.Exit{Code: 0})
		return
	}
	if f.Kind != agent.KindStart {
		_ = c.WriteJSON(agent.KindError, agent.Fail(agent.CodeFailed, "agent: the first frame must be a start frame, not %q", f.Kind))
		return
	}
	var st agent.Start
	if err := agent.Decode(f, &st); err != nil {
		_ = c.WriteJSON(agent.KindError, agent.Fail(agent.CodeFailed, "agent: %v", err))
		return
	}
	done := takeStartSlot()
	p, e := s.start(st)
	done()
	if e != nil {
		_ = c.WriteJSON(agent.KindError, e)
		return
	}
	p.run(c)
}

// proc is a started process and its side of the connection.
type proc struct {
	log     *slog.Logger
	p       *os.Process
	status  <-chan syscall.WaitStatus
	tty     *os.File // the terminal's master, with TTY
	stdin   *os.File // nil without stdin
	outputs []output
}

type output struct {
	kind byte
	f    *os.File
}

// start starts st's process, or says why it could not as an error frame.
func (s *Server) start(st agent.Start) (*proc, *agent.Error) {
	if len(st.Argv) == 0 || st.Argv[0] == "" {
		return nil, agent.Fail(agent.CodeCannotRun, "no command")
	}
	env := mergeEnv(s.Env, st.Env)
	if st.TTY && !hasKey(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	attr := &os.ProcAttr{Env: env, Sys: &syscall.SysProcAttr{Setsid: true}}
	if st.User != "" {
		u, err := lookupUser(st.User, cmp.Or(s.passwd, "/etc/passwd"), cmp.Or(s.group, "/etc/group"))
		if err != nil {
			return nil, agent.Fail(agent.CodeCannotRun, "user %q: %v", st.User, err)
		}
		if me := os.Getuid(); me != 0 && (u.Uid != me || u.Gid != os.Getgid()) {
			// The pool runs its processes as a user (the sandbox user, or
			// its own), and nothing in it can become another.
			return nil, agent.Fail(agent.CodeCannotRun, "user %q: this sandbox's processes run as %d:%d and cannot run as %d:%d; a pool whose user is root can", st.User, me, os.Getgid(), u.Uid, u.Gid)
		}
		groups := make([]uint32, len(u.Sgids))
		for i, g := range u.Sgids {
			groups[i] = uint32(g)
		}
		attr.Sys.Credential = &syscall.Credential{Uid: uint32(u.Uid), Gid: uint32(u.Gid), Groups: groups}
		if !hasKey(st.Env, "HOME") && u.Home != "" {
			attr.Env = mergeEnv(attr.Env, []string{"HOME=" + u.Home})
		}
	}
	if st.Dir != "" {
		if !filepath.IsAbs(st.Dir) {
			return nil, agent.Fail(agent.CodeCannotRun, "working directory %q: not absolute", st.Dir)
		}
		_ = os.MkdirAll(st.Dir, 0o755) // as docker run does
		attr.Dir = st.Dir
	}
	path, e := lookPath(st.Argv[0], env)
	if e != nil {
		return nil, e
	}

	p := &proc{log: s.Log}
	var child []*os.File // the child's ends, closed here once it started
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	fail := func(format string, args ...any) (*proc, *agent.Error) {
		p.closeAll()
		return nil, agent.Fail(agent.CodeFailed, format, args...)
	}
	if st.TTY {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return fail("open a terminal: %v", err)
		}
		p.tty = ptmx
		child = append(child, tty)
		if st.Rows > 0 && st.Cols > 0 {
			_ = pty.Setsize(ptmx, &pty.Winsize{Rows: st.Rows, Cols: st.Cols})
		}
		attr.Files = []*os.File{tty, tty, tty}
		attr.Sys.Setctty = true
		attr.Sys.Ctty = 0
		p.outputs = []output{{agent.KindStdout, ptmx}}
		if st.Stdin {
			p.stdin = ptmx
		}
	} else {
		in, err := openDevice(cmp.Or(s.devNull, os.DevNull))
		if err != nil {
			return fail("%v", err)
		}
		if st.Stdin {
			in.Close()
			r, w, err := os.Pipe()
			if err != nil {
				return fail("stdin pipe: %v", err)
			}
			in, p.stdin = r, w
		}
		child = append(child, in)
		files := []*os.File{in}
		for _, k := range []byte{agent.KindStdout, agent.KindStderr} {
			r, w, err := os.Pipe()
			if err != nil {
				return fail("output pipe: %v", err)
			}
			child = append(child, w)
			files = append(files, w)
			p.outputs = append(p.outputs, output{k, r})
		}
		attr.Files = files
	}
	proc, status, err := s.Reaper.Start(path, st.Argv, attr)
	if err != nil {
		p.closeAll()
		code := agent.CodeCannotRun
		if errors.Is(err, syscall.ENOENT) && !strings.Contains(err.Error(), "chdir") {
			code = agent.CodeNotFound
		}
		where := ""
		if st.Dir != "" {
			where += " in " + st.Dir
		}
		if st.User != "" {
			where += " as " + st.User
		}
		return nil, agent.Fail(code, "exec %q%s: %v", st.Argv[0], where, unwrapPath(err))
	}
	p.p, p.status = proc, status
	return p, nil
}

func (p *proc) closeAll() {
	for _, o := range p.outputs {
		o.f.Close()
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
	if p.tty != nil {
		p.tty.Close()
	}
}

// run streams the process's stdio on c until it exits, then sends its exit
// status. A client that goes away first gets the process group killed.
func (p *proc) run(c *agent.Conn) {
	defer p.closeAll()
	pgid := p.p.Pid // its own session, so its own group
	_ = c.WriteJSON(agent.KindStarted, agent.Started{PID: p.p.Pid})

	var pumps sync.WaitGroup
	exited := make(chan struct{})
	for _, o := range p.outputs {
		pumps.Go(func() { pump(c, o, exited) })
	}
	gone := make(chan struct{})
	go func() {
		p.readClient(c, pgid)
		close(gone)
	}()
	var ws syscall.WaitStatus
	select {
	case ws = <-p.status:
	case <-gone:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.status
		close(exited)
		pumps.Wait()
		return
	}
	close(exited)
	pumps.Wait()
	// Whatever it left in its group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	code, sig := Code(ws)
	_ = c.WriteJSON(agent.KindExit, agent.Exit{Code: code, Signal: sig})
	_ = c.CloseWrite()
}

// drainWait is how long output is waited for once the process exited and
// its pipes are empty: descendants that keep them open are not waited for.
const drainWait = 100 * time.Millisecond

// pump copies one output of the process to frames until it ends, or until
// it has been empty for drainWait after the process exited.
func pump(c *agent.Conn, o output, exited <-chan struct{}) {
	buf := make([]byte, 32<<10)
	pollable := true
	for {
		done := false
		select {
		case <-exited:
			done = true
		default:
		}
		// Reads wake up while the pipe is quiet, to notice the exit.
		if pollable && o.f.SetReadDeadline(time.Now().Add(drainWait)) != nil {
			pollable = false // no way to tell a pause from the end: read to EOF
		}
		n, err := o.f.Read(buf)
		if n > 0 {
			if c.Write(o.kind, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !done {
				continue
			}
			return
		}
	}
}

// readClient takes stdin, resizes and signals from the client until it
// goes away.
func (p *proc) readClient(c *agent.Conn, pgid int) {
	queue := make(chan []byte, 256)
	defer close(queue)
	var pending sync.Mutex
	inflight := 0
	if p.stdin != nil {
		go func() {
			for b := range queue {
				if b == nil {
					if p.tty == nil {
						p.stdin.Close()
					}
					continue
				}
				_, _ = p.stdin.Write(b) // a process that closed its stdin drops the rest
				pending.Lock()
				inflight -= len(b)
				pending.Unlock()
				_ = c.Write(agent.KindAck, agent.Ack(len(b)))
			}
		}()
	}
	for {
		f, err := c.Read()
		if err != nil {
			return
		}
		switch f.Kind {
		case agent.KindStdin:
			if p.stdin == nil {
				continue
			}
			if len(f.Payload) == 0 {
				queue <- nil
				continue
			}
			pending.Lock()
			inflight += len(f.Payload)
			over := inflight > agent.Window
			pending.Unlock()
			if over {
				p.log.Warn("agent: client sent more stdin than its window; cutting it off")
				return
			}
			queue <- slices.Clone(f.Payload)
		case agent.KindResize:
			var r agent.Resize
			if agent.Decode(f, &r) == nil && p.tty != nil && r.Rows > 0 && r.Cols > 0 {
				_ = pty.Setsize(p.tty, &pty.Winsize{Rows: r.Rows, Cols: r.Cols})
			}
		case agent.KindSignal:
			if len(f.Payload) == 1 && f.Payload[0] > 0 && f.Payload[0] < 65 {
				_ = syscall.Kill(-pgid, syscall.Signal(f.Payload[0]))
			}
		default:
			p.log.Warn("agent: unexpected frame from the client", "kind", string(rune(f.Kind)))
			return
		}
	}
}

// lookPath finds argv0 as execve would after a shell's PATH search, in the
// process's environment; not found is 127, found but not executable 126.
func lookPath(argv0 string, env []string) (string, *agent.Error) {
	check := func(p string) (bool, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return true, syscall.EACCES
		}
		return true, nil
	}
	if strings.Contains(argv0, "/") {
		exists, err := check(argv0)
		switch {
		case err == nil:
			return argv0, nil
		case exists:
			return "", agent.Fail(agent.CodeCannotRun, "exec %q: permission denied", argv0)
		default:
			return "", agent.Fail(agent.CodeNotFound, "exec %q: no such file or directory", argv0)
		}
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	denied := ""
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, argv0)
		exists, err := check(p)
		if err == nil {
			return p, nil
		}
		if exists && denied == "" {
			denied = p
		}
	}
	if denied != "" {
		return "", agent.Fail(agent.CodeCannotRun, "exec %q: %s: permission denied", argv0, denied)
	}
	return "", agent.Fail(agent.CodeNotFound, "exec %q: executable file not found in $PATH", argv0)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// mergeEnv returns base with extra's keys set, extra winning.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	keys := map[string]int{}
	for _, kv := range append(slices.Clip(base), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := keys[k]; ok {
			out[i] = kv
			continue
		}
		keys[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func hasKey(env []string, key string) bool {
	return slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
}

// Listen makes the agent's socket at path, replacing a stale one, readable
// and writable by its owner only. The socket listens under a temporary
// name and is renamed into place: the daemon takes the name's existence
// as the agent's readiness, and a socket bound but not yet listening
// refuses connections.
func Listen(path string) (net.Listener, error) {
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent socket %s: %w", tmp, err)
	}
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = os.Chmod(tmp, 0o600)
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("agent socket %s: %w", path, err)
	}
	return l, nil
}

// maxUserFile bounds how much of /etc/passwd and /etc/group a lookup reads.
const maxUserFile = 16 << 20

// lookupUser resolves a user spec as GetExecUserPath does, but the sandbox
// owns the files it reads: one that is not a regular file (a named pipe
// would hang the run, and with it a start slot) is refused, naming it, and
// at most maxUserFile of each is read. A missing file is no file, as there.
func lookupUser(spec, passwdPath, groupPath string) (*user.ExecUser, error) {
	var readers [2]io.Reader
	for i, path := range []string{passwdPath, groupPath} {
		f, err := openNoWait(path, os.FileMode.IsRegular, "a regular file")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		readers[i] = io.LimitReader(f, maxUserFile)
	}
	return user.GetExecUser(spec, nil, readers[0], readers[1])
}

// openDevice opens a device file of the sandbox's, such as /dev/null, for
// a child to read: see openNoWait.
func openDevice(path string) (*os.File, error) {
	return openNoWait(path, func(m os.FileMode) bool { return m&os.ModeCharDevice != 0 }, "a device")
}

// openNoWait opens a file of the sandbox's for reading without waiting: one
// the sandbox replaced with a named pipe (whose open would wait for a
// writer), or anything else whose mode is not ok, is refused, naming it and
// what it should be. The file is then blocking, as os.Open would open it.
func openNoWait(path string, ok func(os.FileMode) bool, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil && !ok(fi.Mode()) {
		err = fmt.Errorf("%s: not %s (%v)", path, what, fi.Mode().Type())
	}
	if err == nil {
		err = syscall.SetNonblock(int(f.Fd()), false)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
