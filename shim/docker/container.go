package docker

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/agent"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// ourLabel returns the first of ol-shim's container labels that labels
// holds.
func ourLabel(labels map[string]string) (string, bool) {
	for _, k := range []string{api.LabelManaged, api.LabelRoot, api.LabelPool, api.LabelSandbox, api.LabelSpec, api.LabelInstance} {
		if _, ok := labels[k]; ok {
			return k, true
		}
	}
	return "", false
}

// ours reports whether a container of image imageID that carries this
// root's label is ol-shim's: a container inherits its image's labels, so
// one whose image carries ol-shim's labels got them from the image, not
// from ol-shim (which makes no container of such an image: inspectImage).
// An image that cannot be inspected proves nothing: not ours, this time.
// Image IDs name content, so what an ID's labels are never changes: the
// answer is kept (at most 1024 images; then all are asked again).
func (d *Docker) ours(ctx context.Context, imageID string) bool {
	d.imgMu.Lock()
	labelled, known := d.imgLabelled[imageID]
	d.imgMu.Unlock()
	if known {
		return !labelled
	}
	if imageID == "" {
		return false
	}
	cctx, cancel := d.callCtx(ctx)
	res, err := d.cli.ImageInspect(cctx, imageID)
	cancel()
	if err != nil {
		d.log.Debug("an image of a container with this root's label cannot be inspected; leaving the container alone", "image", imageID, "error", err)
		return false
	}
	labelled = false
	if res.Config != nil {
		_, labelled = ourLabel(res.Config.Labels)
	}
	d.imgMu.Lock()
	if d.imgLabelled == nil || len(d.imgLabelled) >= 1024 {
		d.imgLabelled = map[string]bool{}
	}
	d.imgLabelled[imageID] = labelled
	d.imgMu.Unlock()
	if labelled {
		d.log.Warn("a container carries ol-shim's labels from its image; it is not ol-shim's, and is left alone", "image", imageID)
	}
	return !labelled
}

func (b *Backend) containerConfig(spec sandboxset.Spec) (*container.Config, *container.HostConfig) {
	s := b.spec
	cfg := &container.Config{
		Image:      s.Image,
		Env:        s.Env,
		WorkingDir: s.WorkingDir,
		User:       s.User,
		Labels: map[string]string{
			api.LabelManaged:  "true",
			api.LabelRoot:     b.d.cfg.RootID,
			api.LabelPool:     b.pool,
			api.LabelSandbox:  spec.ID,
			api.LabelSpec:     b.hash,
			api.LabelInstance: b.d.instance,
		},
	}
	mounts := []mount.Mount{{Type: mount.TypeBind, Source: spec.ScratchDir, Target: ScratchTarget}}
	if drv := b.d.cfg.VolumeDriver; drv != "" {
		// NoCopy: dockerd would otherwise copy the image's own /host into
		// a new volume, its owner and mode with it, over the volume's.
		mounts[0] = mount.Mount{Type: mount.TypeVolume, Source: spec.ID, Target: ScratchTarget,
			VolumeOptions: &mount.VolumeOptions{NoCopy: true, DriverConfig: &mount.Driver{Name: drv}}}
	}
	switch {
	case b.d.cfg.InitBinary != "":
		// ol-shim init is PID 1: the agent, and the pool's command as its
		// child if there is one. The pool's command replaces the image's
		// entrypoint and command.
		cfg.Entrypoint = []string{InitPath, "init"}
		if b.d.cfg.AgentDir != "" {
			cfg.Entrypoint = append(cfg.Entrypoint, "--agent", agent.SocketPath)
			mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: b.d.ctlDir(spec.ID), Target: agent.SocketDir})
		}
		cfg.Entrypoint = append(cfg.Entrypoint, "--")
		cfg.Cmd = slices.Clone(s.Cmd)
		if cfg.Cmd == nil {
			cfg.Cmd = []string{}
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: b.d.cfg.InitBinary, Target: InitPath, ReadOnly: true})
	default:
		cfg.Cmd = s.Cmd
		cfg.Entrypoint = []string{} // the pool's command replaces the image's
	}
	if s.NetworkMode() == "none" {
		// No network: dockerd then sets up none (no libnetwork sandbox,
		// no prestart hook, which re-executes dockerd's own binary and
		// was half a container start here: 190 ms against 90). The
		// container still has a network namespace of its own with only
		// loopback, up; dockerd writes no /etc/hosts for it, so the
		// daemon's (localhost) is mounted instead.
		cfg.NetworkDisabled = true
		if f := b.d.cfg.HostsFile; f != "" {
			mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: f, Target: "/etc/hosts", ReadOnly: true})
		}
	}
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.NetworkMode()),
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		CapAdd:         DefaultCapabilities,
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: s.ReadOnlyRootfs,
		Mounts:         mounts,
		Runtime:        s.Runtime,
	}
	if hc.Runtime == "" {
		hc.Runtime = b.d.DefaultRuntime()
	}
	if len(s.Tmpfs) > 0 {
		hc.Tmpfs = make(map[string]string, len(s.Tmpfs))
		for dir, size := range s.Tmpfs {
			hc.Tmpfs[dir] = fmt.Sprintf("rw,nosuid,nodev,size=%d,mode=1777", size)
		}
	}
	if s.MemoryBytes > 0 {
		hc.Memory = s.MemoryBytes
		hc.MemorySwap = s.MemoryBytes // swap off
	}
	if s.CPUs > 0 {
		hc.CPUPeriod = 100_000
		hc.CPUQuota = int64(s.CPUs * 100_000)
	}
	if s.PidsLimit > 0 {
		pl := s.PidsLimit
		hc.PidsLimit = &pl
	}
	return cfg, hc
}

// waitReady waits until the readiness file exists or the socket accepts a
// connection, the container stops, or the timeout passes.
func (b *Backend) waitReady(ctx context.Context, sb *Sandbox, r spec.Readiness) error {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = spec.DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := "file /host/" + r.File
	check := func() bool { return inScratch(sb.scratch, r.File, false) }
	if r.Socket != "" {
		what = "a connection on /host/" + r.Socket
		check = func() bool { return inScratch(sb.scratch, r.Socket, true) }
	}
	wait := 500 * time.Microsecond
	lastInspect := time.Now()
	for !check() {
		if time.Since(lastInspect) > 100*time.Millisecond {
			lastInspect = time.Now()
			if running, state, err := sb.running(ctx); err == nil && !running {
				return fmt.Errorf("sandbox %s: %w: container %.12s is %s before %s", sb.id, ErrNotReady, sb.container, state, what)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s: %w: no %s within %v", sb.id, ErrNotReady, what, timeout)
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
	return nil
}

// inScratch reports whether rel exists inside the scratch directory dir
// (with socket, whether it is a unix socket that accepts a connection). The
// sandbox owns what is in dir, so rel is resolved as if dir were the root:
// a symlink there cannot make this process, root on the host, look at or
// connect to anything outside it.
func inScratch(dir, rel string, socket bool) bool {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if !socket {
		return true
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false
	}
	// Connect through the handle, not the path: what was resolved is what
	// is connected to.
	c, err := net.DialTimeout("unix", fmt.Sprintf("/proc/self/fd/%d", fd), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// WriteHostsFile writes the hosts file of sandboxes with no network to
// path (replacing what is there) and returns path.
func WriteHostsFile(path string) (string, error) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hostsContent), 0o644); err != nil {
		return "", fmt.Errorf("hosts file for sandboxes: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("hosts file for sandboxes: %w", err)
	}
	return path, nil
}
