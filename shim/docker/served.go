package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// What ol-shim-runtime may serve from a pool: a container dockerd is
// starting with the ol-shim runtime, read from dockerd's own record of it
// on disk (DockerRootDir/containers/ID: config.v2.json, hostconfig.json),
// not through its API, which holds the container's lock while it starts
// it.

// containerIDRE is dockerd's container ID.
var containerIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// maxRecord bounds each file of dockerd's record read.
const maxRecord = 4 << 20

// readRecord reads one file of dockerd's record of container id into v,
// not following a symlink, bounded.
func (d *Docker) readRecord(id, name string, v any) error {
	root := d.rootDir()
	if root == "" {
		return fmt.Errorf("dockerd's root directory is not known")
	}
	path := filepath.Join(root, "containers", id, name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		return fmt.Errorf("%s: not a regular file of root's", path)
	}
	if err := json.NewDecoder(io.LimitReader(f, maxRecord)).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ServeCheck says whether container id, which dockerd is starting with
// ol-shim's runtime, can be served from a pool: it needs nothing a warm
// sandbox lacks (no mount or volume, not privileged, no device or added
// capability, no network: network none), and is not one of ol-shim's own
// sandboxes. It returns its image, or why not.
func (d *Docker) ServeCheck(ctx context.Context, id string) (image string, why string, err error) {
	if !containerIDRE.MatchString(id) {
		return "", "", fmt.Errorf("container id %.80q: %w: not dockerd's", id, errInvalid)
	}
	var c struct {
		Config struct {
			Image   string
			Labels  map[string]string
			Volumes map[string]struct{}
		}
		MountPoints map[string]json.RawMessage
	}
	if err := d.readRecord(id, "config.v2.json", &c); err != nil {
		return "", "", err
	}
	var h struct {
		Privileged     bool
		CapAdd         []string
		Devices        []json.RawMessage
		DeviceRequests []json.RawMessage
		Tmpfs          map[string]string
		Binds          []string
		Mounts         []json.RawMessage
		VolumesFrom    []string
		Links          []string
		NetworkMode    string
		PidMode        string
		IpcMode        string
		UTSMode        string
		UsernsMode     string
		CgroupnsMode   string
		Runtime        string
	}
	if err := d.readRecord(id, "hostconfig.json", &h); err != nil {
		return "", "", err
	}
	if _, ok := ourLabel(c.Config.Labels); ok {
		return "", "one of ol-shim's own sandboxes", nil
	}
	for _, x := range []struct {
		bad bool
		why string
	}{
		{c.Config.Image == "", "no image"},
		{len(c.MountPoints) > 0 || len(c.Config.Volumes) > 0 || len(h.Binds) > 0 || len(h.Mounts) > 0 || len(h.VolumesFrom) > 0, "it has volumes or mounts"},
		{len(h.Tmpfs) > 0, "it has tmpfs mounts"},
		{h.Privileged, "privileged"},
		{len(h.CapAdd) > 0, "it adds capabilities"},
		{len(h.Devices) > 0 || len(h.DeviceRequests) > 0, "it has devices"},
		{h.NetworkMode != "none", fmt.Sprintf("network %q: pool sandboxes have none (docker run --network none is served)", h.NetworkMode)},
		{len(h.Links) > 0, "it has links"},
		{h.PidMode != "" || h.UTSMode != "" || h.UsernsMode != "" || strings.HasPrefix(h.IpcMode, "container:") || h.IpcMode == "host", "it shares a namespace"},
	} {
		if x.bad {
			return "", x.why, nil
		}
	}
	return c.Config.Image, "", nil
}

// errInvalid marks bad arguments of ServeCheck.
var errInvalid = cerrdefs.ErrInvalidArgument
