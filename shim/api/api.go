// Package api is the vocabulary of ol-shim's HTTP API: the wire types
// every endpoint reads and writes, the error classes and their HTTP status
// codes, and a Client. It is a leaf, as moby keeps moby/api apart from its
// daemon: a program that talks to ol-shim (a FaaS worker, bench, a script)
// imports no Docker client, FUSE, bbolt or Prometheus code.
//
// # Endpoints
//
// Every path is under /v1, JSON in and out, served on a unix socket
// (DefaultSocket):
//
//	GET    /v1/status                 StatusResponse
//	GET    /v1/pools                  []PoolStatus
//	GET    /v1/pools/{name}           PoolStatus
//	PUT    /v1/pools/{name}           spec.PoolConfig -> PoolStatus (201 if new)
//	DELETE /v1/pools/{name}           204
//	POST   /v1/pools/{name}/warm      CountRequest -> PoolStatus
//	POST   /v1/pools/{name}/shrink    CountRequest -> PoolStatus
//	POST   /v1/acquire                AcquireRequest -> Lease
//	POST   /v1/leases/{id}/release    204
//	POST   /v1/leases/{id}/destroy    DestroyRequest -> 204
//	POST   /v1/leases/{id}/renew      RenewRequest -> Lease
//	POST   /v1/run                    RunCall -> RunResult
//	POST   /v1/volumes/{name}/grow    GrowRequest -> VolumeStatus (local root only)
//
// # Errors
//
// An error is {"message": "..."} with a status code that follows its class
// (github.com/containerd/errdefs): see HTTPStatus. The Client turns the code
// back into the class, so errdefs.IsNotFound(err) works on both sides.
package api

import (
	"time"

	"github.com/open-lambda/ol-shim/shim/api/wire"

	"github.com/open-lambda/ol-shim/shim/spec"
)

// Where the daemon listens unless told otherwise.
const (
	DefaultSocket       = wire.DefaultSocket
	DefaultPluginSocket = "/run/ol-shim/plugin.sock"
	DefaultPluginName   = "ol-shim"
)

// Labels on every container and scratch volume ol-shim creates: filter
// `docker ps` and `docker volume ls` with them.
const (
	LabelManaged = "io.ol-shim.managed" // "true"
	LabelRoot    = "io.ol-shim.root"    // the state root's ID: one ol-shim instance
	LabelPool    = "io.ol-shim.pool"    // pool name
	LabelSandbox = "io.ol-shim.sandbox" // sandbox ID (also its scratch directory's name)
	LabelSpec    = "io.ol-shim.spec"    // spec.PoolSpec.Hash of the pool it was made for
	// LabelInstance is the ol-shim process that made it (a random ID per
	// Docker connection): what an earlier process made and no pool adopted
	// is an orphan.
	LabelInstance = "io.ol-shim.instance"
)

// MaxBody bounds an API request body.
const MaxBody = 8 << 20

// MaxOutput bounds what a run keeps of each of stdout and stderr.
const MaxOutput = 16 << 20

// DefaultAcquireTimeout bounds an acquire or run that names no timeout.
const DefaultAcquireTimeout = 2 * time.Minute

// Lease is an acquired sandbox and how long it may be held.
type Lease struct {
	ID          string    `json:"id"`
	Pool        string    `json:"pool"`
	SandboxID   string    `json:"sandbox"`
	ContainerID string    `json:"container,omitempty"`
	ScratchPath string    `json:"scratch,omitempty"`
	Outcome     string    `json:"outcome"`
	Expires     time.Time `json:"expires"`
	// Owner is the uid of the local API client that acquired it, Client
	// the certificate subject of the remote one (over TLS): only that
	// client and local root may see, release, destroy or renew it.
	Owner  *uint32 `json:"owner,omitempty"`
	Client string  `json:"client,omitempty"`
}

// PoolStatus is one pool's state.
type PoolStatus struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	AdHoc bool   `json:"adhoc,omitempty"`
	// Source is where the pool comes from: "config" (the config file),
	// "api" (made through the API, kept across restarts) or "adhoc".
	Source string          `json:"source,omitempty"`
	Config spec.PoolConfig `json:"config"`
	Stats  PoolStats       `json:"stats"`
	// Recycled counts the sandboxes made as new after runs (recycle).
	Recycled int64 `json:"recycled,omitempty"`
}

