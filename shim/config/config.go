// Package config reads ol-shim's configuration file: the [daemon] table
// (what serve's flags can also set), the defaults of pools made on demand
// ([adhoc]) and the configured pools ([pools.NAME], spec.PoolConfig). It
// validates everything once, at load, and names the key and the line of
// each problem.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/internal/units"
	"github.com/open-lambda/ol-shim/shim/imageref"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// ErrInvalidConfig marks a configuration that cannot be used. It is of
// class errdefs.ErrInvalidArgument.
var ErrInvalidConfig = errdefs.ErrInvalidArgument.WithMessage("invalid config")

// DefaultConfigPath is where serve looks for its configuration.
const DefaultConfigPath = "/etc/ol-shim/config.toml"

// Config is the daemon's configuration: the [daemon] table, the defaults
// of pools made on demand ([adhoc]), and the configured pools.
type Config struct {
	Daemon DaemonConfig               `toml:"daemon"`
	AdHoc  AdHocConfig                `toml:"adhoc"`
	Pools  map[string]spec.PoolConfig `toml:"pools"`
	// Scratch is the [scratch] table: how quota'd volumes are made.
	Scratch ScratchConfig `toml:"scratch"`
}

// ScratchConfig is the [scratch] table.
type ScratchConfig struct {
	// Backend enforces quota'd volumes' limits unless a volume names its
	// own: auto (kernel where the host can, else fuse), kernel or fuse.
	Backend string `toml:"backend"`
}

// DaemonConfig holds what the serve flags can also set; flags and
// OL_SHIM_* variables win over it.
type DaemonConfig struct {
	Root          string        `toml:"root"`
	Socket        string        `toml:"socket"`
	PluginSocket  string        `toml:"plugin_socket"`
	PluginName    string        `toml:"plugin_name"`
	SocketGroup   *string       `toml:"socket_group"`
	Backend       string        `toml:"backend"`
	Scratch       string        `toml:"scratch"`
	MemoryBudget  string        `toml:"memory_budget"`
	Lease         spec.Duration `toml:"lease"`
	DestroyOnExit bool          `toml:"destroy_on_exit"`
	LogLevel      string        `toml:"log_level"`
	// Containerd: how sandboxes are paused and resumed: auto (through
	// dockerd's containerd where it is found), off (through dockerd), or
	// a containerd socket's path.
	Containerd string `toml:"containerd"`
	// AllowPull lets pools pull missing images (pull = "missing"); off,
	// a pool that asks is refused.
	AllowPull bool `toml:"allow_pull"`
	// AllowNetworks lets pools join networks other than none.
	AllowNetworks bool `toml:"allow_networks"`
	// MaxPoolSize bounds every pool's min_idle, max_size and warm count,
	// and is the max_size of pools that set none.
	MaxPoolSize int `toml:"max_pool_size"`
	// MaxCreates bounds the sandbox creates in flight at once, over all
	// pools; 0 takes registry.DefaultMaxCreates.
	MaxCreates int `toml:"max_creates"`
	// MaxScratchSize and MaxPids bound every pool's scratch_size and
	// pids (0: registry.DefaultMaxScratchSize, DefaultMaxPids).
	MaxScratchSize spec.Size `toml:"max_scratch_size"`
	MaxPids        int64     `toml:"max_pids"`
	// SandboxUser is who the processes of a pool that names no user run
	// as: "UID:GID", a uid and gid no host account has (checked at start;
	// "": spec.DefaultSandboxUser), or "image" for the image's USER.
	SandboxUser string `toml:"sandbox_user"`
	// TLSListen is the address (HOST:PORT) of the API over the network,
	// mutual TLS only; off when empty. TLSCert and TLSKey are the
	// server's certificate and key, TLSCA the CA clients' certificates
	// must be signed by.
	TLSListen string `toml:"tls_listen"`
	TLSCert   string `toml:"tls_cert"`
	TLSKey    string `toml:"tls_key"`
	TLSCA     string `toml:"tls_ca"`
	// TLSProxies are the certificate subjects of front ends (e.g.
	// ["CN=haproxy"]) trusted to name, in the X-OL-Shim-Client header, the
	// client each request is for.
	TLSProxies []string `toml:"tls_proxies"`
}

