#!/usr/bin/env bash
# plugin-specs.sh: finds legacy Docker plugin specs whose unix socket does not
# answer. dockerd waits about 30 s for each such plugin on every volume
# listing (any filter), which makes everything that lists volumes slow:
# ol-shim's reconcile, the integration tests' sweeps, `docker volume ls`.
#
# Dead specs of ol-shim's own plugin names (ol-shim, ol-shim-it, ol-shim-bench)
# are removed: `ol-shim serve` writes its spec again when it is missing. Others
# are reported, not touched. Exits 1 if a dead spec is left.
set -euo pipefail

own=" ol-shim ol-shim-it ol-shim-bench "
left=0
for f in /etc/docker/plugins/*.json /etc/docker/plugins/*.spec /usr/lib/docker/plugins/*.json /usr/lib/docker/plugins/*.spec; do
	[ -f "$f" ] || continue
	name="$(basename "$f")"
	name="${name%.*}"
	if [ "${f##*.}" = json ]; then
		addr="$(sed -n 's/.*"Addr" *: *"\([^"]*\)".*/\1/p' "$f" | head -1)"
	else
		addr="$(head -1 "$f")"
	fi
	case "$addr" in
	unix://*) sock="${addr#unix://}" ;;
	*) continue ;; # TCP plugins: not probed
	esac
	if curl -s --max-time 2 --unix-socket "$sock" -X POST http://localhost/Plugin.Activate >/dev/null 2>&1; then
		continue
	fi
	if [[ "$own" == *" $name "* ]]; then
		echo "plugin-specs: removing $f: its socket $sock does not answer (a leftover of an ol-shim that was killed); dockerd would wait ~30 s for it on every volume listing"
		rm -f "$f"
	else
		echo "plugin-specs: WARNING: $f names plugin $name at $sock, which does not answer: dockerd waits ~30 s for it on every volume listing, so ol-shim's reconcile and its tests run slow; start that plugin or remove the file" >&2
		left=1
	fi
done
exit "$left"
