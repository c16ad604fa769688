package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/registry"
)

// Attach returns the Sandbox of an existing container, for Reconcile to hand
// to a Set.
func (d *Docker) Attach(sandboxID, containerID, scratchDir string) *Sandbox {
	return &Sandbox{d: d, id: sandboxID, container: containerID, scratch: scratchDir}
}

// AsDocker returns the Docker sandbox inside sb, or false if sb is not one.
func AsDocker(sb sandboxset.Sandbox) (*Sandbox, bool) {
	s, ok := registry.Innermost(sb).(*Sandbox)
	return s, ok
}

// Sandbox is a sandbox container.
type Sandbox struct {
	d         *Docker
	id        string
	container string
	scratch   string

	mu      sync.Mutex
	initPid int           // guarded by mu: the container's init, here; 0 until ident
	procs   string        // guarded by mu: its cgroup's cgroup.procs
	marked  map[proc]bool // guarded by mu: the processes Mark saw
	// fresh: just made, with a pool command its init may not have started
	// yet (Mark waits for it). Guarded by mu.
	fresh bool
	// taskPaused: paused through containerd, which dockerd learns of from
	// an event that may not have arrived yet. Guarded by mu.
	taskPaused bool
}

// ID returns the sandbox ID.
func (s *Sandbox) ID() string { return s.id }

// ContainerID returns the Docker container ID.
func (s *Sandbox) ContainerID() string { return s.container }

// ScratchDir returns the host path mounted at /host.
func (s *Sandbox) ScratchDir() string { return s.scratch }

// Pause freezes the container: through containerd's task API where
// dockerd's containerd is reachable (see taskAPI), else through dockerd.
func (s *Sandbox) Pause(ctx context.Context) error {
	if err := s.pauseResume(ctx, true); err != nil {
		return fmt.Errorf("pause sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
	return nil
}

// Unpause resumes the container; it fails if the container died while
// paused.
func (s *Sandbox) Unpause(ctx context.Context) error {
	if err := s.pauseResume(ctx, false); err != nil {
		return fmt.Errorf("unpause sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
	return nil
}

func (s *Sandbox) pauseResume(ctx context.Context, pause bool) error {
	err := s.d.tasks.call(ctx, s.d.log, s.container, pause)
	if err == nil {
		s.mu.Lock()
		s.taskPaused = pause
		s.mu.Unlock()
		if pause {
			s.awaitDockerPaused(ctx)
		}
		return nil
	}
	if err != errNoTaskAPI && err != errNotHere {
		return err
	}
	cctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	if pause {
		_, err = s.d.cli.ContainerPause(cctx, s.container, client.ContainerPauseOptions{})
	} else {
		_, err = s.d.cli.ContainerUnpause(cctx, s.container, client.ContainerUnpauseOptions{})
	}
	if err == nil && s.d.tasks != nil {
		s.d.tasks.notDockerds(s.d.log)
	}
	return err
}

// dockerViewWait bounds the wait for dockerd to record a pause made
// through containerd.
const dockerViewWait = 2 * time.Second

// awaitDockerPaused waits until dockerd's record says paused, as it does
// once containerd's TaskPaused event reached it (a millisecond or two): a
// Pause returns with Docker's view true, so `docker ps`, `docker inspect`
// and a reconcile after a crash see a paused sandbox as paused. A resume
// is not waited for (it is on the caller's path): dockerd's record says
// running a millisecond or two after the sandbox runs.
func (s *Sandbox) awaitDockerPaused(ctx context.Context) {
	deadline := time.Now().Add(dockerViewWait)
	for wait := 200 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		cctx, cancel := s.d.callCtx(ctx)
		res, err := s.d.cli.ContainerInspect(cctx, s.container, client.ContainerInspectOptions{})
		cancel()
		if err != nil || res.Container.State == nil || res.Container.State.Paused || !res.Container.State.Running {
			return
		}
		if time.Now().After(deadline) {
			s.d.log.Warn("dockerd has not recorded a pause containerd made", "sandbox", s.id, "container", s.container, "waited", dockerViewWait)
			return
		}
		time.Sleep(wait)
	}
}

// pauseLagWait bounds the wait for dockerd's record of a container's pause
// state to catch up with the container.
const pauseLagWait = time.Second

// pauseLag calls call again while it fails with the conflict whose text
// holds what, for up to pauseLagWait. dockerd records a pause or unpause
// when its call returns and again when containerd's event for it arrives;
// after a failed exec start and a quick pause and unpause, the late pause
// event marks the running container paused until the unpause event
// follows, and an exec in that window gets a conflict.
func pauseLag(ctx context.Context, what string, call func() error) error {
	deadline := time.Now().Add(pauseLagWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := call()
		if err == nil || !cerrdefs.IsConflict(err) || !strings.Contains(err.Error(), what) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// Destroy force-removes the container, paused or not. A container that is
// already gone counts as removed. The scratch directory (or volume) belongs
// to the Set's ScratchMaker, which removes it next.
func (s *Sandbox) Destroy(ctx context.Context, reason string) error {
	s.d.log.Debug("destroy sandbox", "sandbox", s.id, "container", s.container, "reason", reason)
	return s.remove(ctx)
}

// remove force-removes the container. A call that times out (a dockerd
// swamped by hundreds of creates) is tried again while ctx has time left:
// a container whose removal gave up would outlive its pool. Three tries at
// most.
func (s *Sandbox) remove(ctx context.Context) error {
	// dockerd kills a container it knows is paused and thaws it; one it
	// does not know is paused yet would not die of its SIGKILL until
	// thawed. So what containerd paused is resumed first.
	s.mu.Lock()
	thaw := s.taskPaused
	s.mu.Unlock()
	if thaw {
		_ = s.pauseResume(ctx, false)
	}
	for try := 1; ; try++ {
		cctx, cancel := s.d.callCtx(ctx)
		_, err := s.d.cli.ContainerRemove(cctx, s.container, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		switch {
		case err == nil || cerrdefs.IsNotFound(err):
			s.d.removeCtl(s.id)
			return nil
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && try < 3:
			s.d.log.Warn("removing a container timed out; trying again", "sandbox", s.id, "container", s.container)
			continue
		}
		return fmt.Errorf("remove sandbox %s (container %.12s): %w", s.id, s.container, err)
	}
}

func (s *Sandbox) running(ctx context.Context) (bool, string, error) {
	ctx, cancel := s.d.callCtx(ctx)
	defer cancel()
	res, err := s.d.cli.ContainerInspect(ctx, s.container, client.ContainerInspectOptions{})
	if err != nil {
		return false, "", err
	}
	st := res.Container.State
	if st == nil {
		return false, "unknown", nil
	}
	return st.Running, string(st.Status), nil
}