// Status is the registry's state: its pools, leases and memory budget.
type Status struct {
	Pools       []PoolStatus `json:"pools"`
	Leases      []Lease      `json:"leases"`
	MemoryUsed  int64        `json:"memory_used"`
	MemoryTotal int64        `json:"memory_budget"`
}

// HealthResponse is GET /v1/health: whether this host should take calls
// (a front end's health check: 200 when ready, 503 when not, with the
// reasons).
type HealthResponse struct {
	Ready bool `json:"ready"`
	// Docker: dockerd answers.
	Docker bool `json:"docker"`
	// MemoryUsed and MemoryTotal are the memory budget's (total 0: none).
	MemoryUsed  int64 `json:"memory_used"`
	MemoryTotal int64 `json:"memory_total"`
	// Idle and InUse are the sandboxes of every pool.
	Idle    int      `json:"idle"`
	InUse   int      `json:"in_use"`
	Reasons []string `json:"reasons,omitempty"`
}

// StatusResponse is GET /v1/status.
type StatusResponse struct {
	Version string `json:"version"`
	// Host is the daemon's host name (which host of a cluster answered).
	Host      string         `json:"host,omitempty"`
	Backend   string         `json:"backend"`
	Docker    *DockerHealth  `json:"docker,omitempty"`
	StateRoot *DiskHealth    `json:"state_root,omitempty"`
	Volumes   []VolumeStatus `json:"volumes"`
	Limits    *Limits        `json:"limits,omitempty"`
	// Scratch is the default backend of quota'd volumes, and why.
	Scratch *ScratchBackend `json:"scratch,omitempty"`
	Status
}

// ScratchBackend is the backend that enforces new quota'd volumes' limits
// unless a volume names its own: "kernel" or "fuse".
type ScratchBackend struct {
	Backend string `json:"backend"`
	Reason  string `json:"reason"`
}

// Limits are the bounds the daemon holds every client and sandbox to,
// whatever a request asks.
type Limits struct {
	MaxPoolSize   int     `json:"max_pool_size"`   // per pool: min_idle, max_size, warm
	MaxAdHocPools int     `json:"max_adhoc_pools"` // past it the least recently used idle one goes
	MaxBody       int64   `json:"max_body"`        // bytes of an API request body
	MaxConns      int     `json:"max_conns"`       // connections per socket, non-root peers
	HeaderTimeout string  `json:"header_timeout"`  // to send a request's headers
	ReadTimeout   string  `json:"read_timeout"`    // to send a whole request
	IdleTimeout   string  `json:"idle_timeout"`    // of a keep-alive connection
	DefaultPids   int64   `json:"default_pids"`    // pids limit of a sandbox whose pool sets none
	DefaultCPUs   float64 `json:"default_cpus"`    // CPU limit of a sandbox whose pool sets none
	AllowPull     bool    `json:"allow_pull"`
	AllowNetworks bool    `json:"allow_networks"`
}

// DockerHealth is what the daemon knows of dockerd.
type DockerHealth struct {
	OK         bool   `json:"ok"`
	Version    string `json:"version,omitempty"`
	APIVersion string `json:"api_version,omitempty"`
	Error      string `json:"error,omitempty"`
	// PauseVia is how sandboxes are paused and resumed: containerd's task
	// API (its socket) or dockerd (and why not containerd).
	PauseVia string `json:"pause_via,omitempty"`
	// Runtime is the OCI runtime sandboxes get where their pool names
	// none: ol-shim's (its binary) where dockerd knows it.
	Runtime string `json:"runtime,omitempty"`
}

// DiskHealth is the state root's filesystem, where sandboxes' scratch data
// and the volume records live.
type DiskHealth struct {
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	Free       int64  `json:"free"`
	Inodes     int64  `json:"inodes,omitempty"`
	FreeInodes int64  `json:"free_inodes,omitempty"`
	// Warning is set when the filesystem is full or nearly so.
	Warning string `json:"warning,omitempty"`
}

