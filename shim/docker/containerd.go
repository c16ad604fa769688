package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Pause and resume go to containerd's task API in dockerd's namespace
// ("moby"), one process hop short of dockerd's own calls (dockerd ->
// containerd -> shim -> runc becomes ol-shim -> containerd -> shim ->
// runc). dockerd learns of each from containerd's events (TaskPaused,
// TaskResumed) and keeps its record (`docker inspect`'s State.Paused,
// `docker ps`'s "(Paused)") true on its own, as it does for `ctr t pause`.
//
// It is used only where it can be: a dockerd on this host (a unix socket),
// a containerd socket found from it that this process may open, and a
// containerd that knows the container. Anything else falls back to
// dockerd's API, for good once containerd refuses (logged once).

// Containerd modes (DockerConfig.Containerd).
const (
	ContainerdAuto = "auto" // find dockerd's containerd; Docker's API if there is none
	ContainerdOff  = "off"  // always Docker's API
)

// containerdNamespace is the namespace dockerd keeps its containers in.
const containerdNamespace = "moby"

// containerdCandidates are where dockerd's containerd listens when dockerd
// names none: its own (dockerd started it) first, then the system's.
var containerdCandidates = []string{
	"/run/docker/containerd/containerd.sock",
	"/var/run/docker/containerd/containerd.sock",
	"/run/containerd/containerd.sock",
}

// taskAPI pauses and resumes containers through containerd.
type taskAPI struct {
	socket string
	conn   *grpc.ClientConn
	tasks  tasks.TasksClient
	off    atomic.Bool // containerd refused: Docker's API from now on
	proven atomic.Bool // containerd paused or resumed one of dockerd's containers
	// unanswered counts calls a never-proven containerd did not answer.
	unanswered atomic.Int32
	once       sync.Once // the log line for off
}

// newTaskAPI connects (lazily: grpc dials on first call) to the containerd
// socket mode names or finds. It returns nil, with the reason, where the
// task API is not to be used.
func newTaskAPI(mode, dockerHost string) (*taskAPI, string) {
	switch mode {
	case ContainerdOff:
		return nil, "turned off (--containerd off)"
	case "", ContainerdAuto:
		if !localDocker(dockerHost) {
			return nil, fmt.Sprintf("dockerd at %s is not on this host", dockerHost)
		}
		sock, why := findContainerd()
		if sock == "" {
			return nil, why
		}
		mode = sock
	default:
		if !filepath.IsAbs(mode) {
			return nil, fmt.Sprintf("containerd socket %q: not an absolute path", mode)
		}
	}
	fi, err := os.Stat(mode)
	if err != nil {
		return nil, fmt.Sprintf("containerd socket: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Sprintf("containerd socket %s: not a socket", mode)
	}
	if err := unix.Access(mode, unix.W_OK); err != nil {
		return nil, fmt.Sprintf("containerd socket %s: %v", mode, err)
	}
	conn, err := grpc.NewClient("unix://"+mode,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<20)))
	if err != nil {
		return nil, fmt.Sprintf("containerd socket %s: %v", mode, err)
	}
	return &taskAPI{socket: mode, conn: conn, tasks: tasks.NewTasksClient(conn)}, ""
}

// localDocker reports whether host (a DOCKER_HOST value; empty is the
// default socket) is a unix socket on this host.
func localDocker(host string) bool {
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		return true
	}
	u, err := url.Parse(host)
	return err == nil && u.Scheme == "unix"
}

// findContainerd finds dockerd's containerd: the --containerd it was
// started with (its command line, or "containerd" in daemon.json), else the
// first candidate socket that exists. A rootless dockerd (not root's) has
// its containerd in its own namespaces: none is used.
func findContainerd() (string, string) {
	pid, uid := dockerdProcess(procRoot)
	if pid > 0 && uid != 0 {
		return "", "dockerd is rootless"
	}
	if pid > 0 {
		if sock := containerdFlag(procRoot, pid); sock != "" {
			return sock, ""
		}
	}
	if b, err := os.ReadFile("/etc/docker/daemon.json"); err == nil {
		var conf struct {
			Containerd string `json:"containerd"`
		}
		if json.Unmarshal(b, &conf) == nil && conf.Containerd != "" {
			return conf.Containerd, ""
		}
	}
	for _, c := range containerdCandidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return c, ""
		}
	}
	return "", "no containerd socket found"
}

