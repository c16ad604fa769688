package scratch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A quota'd volume is served by a FUSE server. With Config.ServerBinary
// set, each runs in a process of its own ("ol-shim volume-server"), started
// in its own session, so that stopping, restarting or killing the daemon
// leaves every volume serving: containers keep writing through a daemon
// restart, and the next daemon finds its servers again through their
// control sockets (Root/servers/<hash>.sock: health and usage, unmount).
// Without it (tests, the managed plugin) the daemon serves in-process.

// ServerHealth is what a volume server answers on its control socket.
type ServerHealth struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	Started    time.Time `json:"started"`
	BytesUsed  int64     `json:"bytes_used"`
	InodesUsed int64     `json:"inodes_used"`
	// Passthrough is "on" when the kernel reads files itself, or "off: "
	// and why (an older server says nothing).
	Passthrough Passthrough `json:"passthrough,omitempty"`
}

// ServerStatus is a volume's FUSE server, as Status shows it.
type ServerStatus struct {
	PID       int       `json:"pid,omitempty"`
	Version   string    `json:"version,omitempty"`
	Started   time.Time `json:"started"`
	InProcess bool      `json:"in_process,omitempty"`
	// Alive is false once the server died: the volume's containers get I/O
	// errors until it is mounted again.
	Alive       bool        `json:"alive"`
	Passthrough Passthrough `json:"passthrough,omitempty"`
}

// volumeServer serves one quota'd volume's FUSE mount.
type volumeServer interface {
	// usage returns the volume's bytes and inodes in use.
	usage() (int64, int64, error)
	// unmount stops serving; the mount goes.
	unmount(m *Manager, name string) error
	// status describes the server.
	status() ServerStatus
}

// inProcess is a FUSE server of the daemon's own process.
type inProcess struct {
	srv     *QuotaMount
	q       *Quota
	started time.Time
}

func (s *inProcess) usage() (int64, int64, error) {
	b, i := s.q.Usage()
	return b, i, nil
}

func (s *inProcess) status() ServerStatus {
	return ServerStatus{PID: os.Getpid(), Started: s.started, InProcess: true, Alive: true, Passthrough: s.srv.Passthrough}
}

func (s *inProcess) unmount(m *Manager, name string) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Unmount() }()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		// Busy: detach it; the server stops when the last user goes.
		if derr := unix.Unmount(m.mountDir(name), unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			return fmt.Errorf("volume %q: unmount: %w; detach: %w", name, err, derr)
		}
		return nil
	case <-time.After(unmountWait):
		m.log.Warn("FUSE server still busy after unmount; it stops when its last user goes", "volume", name)
		return nil
	}
}

// process is a volume server in a process of its own. It is known by a
// pidfd taken on the process that listens on its socket (the kernel's
// word: SO_PEERCRED), never by the pid it reports about itself.
type process struct {
	socket  string
	health  ServerHealth // as it answered when found or started; its PID is not trusted
	pid     int          // the listener's pid, from the kernel
	exited  chan struct{}
	mu      sync.Mutex
	pidfd   int  // guarded by mu: -1 once dead
	dead    bool // guarded by mu
	stopped bool // guarded by mu: stopped on purpose
}

func (s *process) markDead() (first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first = !s.dead && !s.stopped
	s.dead = true
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	return first
}

// signal sends sig (0: a check) to the server through its pidfd.
func (s *process) signal(sig unix.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidfd < 0 {
		return unix.ESRCH
	}
	return unix.PidfdSendSignal(s.pidfd, sig, nil, 0)
}

// running reports whether the server's process still exists.
func (s *process) running() bool { return s.signal(0) == nil }

func (s *process) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead
}

func (s *process) status() ServerStatus {
	return ServerStatus{PID: s.pid, Version: s.health.Version, Started: s.health.Started, Alive: s.alive(), Passthrough: s.health.Passthrough}
}

func (s *process) usage() (int64, int64, error) {
	h, err := askServer(s.socket, time.Second)
	if err != nil {
		return 0, 0, err
	}
	return h.BytesUsed, h.InodesUsed, nil
}