// VolumeStatus is one volume of the volume plugin.
type VolumeStatus struct {
	Name       string        `json:"name"`
	Mountpoint string        `json:"mountpoint"`
	CreatedAt  time.Time     `json:"created_at"`
	Options    VolumeOptions `json:"options"`
	Mounts     int           `json:"mounts"`
	BytesUsed  int64         `json:"bytes_used"`
	InodesUsed int64         `json:"inodes_used"`
	// Server is the FUSE server of a mounted quota'd volume.
	Server *VolumeServer `json:"server,omitempty"`
}

// VolumeServer is the FUSE server of one quota'd volume: a process of its
// own, which outlives the daemon.
type VolumeServer struct {
	PID       int       `json:"pid"`
	Version   string    `json:"version,omitempty"`
	Started   time.Time `json:"started"`
	InProcess bool      `json:"in_process,omitempty"`
	// Alive is false once it died: the volume's containers get I/O errors
	// until it is mounted again.
	Alive bool `json:"alive"`
	// Old is set when it runs another version than the daemon (started
	// before an upgrade; it serves until its volume's last unmount).
	Old bool `json:"old,omitempty"`
	// Passthrough is "on" when the kernel reads the volume's files itself
	// (FUSE passthrough), or "off: " and why.
	Passthrough string `json:"passthrough,omitempty"`
}

// VolumeOptions are a volume's settings (`docker volume create --opt`).
type VolumeOptions struct {
	Size   int64  `json:"size,omitempty"`
	Inodes int64  `json:"inodes,omitempty"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Mode   uint32 `json:"mode"`
	// Backend enforces the limits: "kernel", "fuse"; empty without limits.
	Backend string `json:"backend,omitempty"`
}

// Limited reports whether the volume has a quota.
func (o VolumeOptions) Limited() bool { return o.Size > 0 || o.Inodes > 0 }

// GrowRequest is the body of POST /v1/volumes/{name}/grow: a volume's
// new size limit (bytes, or as docker's --memory: 64m, 1.5g) and inode limit,
// either left out to keep it. Limits only grow, and the volume must not be
// mounted.
type GrowRequest struct {
	Size   string `json:"size,omitempty"`
	Inodes int64  `json:"inodes,omitempty"`
}

// CountRequest is the body of warm and shrink.
type CountRequest struct {
	N       *int   `json:"n"`
	Timeout string `json:"timeout,omitempty"`
}

// AcquireRequest is the body of POST /v1/acquire: a pool, or an image
// (served from its pool, made on demand).
type AcquireRequest struct {
	Pool    string `json:"pool,omitempty"`
	Image   string `json:"image,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

// RuntimeCheckRequest is the body of POST /v1/runtime/check: ol-shim's OCI
// runtime asks whether the container dockerd is starting with it can be
// served from a pool (local root only).
type RuntimeCheckRequest struct {
	ID string `json:"id"`
	// User is who the container's process runs as, "UID:GID" (from its
	// OCI spec): the pool must be able to run it so.
	User string `json:"user,omitempty"`
}

// RuntimeCheck answers a RuntimeCheckRequest: Serve, with the image and
// the pool it would be served from, or why not (the runtime then hands the
// container to runc).
type RuntimeCheck struct {
	Serve bool   `json:"serve"`
	Image string `json:"image,omitempty"`
	Pool  string `json:"pool,omitempty"`
	Why   string `json:"why,omitempty"`
}

// DestroyRequest is the body of POST /v1/leases/{id}/destroy.
type DestroyRequest struct {
	Reason string `json:"reason,omitempty"`
}

// RenewRequest is the body of POST /v1/leases/{id}/renew.
type RenewRequest struct {
	Lease string `json:"lease,omitempty"` // from now; the default lease if empty
}

// RunRequest is a run: the command and where to run it (see wire).
type RunRequest = wire.RunRequest

// RunCall is the body of POST /v1/run: a run and how long it may take.
type RunCall = wire.RunCall

// RunResult is what a run printed and how it ended.
type RunResult struct {
	Pool      string `json:"pool"`
	Sandbox   string `json:"sandbox"`
	Outcome   string `json:"outcome"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	ExitCode  int    `json:"exit_code"`
	Truncated bool   `json:"truncated,omitempty"`
}
