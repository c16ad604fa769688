package agentd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// Recycling makes a sandbox as it was made, without a new container: init
// (PID 1, the only process no run can touch: not dumpable, the daemon's
// peer check) kills every other process of the sandbox, empties or
// restores every place a run can write, and starts the pool's command
// again. The daemon asks for it only for pools whose root file system is
// read-only, so that what a run can write is:
//
//   - /host, the scratch volume: emptied, its root's owner and mode restored;
//   - /dev (a tmpfs): what a run added is removed; what it removed or
//     changed of what was there cannot be made again without CAP_MKNOD, so
//     the recycle fails (the daemon then destroys the sandbox);
//   - /dev/shm and /dev/mqueue: emptied;
//   - System V IPC objects of the sandbox's IPC namespace: removed;
//   - the control directory: everything but the agent's socket removed.
//
// Anything that cannot be done fails the recycle, and the daemon destroys
// the sandbox instead.

// Paths recycling takes care of, in the container.
const (
	hostDir   = "/host"
	devDir    = "/dev"
	shmDir    = "/dev/shm"
	mqueueDir = "/dev/mqueue"
	ptsDir    = "/dev/pts"
)

// killWait bounds the wait for every other process to be gone.
const killWait = 5 * time.Second

// entryState is what recycling compares of a file: its type, mode, owner,
// device number and, for a symlink, its target.
type entryState struct {
	mode     uint32
	uid, gid uint32
	rdev     uint64
	link     string
}

func stateOf(path string) (entryState, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return entryState{}, err
	}
	e := entryState{mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		e.link, _ = os.Readlink(path)
	}
	return e, nil
}

// snapshot is what a sandbox looked like when init started: /dev's
// entries, /host's root.
type snapshot struct {
	dev  map[string]entryState // path under /dev -> state; mounts below it left out
	host *entryState           // nil if there is no /host
}

// mountsUnder returns the mount points strictly below dir, from
// /proc/self/mountinfo.
func mountsUnder(dir string) map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out[f[4]] = true
		}
	}
	return out
}

// takeSnapshot records /dev (without what is mounted below it) and /host's
// root.
func takeSnapshot() (*snapshot, error) {
	s := &snapshot{dev: map[string]entryState{}}
	mounts := mountsUnder(devDir)
	err := filepath.WalkDir(devDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != devDir && mounts[p] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // a file bind-mounted over /dev's own (e.g. /dev/console)
		}
		st, err := stateOf(p)
		if err != nil {
			return err
		}
		s.dev[p] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", devDir, err)
	}
	if st, err := stateOf(hostDir); err == nil {
		s.host = &st
	}
	return s, nil
}

// restoreDev removes what was added to /dev since the snapshot and fails
// if anything there was removed or changed.
func (s *snapshot) restoreDev() error {
	mounts := mountsUnder(devDir)
	var added []string
	seen := map[string]bool{}
	err := filepath.WalkDir(devDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if p != devDir && mounts[p] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		want, ok := s.dev[p]
		if !ok {
			added = append(added, p)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		seen[p] = true
		got, err := stateOf(p)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s was changed by a run (mode %o owner %d:%d, was %o %d:%d)", p, got.mode, got.uid, got.gid, want.mode, want.uid, want.gid)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for p := range s.dev {
		if !seen[p] {
			return fmt.Errorf("%s was removed by a run", p)
		}
	}
	for _, p := range added {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove %s, which a run added: %w", p, err)
		}
	}
	return nil
}

// emptyDir removes everything in dir but the names in keep, without
// following symlinks (os.RemoveAll does not). A missing dir is empty.
func emptyDir(dir string, keep ...string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("empty %s: %w", dir, err)
	}
next:
	for _, e := range ents {
		for _, k := range keep {
			if e.Name() == k {
				continue next
			}
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty %s: %w", dir, err)
		}
	}
	return nil
}

// restoreHost empties /host and gives its root back its owner and mode.
func (s *snapshot) restoreHost() error {
	if s.host == nil {
		return nil
	}
	// A directory a run made read-only (or owned by another uid) must
	// still be emptied: init has CAP_DAC_OVERRIDE and CAP_FOWNER.
	if err := emptyDir(hostDir); err != nil {
		return err
	}
	if err := os.Lchown(hostDir, int(s.host.uid), int(s.host.gid)); err != nil {
		return fmt.Errorf("restore %s's owner: %w", hostDir, err)
	}
	if err := os.Chmod(hostDir, os.FileMode(s.host.mode&0o777)|modeBits(s.host.mode)); err != nil {
		return fmt.Errorf("restore %s's mode: %w", hostDir, err)
	}
	return nil
}

// modeBits turns setuid, setgid and sticky of a stat mode into os.FileMode.
func modeBits(m uint32) os.FileMode {
	var out os.FileMode
	if m&unix.S_ISUID != 0 {
		out |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		out |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		out |= os.ModeSticky
	}
	return out
}

// removeSysV removes every System V IPC object of this IPC namespace.
func removeSysV() error {
	for _, k := range []struct {
		file string
		call uintptr
		cmd  uintptr
	}{
		{"/proc/sysvipc/shm", unix.SYS_SHMCTL, unix.IPC_RMID},
		{"/proc/sysvipc/sem", unix.SYS_SEMCTL, unix.IPC_RMID},
		{"/proc/sysvipc/msg", unix.SYS_MSGCTL, unix.IPC_RMID},
	} {
		b, err := os.ReadFile(k.file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] { // a header first
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			id, err := strconv.Atoi(f[1])
			if err != nil {
				continue
			}
			var errno syscall.Errno
			if k.call == unix.SYS_SEMCTL {
				_, _, errno = unix.Syscall6(k.call, uintptr(id), 0, k.cmd, 0, 0, 0)
			} else {
				_, _, errno = unix.Syscall(k.call, uintptr(id), k.cmd, 0)
			}
			if errno != 0 && errno != unix.EINVAL && errno != unix.EIDRM {
				return fmt.Errorf("remove System V IPC object %d (%s): %v", id, filepath.Base(k.file), errno)
			}
		}
	}
	return nil
}

// killOthers kills every process of the pid namespace but init and waits
// (killWait at most) until none is left; the Reaper reaps them.
func killOthers() error {
	deadline := time.Now().Add(killWait)
	for {
		if err := unix.Kill(-1, unix.SIGKILL); err != nil && err != unix.ESRCH {
			return fmt.Errorf("kill: %w", err)
		}
		left, err := othersLeft()
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still there after %v", left, killWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// othersLeft counts the processes in /proc besides this one (zombies too:
// they go once reaped).
func othersLeft() (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	n := 0
	self := os.Getpid()
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			n++
		}
	}
	return n, nil
}

// clean does everything recycling does but kill and restart.
func (s *snapshot) clean() error {
	if err := removeSysV(); err != nil {
		return err
	}
	if err := emptyDir(shmDir); err != nil {
		return err
	}
	if err := emptyDir(mqueueDir); err != nil {
		return err
	}
	if err := s.restoreDev(); err != nil {
		return err
	}
	if err := emptyDir(agent.SocketDir, agent.SocketName); err != nil {
		return err
	}
	return s.restoreHost()
}
