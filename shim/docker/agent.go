package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
)

// ctlDir is the host side of sandbox id's control directory.
func (d *Docker) ctlDir(id string) string { return filepath.Join(d.cfg.AgentDir, id) }

// agentOn reports whether sandboxes get an agent.
func (d *Docker) agentOn() bool { return d.cfg.AgentDir != "" && d.cfg.InitBinary != "" }

// makeCtl makes sandbox id's control directory. Only root on the host
// reaches it (AgentDir is 0700). In the container its owner must be able
// to make the socket: a pool that runs as another user than root gets a
// directory all may write to, still behind AgentDir's 0700.
//
// The directory is a tmpfs of its own (ctlMountOptions): what a sandbox can
// write there is bounded (1 MiB, a few inodes), takes none of the host's
// disk, and cannot be run (noexec), so it undoes nothing of a read-only
// root file system.
func (b *Backend) makeCtl(id string) error {
	dir := b.d.ctlDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("control directory of sandbox %s: %w", id, err)
	}
	if ok, _ := mountinfo.Mounted(dir); !ok {
		if err := unix.Mount("ol-shim-ctl", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ctlMountOptions); err != nil {
			return fmt.Errorf("control directory of sandbox %s: mount: %w", id, err)
		}
	}
	mode := os.FileMode(0o700)
	if u := b.spec.User; u != "" && u != "root" && u != "0" && !strings.HasPrefix(u, "0:") && !strings.HasPrefix(u, "root:") {
		mode = 0o777
	}
	return os.Chmod(dir, mode)
}

// ctlMountOptions: 1 MiB and 16 inodes, for a socket (and its temporary
// name while the agent binds it).
const ctlMountOptions = "size=1m,nr_inodes=16,mode=0700"

// removeCtl removes sandbox id's control directory. What the sandbox put
// there is removed without following a symlink out of it.
func (d *Docker) removeCtl(id string) {
	if !d.agentOn() || id == "" {
		return
	}
	if err := sandboxset.ValidateSandboxID(id); err != nil {
		d.log.Warn("not removing a control directory by a bad sandbox ID", "error", err)
		return
	}
	if err := unix.Unmount(d.ctlDir(id), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		d.log.Warn("unmount a sandbox's control directory", "sandbox", id, "error", err)
	}
	if err := os.RemoveAll(d.ctlDir(id)); err != nil {
		d.log.Warn("remove a sandbox's control directory", "sandbox", id, "error", err)
	}
}

// agentWait bounds how long a new sandbox's agent may take to listen.
const agentWait = 5 * time.Second

// waitAgent waits until a new sandbox's agent listens; a sandbox whose
// agent does not is still served, through docker exec.
func (s *Sandbox) waitAgent(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, agentWait)
	defer cancel()
	wait := 200 * time.Microsecond
	for {
		fd, err := s.agentSocket()
		if err == nil {
			unix.Close(fd)
			return
		}
		select {
		case <-ctx.Done():
			s.d.log.Warn("the agent of a new sandbox does not listen; its runs will go through docker exec", "sandbox", s.id, "error", err)
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Millisecond)
	}
}

// agentSocket opens an O_PATH handle on the agent's socket. The sandbox
// owns its control directory, so the name is resolved in it without
// following any symlink: a sandbox cannot make the daemon, root on the
// host, connect to another socket than its own.
func (s *Sandbox) agentSocket() (int, error) {
	dir, err := unix.Open(s.d.ctlDir(s.id), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, agent.SocketName, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return -1, fmt.Errorf("%s in the control directory is not a socket", agent.SocketName)
	}
	return fd, nil
}

// agentDialTimeout bounds a connect to an agent.
const agentDialTimeout = 2 * time.Second

// DialAgent connects to the sandbox's agent, through the handle of its
// socket (what was checked is what is connected to).
func (s *Sandbox) DialAgent(ctx context.Context) (net.Conn, error) {
	if !s.d.agentOn() {
		return nil, errors.New("sandboxes have no agent (no init binary)")
	}
	fd, err := s.agentSocket()
	if err != nil {
		return nil, fmt.Errorf("agent of sandbox %s: %w", s.id, err)
	}
	defer unix.Close(fd)
	var dl net.Dialer
	ctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
	defer cancel()
	c, err := dl.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, fmt.Errorf("agent of sandbox %s: %w", s.id, err)
	}
	if err := s.checkPeer(ctx, c); err != nil {
		c.Close()
		return nil, fmt.Errorf("agent of sandbox %s: %w", s.id, err)
	}
	return c, nil
}

// sweepCtl removes the control directories of sandboxes other than keep:
// at a start, once reconcile removed every container no pool adopted, those
// are what a process killed between making a directory and its container
// left.
func (d *Docker) sweepCtl(keep []string) {
	if !d.agentOn() {
		return
	}
	entries, err := os.ReadDir(d.cfg.AgentDir)
	if err != nil {
		d.log.Warn("list the sandboxes' control directories", "error", err)
		return
	}
	kept := map[string]bool{}
	for _, id := range keep {
		kept[id] = true
	}
	for _, e := range entries {
		if !kept[e.Name()] {
			d.removeCtl(e.Name())
		}
	}
}
