#!/usr/bin/env bash
# e2e-cluster.sh: builds the e2e host image (cached) and this commit's
# Debian package, and runs TestCluster: three ol-shim hosts behind HAProxy
# (examples/cluster), in one network namespace, traffic on loopback only.
# Needs a dockerd answering (make e2e-cluster runs it under
# hack/with-docker.sh) and Debian's haproxy (make setup).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

hack/images.sh
hack/e2e-image.sh
E2E_DEB="$PWD/$(hack/deb.sh build/e2e | tail -1)"
export E2E_DEB
"$GO" test -tags e2e -count=1 -v -timeout 30m -run '^TestCluster$' ./e2e
