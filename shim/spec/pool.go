package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-lambda/ol-shim/internal/names"
	"github.com/open-lambda/ol-shim/internal/units"
)

// DefaultPoolMemory is a pool's memory limit when it names none.
const DefaultPoolMemory = 256 << 20

// Duration is a time.Duration written as "10m" or "250ms".
type Duration time.Duration

// UnmarshalText parses a duration; negative ones are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want e.g. 250ms, 30s or 10m", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q: must not be negative", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a byte count written as "256M" or "1G" (or, in JSON, a number of
// bytes).
type Size int64

// UnmarshalText parses a size as docker run's --memory does (see units.ParseSize).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := units.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// UnmarshalJSON reads a size as a string ("256M") or a whole number of
// bytes.
func (s *Size) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		return s.UnmarshalText([]byte(str))
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("size %s: want a whole number of bytes or a string like \"256M\"", truncate(string(b), 40))
	}
	*s = Size(v)
	return nil
}

// MarshalText writes the size in bytes.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }

// ReadyConfig is a pool's readiness check.
type ReadyConfig struct {
	File    string   `toml:"file" json:"file,omitempty"`
	Socket  string   `toml:"socket" json:"socket,omitempty"`
	Timeout Duration `toml:"timeout" json:"timeout,omitempty"`
}

// PoolConfig is one pool: the function's container and the pool's sizing.
// It is what the config file's [pools.NAME] tables and the API's pool
// bodies hold.
type PoolConfig struct {
	Image          string   `toml:"image" json:"image"`
	Cmd            []string `toml:"cmd" json:"cmd,omitempty"`
	Env            []string `toml:"env" json:"env,omitempty"`
	WorkingDir     string   `toml:"working_dir" json:"working_dir,omitempty"`
	User           string   `toml:"user" json:"user,omitempty"`
	Memory         Size     `toml:"memory" json:"memory,omitempty"`
	CPUs           float64  `toml:"cpus" json:"cpus,omitempty"`
	Pids           int64    `toml:"pids" json:"pids,omitempty"`
	ReadOnlyRootfs bool     `toml:"read_only_rootfs" json:"read_only_rootfs,omitempty"`
	// Tmpfs: a tmpfs of at most the given size at each path, e.g.
	// {"/tmp" = "64M"}: where a read-only root file system's sandbox may
	// still write, bounded, in memory.
	Tmpfs map[string]Size `toml:"tmpfs" json:"tmpfs,omitempty"`
	// Runtime is the OCI runtime of the pool's sandboxes: a name dockerd
	// knows (daemon.json's runtimes, e.g. "runsc" or "crun"); empty:
	// "ol-shim" where it is registered (ol-shim runtime install), else
	// dockerd's default.
	Runtime string `toml:"runtime" json:"runtime,omitempty"`
	// Recycle: after a run that does not keep its sandbox, the sandbox is
	// made as it was made (every process killed, everything a run can
	// write emptied, the pool's command started again) and goes back to
	// the pool as fresh, instead of being destroyed. Needs ReadOnlyRootfs.
	Recycle       bool         `toml:"recycle" json:"recycle,omitempty"`
	Network       string       `toml:"network" json:"network,omitempty"`
	Pull          string       `toml:"pull" json:"pull,omitempty"`
	Ready         *ReadyConfig `toml:"ready" json:"ready,omitempty"`
	MinIdle       int          `toml:"min_idle" json:"min_idle,omitempty"`
	MaxSize       int          `toml:"max_size" json:"max_size,omitempty"`
	IdleTTL       Duration     `toml:"idle_ttl" json:"idle_ttl,omitempty"`
	PauseGrace    Duration     `toml:"pause_grace" json:"pause_grace,omitempty"`
	ScratchSize   Size         `toml:"scratch_size" json:"scratch_size,omitempty"`
	ScratchInodes int64        `toml:"scratch_inodes" json:"scratch_inodes,omitempty"`
	// ScratchExec lets programs on a limited /host run: a sandbox's
	// kernel backend volume is mounted noexec without it.
	ScratchExec bool `toml:"scratch_exec" json:"scratch_exec,omitempty"`
	// Adapt: the pool's target of idle sandboxes follows demand, above
	// min_idle (the default); false keeps it at min_idle.
	Adapt *bool `toml:"adapt" json:"adapt,omitempty"`
	// Owner is who may change, warm, shrink and remove the pool, and use
	// it: "" for the host's administrator (the config file's pools, and
	// those root makes), else "uid:N" (a local client) or "tls:SUBJECT" (a
	// remote one). The API sets it to its caller's; only root may name
	// another.
	Owner string `toml:"owner" json:"owner,omitempty"`
	// Shared: an administrator's pool that a run or acquire by image of
	// any client may land in. Pools that are not shared serve, by image,
	// only their owner (and root); by name, the administrator's serve
	// every client.
	Shared bool `toml:"shared" json:"shared,omitempty"`
}

