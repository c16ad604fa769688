#!/usr/bin/env bash
# apt-mirror.sh: prints the Debian mirror this machine's apt uses (the first
# URI of its sources, deb822 or one-line), for debootstrap. E2E_MIRROR wins.
set -euo pipefail
if [ -n "${E2E_MIRROR:-}" ]; then
	echo "$E2E_MIRROR"
	exit 0
fi
m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$m" ]; then
	m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 || true)
fi
if [ -z "$m" ]; then
	echo "apt-mirror: no Debian mirror in this machine's apt sources; set E2E_MIRROR" >&2
	exit 1
fi
echo "$m"