// AdHocConfig is how a pool made on demand (a run or acquire for an image
// with no configured pool) is sized, and when it goes away.
type AdHocConfig struct {
	MinIdle    int           `toml:"min_idle"`
	MaxSize    int           `toml:"max_size"`
	Memory     spec.Size     `toml:"memory"`
	CPUs       float64       `toml:"cpus"`
	Pids       int64         `toml:"pids"`
	PauseGrace spec.Duration `toml:"pause_grace"`
	IdleTTL    spec.Duration `toml:"idle_ttl"` // an ad-hoc pool unused this long is removed
	// MaxPools bounds the ad-hoc pools; past it the least recently used
	// idle one goes. 0: the registry's default.
	MaxPools int `toml:"max_pools"`
	// ScratchSize bounds each ad hoc sandbox's /host (0:
	// DefaultAdHocScratchSize): no ad hoc run writes more than it there.
	ScratchSize spec.Size `toml:"scratch_size"`
	// ReadOnlyRootfs mounts ad hoc sandboxes' images read-only (unset:
	// true), with Tmpfs for what a program must write: Docker's overlay2
	// does not bound what a container writes to its root file system.
	ReadOnlyRootfs *bool `toml:"read_only_rootfs"`
	// Tmpfs are the ad hoc sandboxes' tmpfs mounts (unset:
	// DefaultAdHocTmpfs).
	Tmpfs map[string]spec.Size `toml:"tmpfs"`
}

// Where an ad hoc sandbox may write, and how much, where [adhoc] is silent.
const DefaultAdHocScratchSize = 64 << 20

// DefaultAdHocTmpfs returns the tmpfs mounts of ad hoc sandboxes where
// [adhoc] names none: /tmp and /run.
func DefaultAdHocTmpfs() map[string]spec.Size {
	return map[string]spec.Size{"/tmp": 64 << 20, "/run": 16 << 20}
}

// Pool returns the config of an ad-hoc pool for image.
func (a AdHocConfig) Pool(image string) spec.PoolConfig {
	pc := spec.PoolConfig{Image: image, Memory: a.Memory, CPUs: a.CPUs, Pids: a.Pids, MinIdle: a.MinIdle, MaxSize: a.MaxSize, PauseGrace: a.PauseGrace,
		ScratchSize: a.ScratchSize, ReadOnlyRootfs: a.ReadOnlyRootfs == nil || *a.ReadOnlyRootfs, Tmpfs: a.Tmpfs}
	if pc.ScratchSize == 0 {
		pc.ScratchSize = DefaultAdHocScratchSize
	}
	if pc.Tmpfs == nil && pc.ReadOnlyRootfs {
		pc.Tmpfs = DefaultAdHocTmpfs()
	}
	return pc
}

// Defaults applied where the configuration is silent.
const (
	DefaultAdHocTTL = 10 * time.Minute
	// DefaultAdHocMinIdle keeps one sandbox of every image that was run
	// warm, so its runs are warm from the second on.
	DefaultAdHocMinIdle = 1
	// DefaultAdHocPauseGrace keeps a sandbox returned to an ad-hoc pool
	// (ol-shim run --reuse) unpaused this long, so the next run gets it
	// with no unpause. After a run nothing of it runs on (its agent killed
	// its process group), so an unpaused idle sandbox costs nothing.
	DefaultAdHocPauseGrace = time.Second
)

