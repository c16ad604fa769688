#!/usr/bin/env bash
# deb.sh: builds ol-shim's Debian package with nfpm (packaging/nfpm.yaml)
# and checks it with lintian: static binaries built for the package's
# version, the systemd units with the packaged paths, the plugin spec, the
# docker-ol CLI plugin link, the config as a conffile (examples/config.toml
# with its example pools commented out), man pages and bash completion made
# from the CLI's own definitions, copyright and changelog.
#
#   hack/deb.sh [OUTDIR]     (default build; DEB_VERSION overrides the version)
#
# Prints the package's path last. Fails on any lintian error (warnings are
# printed, each in the README's list with the reason it is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
NFPM="${NFPM:-github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}"
out="${1:-build}"

# The version: the commit's time and hash, so that each commit's package
# upgrades the one before; "+dirty" for uncommitted changes.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
if [ -z "${DEB_VERSION:-}" ]; then
	DEB_VERSION="0.1~git$(TZ=UTC date -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S).$(git rev-parse --short HEAD)"
	git diff --quiet HEAD 2>/dev/null || DEB_VERSION="$DEB_VERSION+dirty"
fi
case "$DEB_VERSION" in
[0-9]*) ;;
*) echo "deb: DEB_VERSION $DEB_VERSION: a Debian version starts with a digit" >&2; exit 1 ;;
esac
export DEB_VERSION
export DEB_ARCH="${DEB_ARCH:-$("$GO" env GOARCH)}"
export DEB_MAINTAINER="${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}"
# The files staged for nfpm (packaging/nfpm.yaml names them there).
DEB_BUILD=build/deb
rm -rf "$DEB_BUILD"
mkdir -p "$DEB_BUILD/bin" "$DEB_BUILD/man"

CGO_ENABLED=0 GOARCH="$DEB_ARCH" "$GO" build -trimpath -tags urfave_cli_no_docs \
	-ldflags "-s -w -X github.com/open-lambda/ol-shim/internal/clicmd.Version=$DEB_VERSION -X main.Version=$DEB_VERSION" \
	-o "$DEB_BUILD/bin/" ./cmd/ol-shim ./cmd/ol-shimd ./cmd/ol-shim-init ./cmd/ol-shim-runtime

sed 's|/usr/local/bin/|/usr/bin/|g' systemd/ol-shim.service >"$DEB_BUILD/ol-shim.service"
grep -q '^ExecStart=/usr/bin/ol-shimd ' "$DEB_BUILD/ol-shim.service" || { echo "deb: ol-shim.service: no ExecStart of /usr/bin/ol-shimd" >&2; exit 1; }
# The example pools name test images a new host has not got: commented
# out, for the administrator to adapt.
awk '/^# One table per pool/ { pools = 1 } pools && /^[^#]/ { $0 = "# " $0 } { print }' examples/config.toml >"$DEB_BUILD/config.toml"

host_bin="$DEB_BUILD/bin"
if [ "$DEB_ARCH" != "$("$GO" env GOHOSTARCH)" ]; then
	host_bin="$DEB_BUILD/host-bin"
	"$GO" build -tags urfave_cli_no_docs -ldflags "-X github.com/open-lambda/ol-shim/internal/clicmd.Version=$DEB_VERSION" -o "$host_bin/" ./cmd/ol-shimd
fi
"$host_bin/ol-shimd" man --date "$(TZ=UTC date -d "@$SOURCE_DATE_EPOCH" +%F)" "$DEB_BUILD/man" >/dev/null
gzip -9n "$DEB_BUILD"/man/*.1
"$host_bin/ol-shimd" completion bash >"$DEB_BUILD/ol-shim.bash"

{
	echo "ol-shim ($DEB_VERSION) unstable; urgency=medium"
	echo
	echo "  * Built from commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)."
	echo "    The history is the repository's git log."
	echo
	echo " -- $DEB_MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DEB_BUILD/changelog.gz"

deb="$out/ol-shim_${DEB_VERSION}_${DEB_ARCH}.deb"
mkdir -p "$out"
rm -f "$deb"
"$GO" run "$NFPM" package --config packaging/nfpm.yaml --packager deb --target "$deb" >&2
[ -s "$deb" ] || { echo "deb: nfpm made no $deb" >&2; exit 1; }

if command -v lintian >/dev/null; then
	lint="$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v "running with root privileges" || true)"
	[ -z "$lint" ] || echo "$lint" >&2
	echo "deb: lintian: $(grep -c '^E:' <<<"$lint" || true) errors, $(grep -c '^W:' <<<"$lint" || true) warnings" >&2
	if grep -q '^E:' <<<"$lint"; then
		exit 1
	fi
elif [ -n "${CI:-}" ]; then
	echo "deb: lintian not found (make setup installs it)" >&2
	exit 1
fi
echo "$deb"
