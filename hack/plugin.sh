#!/usr/bin/env bash
# plugin.sh [DIR]: builds ol-shim as a managed Docker plugin in DIR
# (default build/plugin): config.json and a rootfs holding only the static
# binary and the directories it needs. No base image, no registry:
#   docker plugin create ol-shim DIR && docker plugin enable ol-shim
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/plugin}
rm -rf "$out"
mkdir -p "$out/rootfs"/{dev,proc,sys,tmp,etc,run/docker/plugins,var/lib/ol-shim}
chmod 1777 "$out/rootfs/tmp"
CGO_ENABLED=0 go build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w" -o "$out/rootfs/ol-shim" ./cmd/ol-shimd
printf 'root:x:0:0:root:/:/ol-shim\n' >"$out/rootfs/etc/passwd"
printf 'root:x:0:\n' >"$out/rootfs/etc/group"
cp plugin/config.json "$out/config.json"
echo "plugin: $out (docker plugin create NAME $out && docker plugin enable NAME)"
