// Package spec is ol-shim's vocabulary for a pool: what its sandboxes are
// made from (PoolSpec, the container) and how the pool is sized
// (PoolConfig, what the config file's [pools.NAME] tables and the API's
// pool bodies hold), with the one validation of each and of pool names
// and images. It is a leaf: the API's wire types, the config file, the
// registry and the Docker backend all use it.
package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// ErrInvalidSpec marks a pool spec that cannot be used. Nothing is created
// for it. It is of class errdefs.ErrInvalidArgument.
var ErrInvalidSpec = errdefs.ErrInvalidArgument.WithMessage("invalid pool spec")

// MinMemoryBytes is the smallest memory limit Docker accepts.
const MinMemoryBytes = 6 << 20

// DefaultReadyTimeout bounds the wait for a readiness file or socket.
const DefaultReadyTimeout = 10 * time.Second

// Pull policies.
const (
	PullNever   = "never"   // the image must be present locally (default)
	PullMissing = "missing" // pull the image when it is not present
)

// PoolSpec is the function a pool runs: what every one of its sandbox
// containers is made from. Its Hash labels the containers, so a restart
// adopts only sandboxes made from the same spec.
type PoolSpec struct {
	// Image is a local image reference. Required.
	Image string `json:"image"`
	// Cmd is the command to run. Empty: ol-shim's idle init, which reaps
	// children and waits; work then comes through exec.
	Cmd []string `json:"cmd,omitempty"`
	// Env is a list of KEY=VALUE.
	Env []string `json:"env,omitempty"`
	// WorkingDir is the working directory in the container.
	WorkingDir string `json:"working_dir,omitempty"`
	// User is the user (name, uid or uid:gid) processes run as.
	User string `json:"user,omitempty"`
	// MemoryBytes limits memory; swap is off (memory+swap = memory). 0: no limit.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// CPUs limits CPU time, in CPUs (0.5 = half of one). 0: DefaultCPUs.
	CPUs float64 `json:"cpus,omitempty"`
	// PidsLimit limits the number of processes. 0: DefaultPidsLimit.
	PidsLimit int64 `json:"pids_limit,omitempty"`
	// ReadOnlyRootfs mounts the image read-only; /host stays writable.
	ReadOnlyRootfs bool `json:"read_only_rootfs,omitempty"`
	// Tmpfs mounts a tmpfs of at most the given bytes at each path
	// (nosuid, nodev, mode 1777); its pages count against the memory
	// limit.
	Tmpfs map[string]int64 `json:"tmpfs,omitempty"`
	// Runtime is the OCI runtime dockerd runs the sandboxes with (a name
	// of daemon.json's runtimes: "runsc", "crun", ...); empty: ol-shim's
	// where dockerd knows it, else dockerd's default.
	Runtime string `json:"runtime,omitempty"`
	// Network is "none" (default) or the name of a user-defined or bridge
	// network. "host" and "container:..." are refused.
	Network string `json:"network,omitempty"`
	// Pull is PullNever (default) or PullMissing.
	Pull string `json:"pull,omitempty"`
	// Ready, if set, says when a new sandbox is ready.
	Ready *Readiness `json:"ready,omitempty"`
}

