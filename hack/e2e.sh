#!/usr/bin/env bash
# e2e.sh: builds the e2e images (cached) and the Debian packages, and runs the end-to-end suite on
# the hosts E2E_HOSTS names (default dind,vm). Needs a dockerd answering
# (make e2e runs it under hack/with-docker.sh).
#
# One rerun, and only for this: when the VM's guest kernel panicked
# (e2e/vm_test.go reports it from the console) and nothing else failed,
# the VM host runs once more from a fresh boot. Under QEMU's software CPU
# the guest kernel has, rarely, died of an oops in an interrupt in code no
# test touches; that says nothing of ol-shim. Any other failure, or a
# second panic, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

hack/images.sh
hack/e2e-image.sh
# The packages the hosts install: this commit's, and the same tree as an
# earlier version (0.0.1) that the suite installs first and upgrades.
E2E_DEB_OLD="$PWD/$(DEB_VERSION=0.0.1 hack/deb.sh build/e2e | tail -1)"
E2E_DEB="$PWD/$(hack/deb.sh build/e2e | tail -1)"
export E2E_DEB_OLD E2E_DEB
E2E_VM_IMAGE="$(hack/vm-image.sh)"
export E2E_VM_IMAGE E2E_HOSTS="${E2E_HOSTS:-dind,vm}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export E2E_GUEST_PANIC_FILE="$work/panicked"

suite() { "$GO" test -tags e2e -count=1 -v -timeout 45m -run '^TestInstalledService$' ./e2e "$@" 2>&1 | tee "$work/log"; }

suite && exit 0
[ -s "$E2E_GUEST_PANIC_FILE" ] || exit 1
# Every failed test must be one whose guest panicked, or its parent.
panicked="$(sort -u "$E2E_GUEST_PANIC_FILE")"
failed="$(sed -n 's/^ *--- FAIL: \([^ ]*\) .*/\1/p' "$work/log" | sort -u)"
for f in $failed; do
	if ! grep -qx -e "$f" <<<"$panicked" && ! grep -q "^$f/" <<<"$panicked"; then
		exit 1
	fi
done
if [ "$panicked" != "TestInstalledService/vm" ]; then
	exit 1
fi
echo "e2e: the VM's guest kernel panicked (its console is above) and nothing else failed; the VM host runs once more"
rm -f "$E2E_GUEST_PANIC_FILE"
E2E_HOSTS=vm suite -run '^TestInstalledService$/^vm$'
