// Package ociruntime is ol-shim's OCI runtime: a runc-compatible command
// line (ol-shim-runtime) that dockerd and podman call as they would runc.
//
// # What it does
//
// It answers pause and resume itself, by writing the container's freezer
// (cgroup v1 freezer.state, v2 cgroup.freeze) and waiting until the kernel
// says the cgroup is frozen or thawed: what runc does for those two
// commands, without starting a runc process. runc reads a container's
// paused state from the freezer, so runc's, containerd's and dockerd's
// records stay true (docker inspect's State.Paused).
//
// Every other command, and pause or resume of a container whose state it
// cannot read, it hands to runc unchanged: it execs runc with the same
// arguments, so registering it never breaks a container. It does not (yet)
// serve containers from ol-shim's pools: a `docker run --runtime=ol-shim`
// runs as it would with runc.
//
// # What it trusts
//
// Only runc's state file, under the --root that the engine passes (a
// directory of root's), opened without following a symlink, owned by root,
// at most 4 MiB; and a cgroup path in it only if it is a clean path under
// /sys/fs/cgroup. A container id is runc's: letters, digits and "_+-.",
// never a path.
//
// # Errors
//
// An error is written to stderr and, with --log, to that file in runc's
// format (--log-format json: one JSON object a line, as containerd's runc
// shim reads it), and the command exits 1.
package ociruntime