func (s *process) unmount(m *Manager, name string) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	// The daemon unmounts (a confined server cannot: no path leads to its
	// mount), busy or not; servers of every version end when their mount
	// goes, a busy one once its last user leaves.
	mnt := m.mountDir(name)
	err := unix.Unmount(mnt, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		m.log.Warn("unmount a volume", "volume", name, "error", err)
	}
	// A server that does not end is killed, and its mount detached.
	deadline := time.Now().Add(unmountWait)
	for time.Now().Before(deadline) {
		if !s.running() {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.log.Warn("volume server did not stop when asked; killing it", "volume", name, "pid", s.pid)
	s.signal(unix.SIGKILL)
	if derr := unix.Unmount(m.mountDir(name), unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
		return fmt.Errorf("volume %q: detach: %w", name, derr)
	}
	return nil
}

// serverSocket is where the server of volume name listens: a hash, since
// names are up to 128 characters and a socket path at most 107.
func (m *Manager) serverSocket(name string) string { return m.serverFile(name, ".sock") }

// serverFile is a file of the server of volume name, by extension.
func (m *Manager) serverFile(name, ext string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(m.root, "servers", hex.EncodeToString(sum[:8])+ext)
}

// startServer starts the server of v in a process of its own and waits
// until it serves. v.mu must be held.
func (m *Manager) startServerLocked(v *vol) (volumeServer, error) {
	name := v.rec.Name
	sock := m.serverSocket(name)
	// Each server's log: the last start's (O_TRUNC), removed with the volume.
	logf, err := os.OpenFile(m.serverFile(name, ".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("volume %q: server log: %w", name, err)
	}
	defer logf.Close()
	o := v.rec.Options
	// The daemon mounts; the server, in a mount namespace of its own,
	// serves the mount's /dev/fuse (see mountns.go).
	mnt := m.mountDir(name)
	fuseDev, err := mountFUSE(mnt, name, o.NoExec())
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", name, err)
	}
	defer fuseDev.Close() // the server holds its own
	undo := func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			m.log.Warn("detach the mount of a volume server that did not start", "volume", name, "error", err)
		}
	}
	cmd := exec.Command(m.serverBinary, "volume-server", "--name", name, "--data", m.dataDir(name), "--mountpoint", mnt,
		"--socket", sock, "--size", strconv.FormatInt(o.Size, 10), "--inodes", strconv.FormatInt(o.InodeLimit(), 10),
		"--passthrough="+strconv.FormatBool(o.Passthrough), "--fuse-fd", "3")
	cmd.ExtraFiles = []*os.File{fuseDev}
	// Its own session: a signal to the daemon's process group (Ctrl-C, a
	// stop) does not reach it, and it outlives the daemon. Its own mount
	// namespace, private (Go makes it so), which it then confines itself
	// in.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		undo()
		return nil, fmt.Errorf("volume %q: start its server: %w", name, err)
	}
	// Not waited for yet, so the pid is this child's until Wait.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		undo()
		return nil, fmt.Errorf("volume %q: pidfd of its server: %w", name, err)
	}
	p := &process{socket: sock, exited: make(chan struct{}), pid: cmd.Process.Pid, pidfd: pidfd}
	go func() {
		err := cmd.Wait()
		close(p.exited)
		if p.markDead() {
			m.log.Error("volume server died; the volume's containers get I/O errors until it is mounted again", "volume", name, "pid", cmd.Process.Pid, "error", err)
			m.serverDied(name, p)
		}
	}()
	deadline := time.Now().Add(serverStartWait)
	for {
		h, peer, err := askServerPeer(sock, time.Second)
		if err == nil && h.Name == name && peer == cmd.Process.Pid {
			p.health = h
			m.log.Info("started volume server", "volume", name, "pid", h.PID)
			return p, nil
		}
		select {
		case <-p.exited:
			undo()
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("volume %q: its server exited before serving: %s", name, clip(string(b)))
		default:
		}
		if time.Now().After(deadline) {
			p.markDead()
			cmd.Process.Kill()
			undo()
			return nil, fmt.Errorf("volume %q: its server did not answer within %v", name, serverStartWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// How long a volume server may take to start serving, and how often the
// daemon checks the servers it found at start.
const (
	serverStartWait  = 10 * time.Second
	serverCheckEvery = 2 * time.Second
)

// findServer returns the server of v if one from an earlier daemon still
// serves it. It is the process the kernel says listens on its socket,
// held by a pidfd taken while it answered (so the pid cannot have been
// reused meanwhile).
func (m *Manager) findServer(v *vol) *process {
	sock := m.serverSocket(v.rec.Name)
	h, peer, err := askServerPeer(sock, time.Second)
	if err != nil || h.Name != v.rec.Name || peer <= 0 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(peer, 0)
	if err != nil {
		return nil
	}
	// Still answering, from the same pid, after the pidfd was taken: the
	// pidfd is that process's.
	if _, again, err := askServerPeer(sock, time.Second); err != nil || again != peer {
		unix.Close(pidfd)
		return nil
	}
	return &process{socket: sock, health: h, pid: peer, pidfd: pidfd, exited: make(chan struct{})}
}

// serverDied detaches the dead mount of a server that died, so that the
// next Mount serves the volume again.
func (m *Manager) serverDied(name string, p *process) {
	if err := unix.Unmount(m.mountDir(name), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		m.log.Warn("detach the mount of a dead volume server", "volume", name, "error", err)
	}
}

// watchServers checks the servers found at start (not this process's
// children, whose exit it sees at once) until stop is closed.
func (m *Manager) watchServers(stop <-chan struct{}) {
	t := time.NewTicker(serverCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		vols := make([]*vol, 0, len(m.vols))
		for _, v := range m.vols {
			vols = append(vols, v)
		}
		m.mu.Unlock()
		for _, v := range vols {
			v.mu.Lock()
			p, ok := v.server.(*process)
			v.mu.Unlock()
			if !ok || !p.alive() {
				continue
			}
			select {
			case <-p.exited:
				continue // a child: its own goroutine saw it
			default:
			}
			if _, err := askServer(p.socket, time.Second); err != nil && !p.running() {
				if p.markDead() {
					m.log.Error("volume server died; the volume's containers get I/O errors until it is mounted again", "volume", v.rec.Name, "pid", p.pid)
					m.serverDied(v.rec.Name, p)
				}
			}
		}
	}
}

// askServer asks the server on sock for its health.
func askServer(sock string, timeout time.Duration) (ServerHealth, error) {
	h, _, err := askServerPeer(sock, timeout)
	return h, err
}

// askServerPeer is askServer that also returns the pid of the process that
// listens on sock, as the kernel recorded it (SO_PEERCRED).
func askServerPeer(sock string, timeout time.Duration) (ServerHealth, int, error) {
	var h ServerHealth
	peer := 0
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, err
		}
		if raw, err := c.(*net.UnixConn).SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					peer = int(cred.Pid)
				}
			})
		}
		return c, nil
	}}
	c := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := c.Get("http://volume-server/v1/health")
	if err != nil {
		return h, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, 0, fmt.Errorf("volume server %s: %s", sock, resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&h)
	return h, peer, err
}
