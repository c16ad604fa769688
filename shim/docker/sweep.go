package docker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"
)

// What a sandbox's processes are, seen from the host: the daemon reads its
// container's cgroup (which no process in the sandbox can leave or write)
// and /proc, never anything the sandbox says about itself. A process is
// known by its pid and its start time, so a pid reused by another process
// is not taken for the one that had it.

// ErrImpostor is returned by DialAgent when what answers on the agent's
// socket is not the sandbox's init: a process of the sandbox put its own
// socket there. The sandbox is not to be trusted again.
var ErrImpostor = errors.New("the process answering on the agent's socket is not the sandbox's init")

// proc is one process: its pid and its start time (clock ticks since
// boot, /proc/PID/stat field 22).
type proc struct {
	pid   int
	start uint64
	ppid  int // not part of its identity: see key
}

// key is what identifies p: pid and start time.
func (p proc) key() proc { return proc{pid: p.pid, start: p.start} }

// ident finds, once, the container's init (its pid here) and the
// cgroup.procs file of its cgroup. It fails where the daemon cannot see the
// container's processes (a dockerd in another pid namespace).
func (s *Sandbox) ident(ctx context.Context) (initPid int, procs string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.initPid > 0 {
		return s.initPid, s.procs, nil
	}
	cctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	res, err := s.d.cli.ContainerInspect(cctx, s.container, client.ContainerInspectOptions{})
	if err != nil {
		return 0, "", err
	}
	st := res.Container.State
	if st == nil || st.Pid <= 0 {
		return 0, "", fmt.Errorf("container %.12s has no process", s.container)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		return 0, "", fmt.Errorf("init of container %.12s (pid %d): %w", s.container, st.Pid, err)
	}
	if !bytes.Contains(cg, []byte(s.container)) {
		return 0, "", fmt.Errorf("pid %d is not container %.12s's here (dockerd in another pid namespace?)", st.Pid, s.container)
	}
	procs, err = procsFile(cg)
	if err != nil {
		return 0, "", fmt.Errorf("container %.12s: %w", s.container, err)
	}
	s.initPid, s.procs = st.Pid, procs
	return s.initPid, s.procs, nil
}

// procsFile returns the cgroup.procs file of the cgroup that a
// /proc/PID/cgroup describes: the unified hierarchy's where it is the only
// one, else the pids controller's (cgroup v1, or hybrid).
func procsFile(cg []byte) (string, error) {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	v2 := err == nil
	sc := bufio.NewScanner(bytes.NewReader(cg))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case v2 && parts[0] == "0" && parts[1] == "":
			return filepath.Join("/sys/fs/cgroup", parts[2], "cgroup.procs"), nil
		case !v2 && hasController(parts[1], "pids"):
			return filepath.Join("/sys/fs/cgroup/pids", parts[2], "cgroup.procs"), nil
		}
	}
	return "", errors.New("no cgroup to list its processes by")
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// procsNow lists the processes of the cgroup, zombies left out (they run
// nothing and go when their parent reaps them). A process whose main
// thread exited while others run on shows as a zombie too, yet it runs: it
// is listed.
func procsNow(file string) ([]proc, error) {
	b, err := readProc(file, make([]byte, 0, 512))
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		start, state, ppid, ok := procStatParent(pid)
		if !ok || state == 'Z' && procThreads(pid) <= 1 {
			continue
		}
		out = append(out, proc{pid: pid, start: start, ppid: ppid})
	}
	return out, nil
}

// hasExecChild reports whether one of procs is a child of pid that runs
// another program than pid does: a child that has not exec'd yet (or never
// will: Go's runtime, at its first fork, forks a child that only exits, to
// learn whether clone takes CLONE_PIDFD) is not the command it starts.
func hasExecChild(procs []proc, pid int) bool {
	var self unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &self) != nil {
		return false
	}
	for _, p := range procs {
		if p.ppid != pid {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/exe", p.pid), &st) == nil && (st.Dev != self.Dev || st.Ino != self.Ino) {
			return true
		}
	}
	return false
}

// readProc reads a small file of /proc or /sys into buf (grown as needed)
// with plain system calls: open, read to the end, close. Every hot
// acquire and release reads a few (Mark and Sweep); os.ReadFile's stat,
// and its poller's fcntl and epoll calls, were half of the daemon's time on
// the hot path.
func readProc(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// procStat reads a process's start time and state from /proc/PID/stat.
func procStat(pid int) (start uint64, state byte, ok bool) {
	start, state, _, ok = procStatParent(pid)
	return start, state, ok
}

// procStatParent is procStat with the parent's pid.
func procStatParent(pid int) (start uint64, state byte, ppid int, ok bool) {
	var buf [512]byte
	b, err := readProc("/proc/"+strconv.Itoa(pid)+"/stat", buf[:0])
	if err != nil {
		return 0, 0, 0, false
	}
	// The command name, in parentheses, may hold anything: the fields
	// start after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, 0, 0, false
	}
	start, err = strconv.ParseUint(fields[19], 10, 64) // field 22 of the whole line
	ppid, perr := strconv.Atoi(fields[1])
	if err != nil || perr != nil || len(fields[0]) != 1 {
		return 0, 0, 0, false
	}
	return start, fields[0][0], ppid, true
}

