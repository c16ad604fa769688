#!/usr/bin/env bash
# images.sh: builds ol-shim's test images locally (no registry needed):
#   ol-shim-test/runtime:latest  FROM scratch: only /runtime, a static Go
#                                binary serving HTTP on /host/ol.sock
#   ol-shim-test/busybox:latest  Debian's busybox-static via docker import
# An image is rebuilt only when its inputs changed (a label holds their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "images: docker CLI not found" >&2; exit 1; }
[ -x /bin/busybox ] || hack/setup.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

current() { docker image inspect -f '{{index .Config.Labels "io.ol-shim.test.inputs"}}' "$1" 2>/dev/null || true; }

# runtime
mkdir -p "$tmp/rt/host"
CGO_ENABLED=0 go build -trimpath -o "$tmp/rt/runtime" ./hack/testruntime
sum=$(sha256sum "$tmp/rt/runtime" | cut -c1-16)
if [ "$(current ol-shim-test/runtime:latest)" != "$sum" ]; then
	tar -C "$tmp/rt" --owner=0 --group=0 -c . |
		docker import --change 'CMD ["/runtime"]' --change "LABEL io.ol-shim.test.inputs=$sum" - ol-shim-test/runtime:latest >/dev/null
	echo "images: built ol-shim-test/runtime:latest"
fi

# busybox
mkdir -p "$tmp/bb/bin" "$tmp/bb/tmp" "$tmp/bb/etc" "$tmp/bb/host" "$tmp/bb/proc" "$tmp/bb/sys" "$tmp/bb/dev"
chmod 1777 "$tmp/bb/tmp"
cp /bin/busybox "$tmp/bb/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -s busybox "$tmp/bb/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/bb/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/bb/etc/group"
sum=$(cat /bin/busybox "$tmp/bb/etc/passwd" | sha256sum | cut -c1-16)
if [ "$(current ol-shim-test/busybox:latest)" != "$sum" ]; then
	tar -C "$tmp/bb" --owner=0 --group=0 -c . |
		docker import --change 'ENV PATH=/bin' --change "LABEL io.ol-shim.test.inputs=$sum" - ol-shim-test/busybox:latest >/dev/null
	echo "images: built ol-shim-test/busybox:latest"
fi
