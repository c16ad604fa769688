package scratch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/internal/serve"
)

// ServerConfig is one volume server's: what it serves, where, with which
// quota.
type ServerConfig struct {
	Name       string
	DataDir    string
	Mountpoint string
	Socket     string
	MaxBytes   int64
	MaxInodes  int64
	// Passthrough lets the kernel read files opened read-only.
	Passthrough bool
	// FuseFD, when not 0, is the /dev/fuse descriptor of the volume's
	// mount, which the daemon made at Mountpoint: the server serves it,
	// then confines itself to an empty root (it must have been started in
	// a mount namespace of its own), and leaves unmounting to the daemon.
	FuseFD  int
	Version string
	Logger  *slog.Logger
}

// ServeVolume serves one quota'd volume until it is unmounted (by a
// request on its control socket, or from outside) or ctx ends: it mounts
// the volume's FUSE file system, then answers on its control socket.
func ServeVolume(ctx context.Context, cfg ServerConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	q, err := NewQuota(cfg.DataDir, cfg.MaxBytes, cfg.MaxInodes)
	if err != nil {
		return fmt.Errorf("volume %q: %w", cfg.Name, err)
	}
	mnt := cfg.Mountpoint
	if cfg.FuseFD != 0 {
		mnt = fmt.Sprintf("/dev/fd/%d", cfg.FuseFD)
	}
	srv, err := MountQuota(cfg.DataDir, mnt, q, cfg.Name, cfg.Passthrough, false)
	if err != nil {
		return fmt.Errorf("volume %q: %w", cfg.Name, err)
	}
	started := time.Now()
	// The socket stays when the server ends (once confined, no path leads
	// there, and no handle on a host directory is kept): the daemon finds
	// it dead and replaces or removes it.
	os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		if cfg.FuseFD == 0 {
			srv.Unmount()
		}
		return fmt.Errorf("volume %q: control socket: %w", cfg.Name, err)
	}
	os.Chmod(cfg.Socket, 0o600)
	// Confined, or not serving at all: a server that cannot confine itself
	// stops (fail closed), and its volume's users get I/O errors until the
	// daemon mounts it again.
	closeUp := func(err error) error {
		l.Close()
		if cfg.FuseFD == 0 {
			srv.Unmount()
		}
		return fmt.Errorf("volume %q: %w", cfg.Name, err)
	}
	confined := false
	var dataFd int
	if cfg.FuseFD != 0 {
		// A handle on the volume's directory, for Landlock's rule below
		// (closed after it): the server holds no other handle on a
		// directory of the host once confined.
		if dataFd, err = unix.Open(cfg.DataDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return closeUp(err)
		}
		if err := confine(filepath.Dir(cfg.Socket)); err != nil {
			unix.Close(dataFd)
			return closeUp(err)
		}
		confined = true
	}
	// Unmounting is the daemon's once the mount is its (FuseFD), so the
	// server needs CAP_SYS_ADMIN only for passthrough's backing files; it
	// keeps it only where Landlock holds it to its volume.
	if confined && srv.Passthrough == "on" {
		abi, _ := landlockABI()
		if err := adminNeedsLandlock(abi); err != nil {
			unix.Close(dataFd)
			return closeUp(err)
		}
	}
	if err := dropCapabilities(cfg.FuseFD == 0 || srv.Passthrough == "on"); err != nil {
		if confined {
			unix.Close(dataFd)
		}
		return closeUp(err)
	}
	landlocked := "no"
	if confined {
		err := restrictToVolume(dataFd)
		unix.Close(dataFd)
		if err != nil {
			return closeUp(err)
		}
		landlocked = "yes, where the kernel has it"
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			go func() {
				if err := srv.Unmount(); err != nil {
					// Busy: detach; the server ends when the last user goes.
					unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH)
				}
			}()
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) {
		b, i := q.Usage()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ServerHealth{Name: cfg.Name, PID: os.Getpid(), Version: cfg.Version, Started: started, BytesUsed: b, InodesUsed: i, Passthrough: srv.Passthrough})
	})
	mux.HandleFunc("POST /v1/unmount", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.FuseFD != 0 {
			http.Error(w, "this volume's mount is the daemon's: unmount "+cfg.Mountpoint+" and the server ends", http.StatusConflict)
			return
		}
		log.Info("unmount requested", "volume", cfg.Name)
		w.WriteHeader(http.StatusNoContent)
		unmount()
	})
	hs := serve.Server(mux, serve.DefaultLimits)
	go hs.Serve(serve.Listener(l, serve.DefaultLimits))
	log.Info("serving volume", "volume", cfg.Name, "mountpoint", cfg.Mountpoint, "pid", os.Getpid(), "passthrough", srv.Passthrough, "confined", confined, "landlock", landlocked)
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	var stopped error
	select {
	case <-served:
	case <-ctx.Done():
		if cfg.FuseFD == 0 {
			unmount()
			<-served
			break
		}
		// The mount is the daemon's: stopping here ends the
		// connection, and its users get I/O errors until the daemon
		// mounts the volume again (it notices within seconds).
		stopped = fmt.Errorf("volume %q: stopped while mounted: %w", cfg.Name, context.Cause(ctx))
	}
	hs.Close()
	if !confined {
		os.Remove(cfg.Socket)
	}
	if stopped != nil {
		return stopped
	}
	log.Info("volume unmounted; server exits", "volume", cfg.Name)
	return nil
}