// procThreads returns how many threads the process of pid has, counting a
// main thread that exited while others run on (/proc/PID/stat field 20), or
// 0 if it is gone.
func procThreads(pid int) int {
	var buf [512]byte
	b, err := readProc("/proc/"+strconv.Itoa(pid)+"/stat", buf[:0])
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 18 {
		return 0
	}
	n, _ := strconv.Atoi(fields[17])
	return n
}

// Mark records the processes running in the sandbox now: what Sweep
// leaves alive. The pool calls it as it hands the sandbox out.
func (s *Sandbox) Mark(ctx context.Context) error {
	initPid, file, err := s.ident(ctx)
	if err != nil {
		return fmt.Errorf("sandbox %s: mark its processes: %w", s.id, err)
	}
	now, err := procsNow(file)
	if err != nil {
		return fmt.Errorf("sandbox %s: mark its processes: %w", s.id, err)
	}
	s.mu.Lock()
	fresh := s.fresh
	s.fresh = false
	s.mu.Unlock()
	// A sandbox just made is handed out as soon as it started (or its
	// init's agent listens), which can be before init has started the
	// pool's command: that is the pool's, not a run's, so it is waited for
	// (a second at most), until a child of init runs it (has exec'd).
	for deadline := time.Now().Add(time.Second); fresh && !hasExecChild(now, initPid) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		if now, err = procsNow(file); err != nil {
			return fmt.Errorf("sandbox %s: mark its processes: %w", s.id, err)
		}
	}
	kept := make(map[proc]bool, len(now))
	for _, p := range now {
		kept[p.key()] = true
	}
	s.mu.Lock()
	s.marked = kept
	s.mu.Unlock()
	return nil
}

// sweepWithin bounds a sweep: processes that keep forking faster than
// they are killed (the pids limit bounds them) fail it.
const sweepWithin = 2 * time.Second

// Sweep kills every process of the sandbox that Mark did not see, and
// waits until none is left: nothing a run started survives it. It returns
// how many it killed. An error means the sandbox may still hold a process
// of the run: it must not be handed out again.
func (s *Sandbox) Sweep(ctx context.Context) (int, error) {
	_, file, err := s.ident(ctx)
	if err != nil {
		return 0, fmt.Errorf("sandbox %s: sweep: %w", s.id, err)
	}
	s.mu.Lock()
	kept := s.marked
	s.mu.Unlock()
	if kept == nil {
		return 0, fmt.Errorf("sandbox %s: sweep without a mark", s.id)
	}
	killed := 0
	deadline := time.Now().Add(sweepWithin)
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		now, err := procsNow(file)
		if err != nil {
			return killed, fmt.Errorf("sandbox %s: sweep: %w", s.id, err)
		}
		left := 0
		for _, p := range now {
			if kept[p.key()] {
				continue
			}
			left++
			if kill(p) {
				killed++
			}
		}
		if left == 0 {
			s.d.swept.Add(int64(killed))
			return killed, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return killed, fmt.Errorf("sandbox %s: sweep: %d processes of the last run still there after %v", s.id, left, sweepWithin)
		}
		time.Sleep(wait)
	}
}

// kill sends SIGKILL to p through a pidfd, if p is still the process that
// had that pid when it was listed. It reports whether it sent it.
func kill(p proc) bool {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// The pidfd names whatever has the pid now: it is p only if its start
	// time is p's (read after the pidfd was taken).
	if start, _, ok := procStat(p.pid); !ok || start != p.start {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}

// checkPeer checks that the process at the other end of c, a connection
// to the agent's socket, is the sandbox's init: the kernel records the
// listener's pid as it listens, in this (the host's) pid namespace, and no
// other process of the sandbox can listen as init.
func (s *Sandbox) checkPeer(ctx context.Context, c net.Conn) error {
	initPid, _, err := s.ident(ctx)
	if err != nil {
		return err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("agent connection is a %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer of the agent's socket: %w", cerr)
	}
	if int(cred.Pid) != initPid {
		return fmt.Errorf("%w (it is pid %d here, init is %d)", ErrImpostor, cred.Pid, initPid)
	}
	return nil
}
