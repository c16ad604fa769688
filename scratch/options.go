package scratch

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/internal/units"
)

// ErrInvalid marks a bad volume name or option. Nothing was created. It is
// of class errdefs.ErrInvalidArgument.
var ErrInvalid = errdefs.ErrInvalidArgument.WithMessage("invalid")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidateName reports whether name can name a volume: 1 to 128 characters
// of letters, digits, '_', '.' and '-', starting with a letter or digit — so
// it is always one path element, never "." or "..".
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		shown := name
		if len(shown) > 40 {
			shown = shown[:40] + "..."
		}
		return fmt.Errorf("volume name %q: %w: want 1-128 characters of [A-Za-z0-9_.-] starting with a letter or digit", shown, ErrInvalid)
	}
	return nil
}

// Options are a volume's settings, from `docker volume create --opt`.
type Options struct {
	// Size limits the bytes of disk the volume's files may use; 0: no limit.
	Size int64 `json:"size,omitempty"`
	// Inodes limits the files, directories and links; 0: no limit.
	Inodes int64 `json:"inodes,omitempty"`
	// UID and GID own the volume's root directory; default 0 (root).
	UID int `json:"uid"`
	GID int `json:"gid"`
	// Mode is the permission bits of the volume's root directory.
	Mode uint32 `json:"mode"`
	// Sandbox marks a sandbox's scratch volume, made by the daemon: one
	// that dockerd never recorded (its create was cut off) is removed by
	// the daemon's orphan sweep.
	Sandbox bool `json:"sandbox,omitempty"`
	// Passthrough lets the kernel read the files of a quota'd volume that
	// are opened read-only (FUSE passthrough), where it can. Off by
	// default: a writer of a file such readers hold open is refused (see
	// ioModes), which a volume written while read must not see.
	Passthrough bool `json:"passthrough,omitempty"`
	// Backend enforces a limited volume's quotas: BackendKernel or
	// BackendFUSE. Empty in what a client asks for means the Manager's
	// default; a volume's record always holds the one it got. Empty for
	// a volume without quotas.
	Backend string `json:"backend,omitempty"`
	// Exec lets programs on a sandbox's limited volume run; a sandbox's
	// kernel backend volume is mounted noexec without it. A volume made
	// with docker volume create is not a sandbox's: exec, as any.
	Exec bool `json:"exec,omitempty"`
}

// NoExec reports whether the volume's kernel file system is mounted
// noexec: a sandbox's, unless it asks for exec.
func (o Options) NoExec() bool { return o.Sandbox && !o.Exec }

// Volume backends (the backend option, and Config.Backend).
const (
	// BackendKernel: an ext4 file system of the volume's own on a loop
	// device (package loopfs); the kernel enforces the limits, nothing of
	// ol-shim is in the data path.
	BackendKernel = "kernel"
	// BackendFUSE: the FUSE quota file system, served by a process of
	// ol-shim per volume.
	BackendFUSE = "fuse"
	// BackendAuto (Config.Backend only): kernel where this host can, FUSE
	// elsewhere.
	BackendAuto = "auto"
)

// DefaultMode is the mode of a volume's root unless the mode option says
// otherwise: not world-writable.
const DefaultMode = 0o750

// minInodes is the least inode limit a volume with a size gets.
const minInodes = 64

// InodeLimit returns the volume's inode limit: the inodes option, or, for a
// volume with only a size, one inode per 4 KiB of it (at least 64); 0 for a
// volume without quotas. Without it empty files, which use no blocks, would
// be free.
func (o Options) InodeLimit() int64 {
	switch {
	case o.Inodes > 0:
		return o.Inodes
	case o.Size > 0:
		return max(o.Size/blockSize, minInodes)
	}
	return 0
}

// Limited reports whether the volume has a quota, and so is served through
// FUSE.
func (o Options) Limited() bool { return o.Size > 0 || o.Inodes > 0 }

// Option keys of `docker volume create --opt`.
const (
	OptSize   = "size"
	OptInodes = "inodes"
	OptUID    = "uid"
	OptGID    = "gid"
	OptMode   = "mode"
	// OptSandbox ("true") marks a sandbox's scratch volume; the daemon
	// sets it.
	OptSandbox = "sandbox"
	// OptPassthrough ("true") lets the kernel read files opened read-only.
	OptPassthrough = "passthrough"
	// OptBackend picks the backend of a limited volume: kernel or fuse.
	OptBackend = "backend"
	// OptExec ("true") lets programs on a sandbox's volume run.
	OptExec = "exec"
)