// serverCaps are the only capabilities a volume server keeps once its
// volume is mounted: to act on files of any owner in the volume (as the
// kernel already checked the sandbox may). It loses everything else (no
// raw I/O, no ptrace, no kill of others' processes, no network
// administration, no module loading), and can gain nothing back
// (no_new_privs, bounding set cut to the same). CAP_SYS_ADMIN stays only
// where it is needed: for passthrough's backing files, and for a server
// that mounted its volume itself and so unmounts it (dropCapabilities).
var serverCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
}

// landlockABI is the kernel's Landlock ABI version (0: none); a variable
// for tests.
var landlockABI = llsys.LandlockGetABIVersion

// adminNeedsLandlock refuses a server that would keep CAP_SYS_ADMIN
// (passthrough's backing files) where the kernel has no Landlock (abi 0)
// to hold it to its volume's directory.
func adminNeedsLandlock(abi int) error {
	if abi < 1 {
		return errors.New("passthrough needs CAP_SYS_ADMIN, which a volume server keeps only under Landlock, and this kernel has no Landlock: mount the volume without passthrough")
	}
	return nil
}

// restrictToVolume puts the server, every thread of it, in a Landlock
// domain where the only files it may open, make or remove are beneath its
// volume's directory (dataFd, reached through /proc/self/fd once confined)
// and /dev/null, and where it may use no TCP port. A kernel without
// Landlock leaves it as it is (best effort); a kernel with it that refuses
// is an error.
func restrictToVolume(dataFd int) error {
	dir := fmt.Sprintf("/proc/self/fd/%d", dataFd)
	err := landlock.V7.BestEffort().Restrict(
		landlock.RWDirs(dir).WithRefer(),
		landlock.RWFiles("/dev/null"),
	)
	if err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	return nil
}

// dropCapabilities keeps serverCaps, and CAP_SYS_ADMIN if admin, and drops
// every other capability, in every thread of the process.
func dropCapabilities(admin bool) error {
	var keep [2]uint32
	caps := serverCaps
	if admin {
		caps = append(caps[:len(caps):len(caps)], unix.CAP_SYS_ADMIN)
	}
	for _, c := range caps {
		keep[c/32] |= 1 << (c % 32)
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if keep[c/32]&(1<<(c%32)) != 0 {
			continue
		}
		if _, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); errno != 0 && errno != syscall.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, errno)
		}
	}
	if _, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{{Effective: keep[0], Permitted: keep[0]}, {Effective: keep[1], Permitted: keep[1]}}
	if _, _, errno := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	return nil
}
