#!/usr/bin/env bash
# Installs what ol-shim's build and tests need on a Debian host, if missing:
# Go (checked, not installed), docker.io, fuse3, busybox-static,
# debootstrap (for the end-to-end tests' host images), and QEMU and cpio
# (for the end-to-end tests' VM), lintian and man-db (the Debian package's
# checks), haproxy and openssl (the cluster's end-to-end test), gcc (cgo).
set -euo pipefail

if ! command -v go >/dev/null 2>&1; then
	echo "setup: go not found; ol-shim needs Go 1.26 or newer on PATH (e.g. /usr/local/go/bin)" >&2
	exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs) # the kernel scratch backend: mkfs.ext4, e2fsck
command -v lintian >/dev/null 2>&1 || missing+=(lintian) # make deb checks the package
command -v man >/dev/null 2>&1 || missing+=(man-db)     # the man pages' test renders them
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy) # make e2e-cluster: the front end of three hosts
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # examples/cluster/make-certs.sh
command -v gcc >/dev/null 2>&1 || missing+=(gcc)         # go test -race, and a dynamically linked program for the init check
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	# Installed, not started: haproxy's package would start its service
	# (the tests run their own HAProxy).
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [[ " ${missing[*]} " == *" haproxy "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now haproxy.service >/dev/null 2>&1 || true
	fi
fi
echo "setup: ok ($(go version | awk '{print $3}'), $(dockerd --version), fusermount3 $(fusermount3 --version 2>&1 | awk '{print $NF}'))"