// QuotaOptions returns the volume options that give a volume these quotas;
// a zero limit is left out (no limit).
func QuotaOptions(size, inodes int64, exec bool) map[string]string {
	o := map[string]string{}
	if exec {
		o[OptExec] = "true"
	}
	if size > 0 {
		o[OptSize] = strconv.FormatInt(size, 10)
	}
	if inodes > 0 {
		o[OptInodes] = strconv.FormatInt(inodes, 10)
	}
	return o
}

// optionKeys are the options Create accepts, with what each takes.
var optionKeys = map[string]string{
	OptSize:        "bytes, with an optional k, m, g, t or p suffix (powers of 1024), as docker's --memory, e.g. 64M, 1.5g",
	OptInodes:      "a positive count of files and directories",
	OptUID:         "owner of the volume's root, 0-4294967294",
	OptGID:         "group of the volume's root, 0-4294967294",
	OptSandbox:     "true for a sandbox's scratch volume (set by ol-shim itself)",
	OptMode:        "octal permissions of the volume's root, e.g. 0750",
	OptBackend:     "kernel (an ext4 file system of its own on a loop device, at disk speed; size at least 1M) or fuse (the FUSE quota file system); default: the daemon's scratch backend",
	OptExec:        "true: programs on a sandbox's volume may run (a sandbox's kernel volume is noexec without it)",
	OptPassthrough: "true: files opened read-only are read by the kernel (FUSE passthrough), fast, but a file held open that way cannot be opened for writing until it is closed (ETXTBSY); false, the default: every read goes through the volume's server",
}

// ValidOptions describes the options Create accepts, for error messages.
func ValidOptions() string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(optionKeys)) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s)", k, optionKeys[k])
	}
	return b.String()
}

// ParseOptions parses `--opt` key/value pairs. An unknown or malformed
// option is an error that names it and lists the valid ones.
func ParseOptions(opts map[string]string) (Options, error) {
	o := Options{UID: 0, GID: 0, Mode: DefaultMode}
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		bad := func(err error) (Options, error) {
			return Options{}, fmt.Errorf("option %s=%q: %w: %v (valid options: %s)", clip(k), clip(v), ErrInvalid, err, ValidOptions())
		}
		var err error
		switch k {
		case OptSize:
			o.Size, err = units.ParseSize(v)
		case OptInodes:
			o.Inodes, err = strconv.ParseInt(v, 10, 64)
			if err == nil && o.Inodes <= 0 {
				err = errors.New("must be positive")
			}
		case OptUID, OptGID:
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			if err == nil && n == math.MaxUint32 {
				err = errors.New("out of range")
			}
			if k == OptUID {
				o.UID = int(n)
			} else {
				o.GID = int(n)
			}
		case OptPassthrough:
			o.Passthrough, err = strconv.ParseBool(v)
		case OptMode:
			var n uint64
			n, err = strconv.ParseUint(v, 8, 32)
			if err == nil && n&^0o7777 != 0 {
				err = errors.New("more than permission bits")
			}
			if err == nil && n&0o002 != 0 {
				err = errors.New("world-writable volumes are not allowed")
			}
			if err == nil && n&0o6000 != 0 {
				err = errors.New("setuid and setgid bits are not allowed")
			}
			o.Mode = uint32(n)
		case OptSandbox:
			o.Sandbox, err = strconv.ParseBool(v)
		case OptExec:
			o.Exec, err = strconv.ParseBool(v)
		case OptBackend:
			o.Backend = v
			if v != BackendKernel && v != BackendFUSE {
				err = errors.New("want kernel or fuse")
			}
		default:
			return Options{}, fmt.Errorf("option %q: %w: unknown (valid options: %s)", clip(k), ErrInvalid, ValidOptions())
		}
		if err != nil {
			return bad(err)
		}
	}
	return o, nil
}

// String renders options as the key=value pairs ParseOptions reads.
func (o Options) String() string {
	var parts []string
	if o.Size > 0 {
		parts = append(parts, "size="+strconv.FormatInt(o.Size, 10))
	}
	if o.Inodes > 0 {
		parts = append(parts, "inodes="+strconv.FormatInt(o.Inodes, 10))
	}
	parts = append(parts, fmt.Sprintf("uid=%d", o.UID), fmt.Sprintf("gid=%d", o.GID), fmt.Sprintf("mode=%04o", o.Mode))
	if o.Sandbox {
		parts = append(parts, OptSandbox+"=true")
	}
	if o.Backend != "" {
		parts = append(parts, OptBackend+"="+o.Backend)
	}
	if o.Exec {
		parts = append(parts, OptExec+"=true")
	}
	return strings.Join(parts, ",")
}
