#!/usr/bin/env bash
# with-docker.sh CMD...: runs CMD with a Docker daemon answering on
# /var/run/docker.sock. Installs docker.io if dockerd is missing, starts
# dockerd if none answers (no bridge, no iptables: sandboxes need no
# network), and stops the daemon afterwards if it started it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ "$(id -u)" -ne 0 ]; then
	echo "with-docker: needs root (to start dockerd and mount FUSE)" >&2
	exit 1
fi
command -v dockerd >/dev/null 2>&1 || "$here/setup.sh"

sock=/var/run/docker.sock
answers() { curl -sf --max-time 2 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }

started=""
log=/tmp/ol-shim-dockerd.log
# A dockerd that is still starting or stopping: give it time to settle.
for _ in $(seq 1 120); do
	answers && break
	pgrep -x dockerd >/dev/null || break
	sleep 1
done
if ! answers && pgrep -x dockerd >/dev/null; then
	echo "with-docker: a dockerd runs but does not answer on $sock" >&2
	exit 1
fi
if ! answers; then
	echo "with-docker: starting dockerd (log: $log)"
	# In its own session: the Ctrl-C that stops the command (make run) must
	# not reach dockerd, which the trap below stops once the command is done.
	setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
	started=$!
	for _ in $(seq 1 120); do
		answers && break
		if ! kill -0 "$started" 2>/dev/null; then
			echo "with-docker: dockerd exited; last lines of $log:" >&2
			tail -20 "$log" >&2
			exit 1
		fi
		sleep 0.5
	done
	answers || { echo "with-docker: dockerd did not answer within 60s" >&2; tail -20 "$log" >&2; exit 1; }
fi

# A legacy plugin spec whose socket does not answer makes dockerd wait about
# 30 s for that plugin on every volume listing, whatever the filter (`docker
# volume ls --filter driver=...` too), and ol-shim's reconcile and every
# integration test's sweep list volumes: one such spec turned a 0.8 s test
# into 62 s. ol-shim's own specs (ol-shim, and the tests' ol-shim-it and
# ol-shim-bench) are rewritten by `ol-shim serve` when missing, so a dead one
# is only a leftover of a process killed before it could remove it (a test
# binary that timed out, a kill -9): remove it. Any other is reported.
"$here/plugin-specs.sh" || true

stop() {
	if [ -n "$started" ]; then
		echo "with-docker: stopping dockerd"
		kill "$started" 2>/dev/null || true
		for _ in $(seq 1 240); do kill -0 "$started" 2>/dev/null || break; sleep 0.5; done
		if kill -0 "$started" 2>/dev/null; then
			echo "with-docker: dockerd still stopping after 120s" >&2
		fi
	fi
}
trap stop EXIT
rc=0
"$@" || rc=$?
exit "$rc"