// Readiness says when a new sandbox is ready to serve: when a file appears in
// its scratch directory, or when a unix socket there accepts a connection.
type Readiness struct {
	// File is a path relative to the scratch directory (/host inside).
	File string `json:"file,omitempty"`
	// Socket is a unix socket path relative to the scratch directory, e.g.
	// "ol.sock" for /host/ol.sock.
	Socket string `json:"socket,omitempty"`
	// Timeout bounds the wait; DefaultReadyTimeout if 0.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// The patterns are compiled on first use: every process that links this
// package (the CLI, each sandbox's init) would pay for them at its start.
var (
	envKeyRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`) })
	userRE   = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)
	})
	netRE     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`) })
	imageIDRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(sha256:)?[a-f0-9]{64}$`) })
)

// Validate reports the first problem with the spec, naming the field.
func (p PoolSpec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	if err := ValidateImage(p.Image); err != nil {
		return err
	}
	for i, a := range p.Cmd {
		if strings.ContainsRune(a, 0) {
			return bad("cmd[%d]: contains a NUL byte", i)
		}
	}
	if len(p.Cmd) > 0 && p.Cmd[0] == "" {
		return bad("cmd[0]: empty program name")
	}
	if err := ValidateEnv(p.Env); err != nil {
		return err
	}
	if p.WorkingDir != "" && (!path.IsAbs(p.WorkingDir) || strings.ContainsRune(p.WorkingDir, 0)) {
		return bad("working_dir %q: must be an absolute path", p.WorkingDir)
	}
	if p.User != "" && !userRE().MatchString(p.User) {
		return bad("user %q: want a name, uid, or uid:gid", p.User)
	}
	switch {
	case p.MemoryBytes < 0:
		return bad("memory %d: must not be negative", p.MemoryBytes)
	case p.MemoryBytes > 0 && p.MemoryBytes < MinMemoryBytes:
		return bad("memory %d bytes: below Docker's minimum of %d (6 MiB)", p.MemoryBytes, MinMemoryBytes)
	case !finite(p.CPUs):
		return bad("cpus %g: not a number", p.CPUs)
	case p.CPUs < 0:
		return bad("cpus %g: must not be negative", p.CPUs)
	case p.CPUs > 0 && p.CPUs < 0.01:
		return bad("cpus %g: below the minimum of 0.01", p.CPUs)
	case p.CPUs > float64(runtime.NumCPU()):
		return bad("cpus %g: more than the %d CPUs of this host", p.CPUs, runtime.NumCPU())
	case p.PidsLimit < 0:
		return bad("pids_limit %d: must not be negative", p.PidsLimit)
	case p.Runtime != "" && (len(p.Runtime) > 64 || !runtimeRE().MatchString(p.Runtime)):
		return bad("runtime %q: want the name of one of dockerd's runtimes", truncateSpec(p.Runtime, 80))
	case len(p.Tmpfs) > MaxTmpfs:
		return bad("tmpfs: %d mounts, more than %d", len(p.Tmpfs), MaxTmpfs)
	}
	for dir, size := range p.Tmpfs {
		if err := checkTmpfs(dir, size); err != nil {
			return bad("%v", err)
		}
	}
	switch n := p.Network; {
	case n == "" || n == "none":
	case n == "host" || strings.HasPrefix(n, "container:") || !netRE().MatchString(n):
		return bad("network %q: not allowed (want none, bridge or a network name)", n)
	}
	switch p.Pull {
	case "", PullNever, PullMissing:
	default:
		return bad("pull %q: want %q or %q", p.Pull, PullNever, PullMissing)
	}
	if r := p.Ready; r != nil {
		if (r.File == "") == (r.Socket == "") {
			return bad("ready: set exactly one of file and socket")
		}
		for _, rel := range []string{r.File, r.Socket} {
			if rel == "" {
				continue
			}
			if path.IsAbs(rel) || path.Clean(rel) != rel || rel == "." || strings.HasPrefix(rel, "../") || rel == ".." {
				return bad("ready path %q: must be a clean path relative to the scratch directory (/host)", rel)
			}
		}
		if r.Timeout < 0 {
			return bad("ready timeout %v: must not be negative", r.Timeout)
		}
	}
	return nil
}

// ValidateImage checks the form of an image reference: present, at most
// maxImage bytes, no space or control character. shim/imageref checks it in
// full, with Docker's grammar, at every daemon gate; this package does not,
// so that the client it is linked into starts faster. Errors are
// ErrInvalidSpec.
func ValidateImage(image string) error {
	if image == "" {
		return fmt.Errorf("%w: image: required", ErrInvalidSpec)
	}
	if len(image) > maxImage {
		return fmt.Errorf("%w: image: %d bytes, more than %d", ErrInvalidSpec, len(image), maxImage)
	}
	if i := strings.IndexFunc(image, func(r rune) bool { return r <= ' ' || r == 0x7f || r == utf8.RuneError }); i >= 0 {
		return fmt.Errorf("%w: image %q: a space or control character at byte %d", ErrInvalidSpec, image, i)
	}
	return nil
}

// maxImage bounds an image reference (Docker's own names are far shorter).
const maxImage = 4096

// IsImageID reports whether image is an image ID (sha256:HEX or HEX),
// which names a local image too.
func IsImageID(image string) bool { return imageIDRE().MatchString(image) }

// Limits every sandbox gets unless its pool sets its own: a fork bomb in one
// sandbox stops at its pids limit, a busy loop at its CPU share, and the
// host keeps running.
const (
	DefaultPidsLimit = 512
	DefaultCPUs      = 1.0
)

// WithDefaults returns the spec with the default limits filled in where it
// sets none: DefaultPidsLimit, and DefaultCPUs (or all of the host's CPUs,
// if it has fewer).
func (p PoolSpec) WithDefaults() PoolSpec {
	if p.PidsLimit == 0 {
		p.PidsLimit = DefaultPidsLimit
	}
	if p.CPUs == 0 {
		p.CPUs = min(DefaultCPUs, float64(runtime.NumCPU()))
	}
	return p
}

// Hash is a short digest of the spec, stable across restarts and releases
// as long as the spec's fields keep their meaning.
func (p PoolSpec) Hash() string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("spec: marshal pool spec: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// runtimeRE matches an OCI runtime's name in dockerd.
var runtimeRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`) })

// MaxTmpfs bounds a pool's tmpfs mounts.
const MaxTmpfs = 8

// checkTmpfs checks one tmpfs mount: an absolute, clean path that is not
// one ol-shim or the kernel mounts, and a size within [4 KiB, 16 GiB].
func checkTmpfs(dir string, size int64) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" || strings.ContainsAny(dir, ",:\x00") || len(dir) > 256 {
		return fmt.Errorf("tmpfs %q: want a clean absolute path other than /, without ',' or ':'", truncateSpec(dir, 80))
	}
	for _, r := range []string{"/host", "/.ol-shim", "/proc", "/sys", "/dev", "/etc/hosts"} {
		if dir == r || strings.HasPrefix(dir, r+"/") {
			return fmt.Errorf("tmpfs %q: %s is ol-shim's or the kernel's", dir, r)
		}
	}
	if size < 4<<10 || size > 16<<30 {
		return fmt.Errorf("tmpfs %q: size %d bytes: want 4K to 16G", dir, size)
	}
	return nil
}

func truncateSpec(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// NetworkMode is the Docker network mode of the spec: "none" unless it
// names a network.
func (p PoolSpec) NetworkMode() string {
	if p.Network == "" {
		return "none"
	}
	return p.Network
}