// procRoot is where /proc is (tests give another).
var procRoot = "/proc"

// dockerdProcess finds a process named dockerd in this pid namespace and
// its owner's uid; 0, 0 if there is none. Only a process of ol-shim's own
// pid namespace counts: every sandbox has a pid namespace of its own, so
// no process a sandbox starts, whatever its name and command line, is
// taken for dockerd.
func dockerdProcess(proc string) (pid, uid int) {
	self, err := os.Readlink(proc + "/self/ns/pid")
	if err != nil {
		return 0, 0
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("%s/%d/comm", proc, p))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("%s/%d/ns/pid", proc, p)); err != nil || ns != self {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("%s/%d/status", proc, p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				uid, _ = strconv.Atoi(f[1])
			}
		}
		return p, uid
	}
	return 0, 0
}

// containerdFlag returns the --containerd value of process pid's command
// line, if any.
func containerdFlag(proc string, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/cmdline", proc, pid))
	if err != nil {
		return ""
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--containerd="):
			return strings.TrimPrefix(a, "--containerd=")
		case a == "--containerd" && i+1 < len(args):
			return args[i+1]
		}
	}
	return ""
}

// errNoTaskAPI: the call was not made through containerd; the caller uses
// Docker's API.
var errNoTaskAPI = errors.New("containerd's task API is not in use")

// errNotHere: containerd does not know the container. It may be gone, or
// this may not be dockerd's containerd: the caller asks Docker's API, and
// turns the task API off if that finds the container (see notDockerds).
var errNotHere = errors.New("containerd does not know the container")

// call makes one task API call for container id, in dockerd's namespace.
// It returns errNoTaskAPI where containerd is not to be used (a containerd
// that does not answer turns it off for good) and errNotHere where it does
// not know the container.
func (t *taskAPI) call(ctx context.Context, log *slog.Logger, id string, pause bool) error {
	if t == nil || t.off.Load() {
		return errNoTaskAPI
	}
	ctx, cancel := context.WithTimeout(ctx, taskAPITimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", containerdNamespace)
	var err error
	if pause {
		_, err = t.tasks.Pause(ctx, &tasks.PauseTaskRequest{ContainerID: id})
	} else {
		_, err = t.tasks.Resume(ctx, &tasks.ResumeTaskRequest{ContainerID: id})
	}
	if err == nil {
		t.proven.Store(true)
		return nil
	}
	switch status.Code(err) {
	case codes.NotFound:
		return errNotHere
	case codes.Unavailable:
		// A containerd that worked is restarting with dockerd: this call
		// goes through dockerd, the next tries containerd again. One that
		// never answered is not there.
		if !t.proven.Load() && t.unanswered.Add(1) >= maxUnanswered {
			t.turnOff(log, err)
		}
		return errNoTaskAPI
	case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		t.turnOff(log, err)
		return errNoTaskAPI
	}
	return fmt.Errorf("containerd: %s", status.Convert(err).Message())
}

// notDockerds is told that Docker's API paused or resumed a container this
// containerd did not know: it is not dockerd's, and is not asked again
// (unless it had already paused others, when the container was just gone
// a moment).
func (t *taskAPI) notDockerds(log *slog.Logger) {
	if !t.proven.Load() {
		t.turnOff(log, errNotHere)
	}
}

func (t *taskAPI) turnOff(log *slog.Logger, err error) {
	t.off.Store(true)
	t.once.Do(func() {
		log.Warn("containerd's task API refused; pausing through dockerd from now on", "socket", t.socket, "error", err)
	})
}

// Using reports where pauses go: containerd's socket, or "" for dockerd.
func (t *taskAPI) using() string {
	if t == nil || t.off.Load() {
		return ""
	}
	return t.socket
}

// close closes the connection.
func (t *taskAPI) close() {
	if t != nil {
		t.conn.Close()
	}
}

// maxUnanswered is how many calls a containerd that never answered may
// fail before it is not asked again.
const maxUnanswered = 2

// taskAPITimeout bounds one pause or resume through containerd.
const taskAPITimeout = 10 * time.Second