// LoadConfig reads a config file. A missing file at the default path is an
// empty config; any other problem is an error naming the file, the line or
// key, and the reason.
func LoadConfig(path string, mustExist bool) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !mustExist {
		c.setDefaults()
		c.AdHoc.MinIdle = DefaultAdHocMinIdle
		c.AdHoc.PauseGrace = spec.Duration(DefaultAdHocPauseGrace)
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

// ParseConfig parses and validates a config file's text.
func ParseConfig(text string) (Config, error) {
	var c Config
	md, err := toml.Decode(text, &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return c, fmt.Errorf("%w: line %d: %s: %s", ErrInvalidConfig, pe.Position.Line, pe.LastKey, pe.Message)
			}
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
	if !md.IsDefined("adhoc", "min_idle") {
		c.AdHoc.MinIdle = DefaultAdHocMinIdle
	}
	if !md.IsDefined("adhoc", "pause_grace") {
		c.AdHoc.PauseGrace = spec.Duration(DefaultAdHocPauseGrace)
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.Pools {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := spec.ValidatePoolName(name); err != nil {
			return c, fmt.Errorf("%w: [pools.%s]: %w", ErrInvalidConfig, name, err)
		}
		if err := imageref.Pool(c.Pools[name]); err != nil {
			return c, fmt.Errorf("%w: [pools.%s]: %w", ErrInvalidConfig, name, err)
		}
	}
	if c.AdHoc.MinIdle < 0 || c.AdHoc.MaxSize < 0 || (c.AdHoc.MaxSize > 0 && c.AdHoc.MinIdle > c.AdHoc.MaxSize) {
		return c, fmt.Errorf("%w: [adhoc]: min_idle %d, max_size %d: want 0 <= min_idle <= max_size (0: no limit)", ErrInvalidConfig, c.AdHoc.MinIdle, c.AdHoc.MaxSize)
	}
	if err := c.AdHoc.Pool("ol-shim/adhoc").Validate(); err != nil {
		return c, fmt.Errorf("%w: [adhoc]: %w", ErrInvalidConfig, err)
	}
	if c.Daemon.MaxScratchSize < 0 || c.Daemon.MaxPids < 0 {
		return c, fmt.Errorf("%w: [daemon] max_scratch_size %d, max_pids %d: must not be negative", ErrInvalidConfig, c.Daemon.MaxScratchSize, c.Daemon.MaxPids)
	}
	if u := c.Daemon.SandboxUser; u != "" && u != spec.SandboxUserImage {
		if _, _, err := spec.ParseNumericUser(u); err != nil {
			return c, fmt.Errorf("%w: [daemon] sandbox_user %w (or %q: the image's)", ErrInvalidConfig, err, spec.SandboxUserImage)
		}
	}
	if c.AdHoc.MaxPools < 0 {
		return c, fmt.Errorf("%w: [adhoc] max_pools %d: must not be negative", ErrInvalidConfig, c.AdHoc.MaxPools)
	}
	if c.Daemon.MaxCreates < 0 {
		return c, fmt.Errorf("%w: [daemon] max_creates %d: must not be negative", ErrInvalidConfig, c.Daemon.MaxCreates)
	}
	if c.Daemon.MaxPoolSize < 0 {
		return c, fmt.Errorf("%w: [daemon] max_pool_size %d: must not be negative", ErrInvalidConfig, c.Daemon.MaxPoolSize)
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
	if err := CheckContainerd(c.Daemon.Containerd); err != nil {
		return c, fmt.Errorf("%w: [daemon] containerd: %v", ErrInvalidConfig, err)
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
		c.Pools = map[string]spec.PoolConfig{}
	}
	for name, p := range c.Pools {
		if p.Memory == 0 {
			p.Memory = spec.DefaultPoolMemory
		}
		c.Pools[name] = p
	}
	if c.AdHoc.Memory == 0 {
		c.AdHoc.Memory = spec.DefaultPoolMemory
	}
	if c.AdHoc.IdleTTL == 0 {
		c.AdHoc.IdleTTL = spec.Duration(DefaultAdHocTTL)
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
	v, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("memory budget: %w", err)
	}
	return v, nil
}

// CheckContainerd checks a containerd setting: "" or auto, off, or an
// absolute socket path.
func CheckContainerd(v string) error {
	switch {
	case v == "", v == "auto", v == "off", strings.HasPrefix(v, "/"):
		return nil
	}
	return fmt.Errorf("%q: want auto, off or the absolute path of containerd's socket", v)
}
