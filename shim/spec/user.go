package spec

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// DefaultSandboxUser is who a sandbox's processes run as where neither its
// pool nor [daemon] sandbox_user says otherwise: a uid and gid past the
// ranges systemd hands out (1879048192 is the first after its container
// ranges, 524288-1879048191), which no distribution gives an account.
const DefaultSandboxUser = "1879048192:1879048192"

// SandboxUserImage, as [daemon] sandbox_user, runs sandboxes as their
// image's USER (root for most), as ol-shim did before it had a sandbox
// user.
const SandboxUserImage = "image"

// ParseNumericUser parses "uid:gid", both numbers, as a sandbox user must
// be: neither 0 (root) nor 4294967295 ((uid_t)-1).
func ParseNumericUser(s string) (uid, gid uint32, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want UID:GID, two numbers", s)
	}
	un, err1 := strconv.ParseUint(u, 10, 32)
	gn, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q: want UID:GID, two numbers", s)
	}
	if un == 0 || gn == 0 || un == 1<<32-1 || gn == 1<<32-1 {
		return 0, 0, fmt.Errorf("%q: not root (0) and not 4294967295", s)
	}
	return uint32(un), uint32(gn), nil
}

// CheckNoHostAccount refuses a sandbox user whose uid a host account has,
// or whose gid a host group has (as this host's /etc/passwd and /etc/group
// say): such an account's processes could read the sandbox's /proc
// entries (its environment, its memory) and signal it.
func CheckNoHostAccount(s string) error {
	uid, gid, err := ParseNumericUser(s)
	if err != nil {
		return err
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return fmt.Errorf("%q: uid %d is the host account %q's; pick a uid no host account has", s, uid, u.Username)
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return fmt.Errorf("%q: gid %d is the host group %q's; pick a gid no host group has", s, gid, g.Name)
	}
	return nil
}

// IsRoot reports whether a user spec (name, uid, or either with a group)
// names root, as Docker reads it: "root" and uid 0 are; "" (the image's,
// root for most images) counts as root too.
func IsRoot(s string) bool {
	u, _, _ := strings.Cut(s, ":")
	return u == "" || u == "root" || u == "0"
}