// Adapts reports whether the pool's target follows demand.
func (p PoolConfig) Adapts() bool { return p.Adapt == nil || *p.Adapt }

// Spec returns the container spec of the pool.
func (p PoolConfig) Spec() PoolSpec {
	s := PoolSpec{
		Image: p.Image, Cmd: p.Cmd, Env: p.Env, WorkingDir: p.WorkingDir, User: p.User,
		MemoryBytes: int64(p.Memory), CPUs: p.CPUs, PidsLimit: p.Pids,
		ReadOnlyRootfs: p.ReadOnlyRootfs, Network: p.Network, Pull: p.Pull, Runtime: p.Runtime,
	}
	if len(p.Tmpfs) > 0 {
		s.Tmpfs = make(map[string]int64, len(p.Tmpfs))
		for dir, size := range p.Tmpfs {
			s.Tmpfs[dir] = int64(size)
		}
	}
	if r := p.Ready; r != nil {
		s.Ready = &Readiness{File: r.File, Socket: r.Socket, Timeout: time.Duration(r.Timeout)}
	}
	return s
}

// Quotad reports whether the pool's scratch has a size or inode limit
// (and so is served through FUSE).
func (p PoolConfig) Quotad() bool { return p.ScratchSize > 0 || p.ScratchInodes > 0 }

// Validate reports the first problem with the pool, naming the field.
// Errors are ErrInvalidSpec.
func (p PoolConfig) Validate() error {
	if err := p.Spec().Validate(); err != nil {
		return err
	}
	switch {
	case p.MinIdle < 0:
		return fmt.Errorf("%w: min_idle %d: must not be negative", ErrInvalidSpec, p.MinIdle)
	case p.MaxSize < 0:
		return fmt.Errorf("%w: max_size %d: must not be negative", ErrInvalidSpec, p.MaxSize)
	case p.MaxSize > 0 && p.MinIdle > p.MaxSize:
		return fmt.Errorf("%w: min_idle %d is more than max_size %d", ErrInvalidSpec, p.MinIdle, p.MaxSize)
	case p.ScratchInodes < 0:
		return fmt.Errorf("%w: scratch_inodes %d: must not be negative", ErrInvalidSpec, p.ScratchInodes)
	case p.Owner != "" && (len(p.Owner) > 1100 || !ownerRE().MatchString(p.Owner)):
		return fmt.Errorf("%w: owner %q: want uid:N or tls:SUBJECT", ErrInvalidSpec, truncate(p.Owner, 80))
	case p.Shared && p.Owner != "":
		return fmt.Errorf("%w: shared: only the administrator's pools (no owner) are shared", ErrInvalidSpec)
	case p.Recycle && len(p.Tmpfs) > 0:
		return fmt.Errorf("%w: recycle does not empty tmpfs mounts: a pool that recycles has none", ErrInvalidSpec)
	case p.Recycle && !p.ReadOnlyRootfs:
		return fmt.Errorf("%w: recycle needs read_only_rootfs = true: a recycled sandbox keeps its root file system, so a run must not be able to write it", ErrInvalidSpec)
	}
	return nil
}

// ownerRE matches a pool's owner: a uid, or a TLS subject of printable
// characters.
var ownerRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(uid:[0-9]{1,10}|tls:[[:print:]]+)$`) })

// ValidatePoolName reports whether name can name a pool (see
// names.Pool). Errors are ErrInvalidSpec.
func ValidatePoolName(name string) error {
	if err := names.Pool(truncate(name, 120)); err != nil {
		return &invalidError{err}
	}
	return nil
}

// invalidError is an ErrInvalidSpec whose message is its cause's alone.
type invalidError struct{ err error }

func (e *invalidError) Error() string   { return e.err.Error() }
func (e *invalidError) Unwrap() []error { return []error{ErrInvalidSpec, e.err} }

// ValidateEnv reports whether every entry of env is KEY=VALUE with a valid
// key and no NUL byte. Errors are ErrInvalidSpec and name the entry.
func ValidateEnv(env []string) error {
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE().MatchString(k) || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("%w: env[%d] %q: want KEY=VALUE with KEY of [A-Za-z0-9_.-]", ErrInvalidSpec, i, truncate(kv, 80))
		}
	}
	return nil
}

// finite reports whether f is a usable number (not NaN or infinite).
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
