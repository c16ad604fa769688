// Package scratch is ol-shim's Docker volume plugin: the volumes that hold
// every sandbox's scratch directory (its /host), and any volume a user makes
// with `docker volume create -d ol-shim`.
//
// # What a volume is
//
// A volume is a record in the state store (bbolt, Root/volumes.db: name,
// options, creation time) and a data directory, Root/volumes/NAME. Its
// options (Options, parsed from `--opt` by ParseOptions) set the owner and
// mode of its root and, optionally, quotas: size (bytes) and inodes. A volume
// without quotas is handed to dockerd as its data directory. A volume with a
// quota has a backend (Options.Backend, picked once at create: the
// Manager's default, Config.Backend, where the volume names none):
//
//   - kernel (package loopfs, the default where loop devices and ext4
//     work): an ext4 file system of the volume's own in Root/images/NAME.img
//     on a loop device, mounted at Root/mnt/NAME, whose data directory is
//     the volume; the kernel enforces both limits, nothing of ol-shim is in
//     the data path. Its mkfs and mount run outside the Manager's lock.
//     Grow and remove go ahead only when no mount of it remains anywhere
//     (loopfs.Holders).
//   - fuse: a loopback file system over the data directory, mounted at
//     Root/mnt/NAME and served by a process of its own (volume-server,
//     confined to the volume), that checks every operation that can make or
//     grow an inode against its Quota and answers ENOSPC, beforehand, when
//     either limit would be passed.
//
// A sandbox's volume (option sandbox) is noexec unless it says exec.
//
// # Lifecycle
//
// Create writes the record (creating a volume that exists succeeds if its
// options are the same); Mount counts a caller (dockerd's mount ID) and, at
// the first mount of a quota'd volume, starts its FUSE server; Unmount drops
// a caller and, at the last, stops the server (a kernel volume stays
// mounted on the host: only containers' binds come and go); Remove deletes record and
// data, refused while mounted (ErrInUse). Open rebuilds the mount counts
// after a restart from the running containers (Config.InUse) and detaches
// FUSE mounts a crash left; DropAnonymous forgets counts whose containers
// are gone. Driver adapts the Manager to dockerd's volume plugin protocol
// (go-plugins-helpers), on a socket made by Listen.
//
// # What the quota counts
//
// Bytes are what the backing filesystem allocated (st_blocks × 512) for every
// inode, directories included, as du counts them: a directory grows with the
// names in it, so every name costs something, hard links too (a link is
// refused once the volume is full). The volume's own directory is not charged
// beyond its growth. A file with several hard links counts once; an unlinked
// file still open counts until its last close. A volume with only a size has
// an inode limit all the same (Options.InodeLimit). Usage is found by walking
// the data directory once at mount, then kept up to date by the operations
// themselves.
//
// # Confinement
//
// The FUSE server runs as root for code that may be hostile, so it never
// resolves a name as a host path: it holds a handle on the volume's
// directory and resolves every name from it with openat2 and
// RESOLVE_IN_ROOT (see confinedNode), and uses the last element with an *at
// call that does not follow it. Whatever symlinks a sandbox plants or swaps
// in, the server only ever touches the volume.
//
// # Locking
//
// Manager.mu guards the map of volumes and is taken before a volume's own mu,
// never after; a volume's mu is held across its FUSE mount and unmount, so
// two callers of one volume never start two servers. Quota.mu guards the
// counts of one volume and is never held across a file system call.
//
// # Errors
//
// Every error names the volume and the cause, and is of an errdefs class
// (ErrNotFound, ErrExists, ErrInUse, ErrInvalid): errors cross the plugin
// wire to dockerd as plain strings, and the daemon's API maps the classes to
// HTTP statuses.
package scratch
