#!/usr/bin/env bash
# e2e-image.sh: builds ol-shim-e2e/bookworm:latest, a Debian bookworm rootfs
# with systemd (to run as PID 1), docker.io, fuse3 and make, by debootstrap
# and `docker import` (no registry). The image is rebuilt only when its
# recipe (build_rootfs below, the packages, the mirror) changes: a label on
# the image holds the recipe's hash, and the rootfs tarball is cached under
# /var/cache/ol-shim-e2e.
set -euo pipefail
cd "$(dirname "$0")/.."
image=ol-shim-e2e/bookworm:latest
mirror=$(hack/apt-mirror.sh)
packages=systemd,systemd-sysv,dbus,docker.io,fuse3,ca-certificates,make,procps,man-db
cache=/var/cache/ol-shim-e2e

# build_rootfs DIR: debootstrap into DIR and prepare it to boot in a
# container with no network.
build_rootfs() {
	local root=$1
	debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror"
	# The inner dockerd: no bridge, no iptables (the container has no network).
	mkdir -p "$root/etc/systemd/system/docker.service.d"
	printf '%s\n' '[Service]' 'ExecStart=' \
		'ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock --bridge=none --iptables=false --ip6tables=false' \
		>"$root/etc/systemd/system/docker.service.d/e2e.conf"
	# Nothing to do in a container: consoles, udev, time sync, timers.
	local u
	for u in getty@tty1.service console-getty.service systemd-udevd.service systemd-udevd-control.socket \
		systemd-udevd-kernel.socket systemd-timesyncd.service systemd-networkd-wait-online.service \
		apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
		ln -sf /dev/null "$root/etc/systemd/system/$u"
	done
	echo ol-shim-e2e >"$root/etc/hostname"
	rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
}

sum=$( (declare -f build_rootfs; echo "$mirror $packages") | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "io.ol-shim.e2e.recipe"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$sum" ]; then
	echo "e2e-image: $image is up to date ($sum)"
	exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }

mkdir -p "$cache"
tarball=$cache/rootfs-$sum.tar
if [ ! -s "$tarball" ]; then
	root=$(mktemp -d /var/tmp/ol-shim-e2e.XXXXXX)
	trap 'rm -rf "$root"' EXIT
	echo "e2e-image: debootstrap bookworm into $root (a few minutes; log: $cache/debootstrap.log)"
	if ! build_rootfs "$root" >"$cache/debootstrap.log" 2>&1; then
		tail -20 "$cache/debootstrap.log" >&2
		exit 1
	fi
	tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
fi
docker import --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' \
	--change "LABEL io.ol-shim.e2e.recipe=$sum" "$tarball" "$image" >/dev/null
# Tarballs of older recipes are not needed any more.
find "$cache" -name 'rootfs-*.tar*' ! -name "rootfs-$sum.tar" -delete
echo "e2e-image: built $image ($sum)"
