package shim

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/scratch"
)

// ErrInvalidConfig marks a configuration that cannot be used.
var ErrInvalidConfig = errors.New("invalid config")

// DefaultConfigPath is where serve looks for its configuration.
const DefaultConfigPath = "/etc/ol-shim/config.toml"

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

// Size is a byte count written as "256M" or "1G".
type Size int64

// UnmarshalText parses a size with an optional K, M, G or T suffix.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := scratch.ParseSize(string(b))
	if err != nil {
		return err
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
	Image          string       `toml:"image" json:"image"`
	Cmd            []string     `toml:"cmd" json:"cmd,omitempty"`
	Env            []string     `toml:"env" json:"env,omitempty"`
	WorkingDir     string       `toml:"working_dir" json:"working_dir,omitempty"`
	User           string       `toml:"user" json:"user,omitempty"`
	Memory         Size         `toml:"memory" json:"memory,omitempty"`
	CPUs           float64      `toml:"cpus" json:"cpus,omitempty"`
	Pids           int64        `toml:"pids" json:"pids,omitempty"`
	ReadOnlyRootfs bool         `toml:"read_only_rootfs" json:"read_only_rootfs,omitempty"`
	Network        string       `toml:"network" json:"network,omitempty"`
	Pull           string       `toml:"pull" json:"pull,omitempty"`
	Ready          *ReadyConfig `toml:"ready" json:"ready,omitempty"`
	MinIdle        int          `toml:"min_idle" json:"min_idle,omitempty"`
	MaxSize        int          `toml:"max_size" json:"max_size,omitempty"`
	IdleTTL        Duration     `toml:"idle_ttl" json:"idle_ttl,omitempty"`
	PauseGrace     Duration     `toml:"pause_grace" json:"pause_grace,omitempty"`
	ScratchSize    Size         `toml:"scratch_size" json:"scratch_size,omitempty"`
	ScratchInodes  int64        `toml:"scratch_inodes" json:"scratch_inodes,omitempty"`
}

// Spec returns the container spec of the pool.
func (p PoolConfig) Spec() PoolSpec {
	s := PoolSpec{
		Image: p.Image, Cmd: p.Cmd, Env: p.Env, WorkingDir: p.WorkingDir, User: p.User,
		MemoryBytes: int64(p.Memory), CPUs: p.CPUs, PidsLimit: p.Pids,
		ReadOnlyRootfs: p.ReadOnlyRootfs, Network: p.Network, Pull: p.Pull,
	}
	if r := p.Ready; r != nil {
		s.Ready = &Readiness{File: r.File, Socket: r.Socket, Timeout: time.Duration(r.Timeout)}
	}
	return s
}

// ScratchOptions returns the volume options of the pool's scratch
// directories.
func (p PoolConfig) ScratchOptions() map[string]string {
	o := map[string]string{}
	if p.ScratchSize > 0 {
		o["size"] = strconv.FormatInt(int64(p.ScratchSize), 10)
	}
	if p.ScratchInodes > 0 {
		o["inodes"] = strconv.FormatInt(p.ScratchInodes, 10)
	}
	return o
}

// Validate reports the first problem with the pool, naming the field.
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
	}
	return nil
}

// Config is the daemon's configuration: the [daemon] table, the defaults
// of pools made on demand ([adhoc]), and the configured pools.
type Config struct {
	Daemon DaemonConfig          `toml:"daemon"`
	AdHoc  AdHocConfig           `toml:"adhoc"`
	Pools  map[string]PoolConfig `toml:"pools"`
}

// DaemonConfig holds what the serve flags can also set; flags and
// OL_SHIM_* variables win over it.
type DaemonConfig struct {
	Root          string   `toml:"root"`
	Socket        string   `toml:"socket"`
	PluginSocket  string   `toml:"plugin_socket"`
	PluginName    string   `toml:"plugin_name"`
	SocketGroup   *string  `toml:"socket_group"`
	Backend       string   `toml:"backend"`
	Scratch       string   `toml:"scratch"`
	MemoryBudget  string   `toml:"memory_budget"`
	Lease         Duration `toml:"lease"`
	DestroyOnExit bool     `toml:"destroy_on_exit"`
	LogLevel      string   `toml:"log_level"`
}

// AdHocConfig is how a pool made on demand (a run or acquire for an image
// with no configured pool) is sized, and when it goes away.
type AdHocConfig struct {
	MinIdle    int      `toml:"min_idle"`
	MaxSize    int      `toml:"max_size"`
	Memory     Size     `toml:"memory"`
	CPUs       float64  `toml:"cpus"`
	Pids       int64    `toml:"pids"`
	PauseGrace Duration `toml:"pause_grace"`
	IdleTTL    Duration `toml:"idle_ttl"` // an ad-hoc pool unused this long is removed
}

// Defaults applied where the configuration is silent.
const (
	DefaultSocket       = "/run/ol-shim/ol-shim.sock"
	DefaultPluginSocket = "/run/ol-shim/plugin.sock"
	DefaultPluginName   = "ol-shim"
	DefaultLease        = 10 * time.Minute
	DefaultPoolMemory   = 256 << 20
	DefaultAdHocTTL     = 10 * time.Minute
)

// LoadConfig reads a config file. A missing file at the default path is an
// empty config; any other problem is an error naming the file, the line or
// key, and the reason.
func LoadConfig(path string, mustExist bool) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !mustExist {
		c.setDefaults()
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	c, err = ParseConfig(string(b))
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// ParseConfig parses and validates a config file's text.
func ParseConfig(text string) (Config, error) {
	var c Config
	md, err := toml.Decode(text, &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return c, fmt.Errorf("%w: line %d: %s", ErrInvalidConfig, pe.Position.Line, pe.Message)
		}
		return c, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("%w: unknown key %s", ErrInvalidConfig, strings.Join(keys, ", "))
	}
	c.setDefaults()
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.Pools {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := sandboxset.ValidateName(name); err != nil {
			return c, fmt.Errorf("%w: [pools.%s]: %v", ErrInvalidConfig, name, err)
		}
		if err := c.Pools[name].Validate(); err != nil {
			return c, fmt.Errorf("%w: [pools.%s]: %v", ErrInvalidConfig, name, err)
		}
	}
	if c.AdHoc.MinIdle < 0 || c.AdHoc.MaxSize < 0 || (c.AdHoc.MaxSize > 0 && c.AdHoc.MinIdle > c.AdHoc.MaxSize) {
		return c, fmt.Errorf("%w: [adhoc]: min_idle %d, max_size %d: want 0 <= min_idle <= max_size (0: no limit)", ErrInvalidConfig, c.AdHoc.MinIdle, c.AdHoc.MaxSize)
	}
	switch c.Daemon.Backend {
	case "", "docker", "mock":
	default:
		return c, fmt.Errorf("%w: [daemon] backend %q: want docker or mock", ErrInvalidConfig, c.Daemon.Backend)
	}
	switch c.Daemon.Scratch {
	case "", "volume", "bind":
	default:
		return c, fmt.Errorf("%w: [daemon] scratch %q: want volume or bind", ErrInvalidConfig, c.Daemon.Scratch)
	}
	if c.Daemon.MemoryBudget != "" {
		if _, err := ParseBudget(c.Daemon.MemoryBudget, 1<<30); err != nil {
			return c, fmt.Errorf("%w: [daemon] memory_budget: %v", ErrInvalidConfig, err)
		}
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.Pools == nil {
		c.Pools = map[string]PoolConfig{}
	}
	for name, p := range c.Pools {
		if p.Memory == 0 {
			p.Memory = DefaultPoolMemory
		}
		c.Pools[name] = p
	}
	if c.AdHoc.Memory == 0 {
		c.AdHoc.Memory = DefaultPoolMemory
	}
	if c.AdHoc.IdleTTL == 0 {
		c.AdHoc.IdleTTL = Duration(DefaultAdHocTTL)
	}
}

// ParseBudget parses a memory budget: a size ("16G") or a percentage of
// total ("80%").
func ParseBudget(s string, total int64) (int64, error) {
	if pct, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		v, err := strconv.ParseFloat(pct, 64)
		if err != nil || v <= 0 || v > 100 {
			return 0, fmt.Errorf("memory budget %q: want a percentage in (0, 100] or a size like 16G", s)
		}
		return int64(float64(total) * v / 100), nil
	}
	v, err := scratch.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("memory budget: %w", err)
	}
	return v, nil
}
