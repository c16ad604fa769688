# ol-shim — run `make help` for the targets.

GO      ?= go
BIN     := bin/ol-shim
DBIN    := bin/ol-shimd
IBIN    := bin/ol-shim-init
RBIN    := bin/ol-shim-runtime
PREFIX  ?= /usr/local
# Docker CLI plugins: docker-ol there makes "docker ol run ..." work.
CLI_PLUGINS ?= /usr/local/lib/docker/cli-plugins
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFILES  = $(shell find . -name '*.go' -not -path './build/*')

.DEFAULT_GOAL := help
.PHONY: help setup build deb e2e-cluster run demo images plugin bench-serve fuzz ctrl-c test integration e2e bench bench-quick bench-go bench-docker fuzz-save lint install uninstall check clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install what is missing on a Debian host (docker.io, fuse3, busybox-static, debootstrap); needs root
	hack/setup.sh

build: $(BIN) $(DBIN) $(IBIN) $(RBIN) ## static binaries (CGO_ENABLED=0): bin/ol-shim, the client users type; bin/ol-shimd, the daemon; bin/ol-shim-init, each sandbox's PID 1 and agent (runs in images FROM scratch); bin/ol-shim-runtime, the OCI runtime dockerd calls (runc-compatible)

# Rebuilt when a source changed: `make install` on a host without Go works
# with binaries built elsewhere.
$(BIN) $(DBIN) $(IBIN) $(RBIN) &: $(GOFILES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w -X github.com/open-lambda/ol-shim/internal/clicmd.Version=$(VERSION) -X main.Version=$(VERSION)" -o bin/ ./cmd/ol-shim ./cmd/ol-shimd ./cmd/ol-shim-init ./cmd/ol-shim-runtime

deb: ## build/ol-shim_VERSION_ARCH.deb with nfpm (packaging/), checked by lintian: binaries, systemd units, plugin spec, docker ol, config (conffile), man pages, bash completion; DEB_VERSION overrides the version
	GO=$(GO) hack/deb.sh build

run: build ## build, start dockerd if needed, register bin/ol-shim-runtime with it (ol-shim runtime install), run the daemon in the foreground with examples/config.toml (Ctrl-C stops it and removes its sandboxes)
	hack/with-docker.sh sh -c 'hack/images.sh && $(BIN) runtime install && $(BIN) serve --config examples/config.toml --destroy-on-exit'

demo: build ## run one pool of real containers through cold, warm and hot acquires (starts dockerd if needed)
	hack/with-docker.sh sh -c 'hack/images.sh && $(BIN) demo --backend docker --rounds 5 && $(BIN) demo --backend docker --rounds 5 --pause-grace 1s'

# Every go test has its own -timeout, about 3x what its slowest package takes
# on the 2-core machines CI runs on, so a slow machine fails naming the slow
# test rather than at go test's default 10 min: unit tests' slowest package
# (shim/daemon's hostile suite) about 60 s; integration's (cmd/ol-shim) about
# 110-150 s; fuzz targets about 10 s each.
UNIT_TIMEOUT        ?= 5m
INTEGRATION_TIMEOUT ?= 9m
FUZZ_TIMEOUT        ?= 2m

test: ## unit tests with -race, no Docker (FUSE tests need root: they fail under CI=1 without it, skip otherwise)
	$(GO) test -race -count=1 -timeout $(UNIT_TIMEOUT) ./...
	GOMAXPROCS=1 $(GO) test -race -count=1 -timeout $(UNIT_TIMEOUT) -run 'Concurrent|Waiters' ./sandboxset
	$(GO) test -count=1 -timeout $(UNIT_TIMEOUT) -run 'Hostile|Leases' ./shim/daemon # again without -race: the full million acquire/release cycles

images: ## build the test images locally (no registry): ol-shim-test/runtime (FROM scratch), ol-shim-test/busybox
	hack/with-docker.sh hack/images.sh

integration: ## tests against a real dockerd, started (and stopped) if none answers; builds the test images; needs root (the symlink race runs 60 s here)
	hack/with-docker.sh sh -c 'hack/images.sh && OL_SHIM_RACE_SECONDS=60 $(GO) test -p 1 -race -count=1 -timeout $(INTEGRATION_TIMEOUT) -tags integration ./...'

bench-docker: ## Docker benchmarks: raw unpause, warm Get, cold Get, raw create+start (real dockerd)
	hack/with-docker.sh sh -c 'hack/images.sh && $(GO) test -run "^$$" -bench Docker -benchtime 1x -count=1 -timeout 30m -tags integration ./shim/docker'


E2E_HOSTS ?= dind,vm
e2e: build ## install ol-shim's .deb (an earlier version, upgraded to this commit's, then purged) and run it as a user would, on two systemd hosts: Debian 12 in Docker-in-Docker (dockerd 20.10, cgroup v1) and a Debian 13 QEMU VM (Docker 26, cgroup v2); images built once and cached; needs root
	GO=$(GO) E2E_HOSTS=$(E2E_HOSTS) hack/with-docker.sh hack/e2e.sh

e2e-cluster: build ## three ol-shim hosts (Docker-in-Docker, the .deb installed, API on mutual TLS) behind HAProxy as examples/cluster sets them up: locality, spill under load, a host killed, strangers refused; needs root and haproxy
	GO=$(GO) hack/with-docker.sh hack/e2e-cluster.sh

bench: build ## measure ol-shim against plain Docker on this host (about 20 min on 2 cores) and write BENCHMARKS.md, docs/bench-acquire.png and the README's headline; needs root
	hack/with-docker.sh sh -c 'hack/images.sh && $(GO) run ./bench -readme README.md'

bench-quick: build ## the same table with fewer repetitions (under 2 min): BENCHMARKS-quick.md, docs/bench-acquire-quick.png
	hack/with-docker.sh sh -c 'hack/images.sh && $(GO) run ./bench -quick'

bench-go: ## Go benchmarks alone: the pool (mock backend); FUSE quota'd volume vs plain directory (root)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 10m ./sandboxset
	$(GO) test -run '^$$' -bench QuotaFS -benchtime 3x -count=1 -timeout 10m ./scratch

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.7.0

lint: ## gofmt -s, go vet, staticcheck (all build tags), go mod tidy -diff, and the dependencies of the API package and of the client (no Docker client, FUSE, bbolt or Prometheus)
	@out=$$(gofmt -s -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt -s would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) vet -tags e2e ./e2e
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags integration ./...
	$(GO) mod tidy -diff
	@if $(GO) list -deps ./shim/api | grep -E 'moby/moby|go-fuse|bbolt|prometheus|ol-shim/(sandboxset|scratch|internal/serve|shim/(daemon|registry|docker|server|agent|ociruntime))$$'; then echo "shim/api must stay a leaf: it imports the above"; exit 1; fi
	@if $(GO) list -deps ./cmd/ol-shim-runtime | grep -E 'moby/moby|go-fuse|bbolt|prometheus|grpc|urfave|ol-shim/(shim/(daemon|registry|docker|server|api)|scratch)$$'; then echo "cmd/ol-shim-runtime must stay small, so that a pause starts fast: it imports the above"; exit 1; fi
	@if $(GO) list -deps ./cmd/ol-shim | grep -E 'moby/moby|go-fuse|bbolt|prometheus|distribution/reference|ol-shim/(shim/(daemon|registry|docker|server|imageref)|scratch)$$'; then echo "cmd/ol-shim (the client) must stay light, so a run starts fast: it imports the above"; exit 1; fi

install: $(BIN) $(DBIN) $(IBIN) $(RBIN) ## install the binaries, the systemd unit, the plugin spec for dockerd, and a config if none exists
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ol-shim
	install -D -m 0755 $(DBIN) $(DESTDIR)$(PREFIX)/bin/ol-shimd
	install -D -m 0755 $(IBIN) $(DESTDIR)$(PREFIX)/bin/ol-shim-init
	install -D -m 0755 $(RBIN) $(DESTDIR)$(PREFIX)/bin/ol-shim-runtime
	install -D -m 0644 systemd/ol-shim.service $(DESTDIR)/etc/systemd/system/ol-shim.service
	install -D -m 0644 systemd/ol-shim.socket $(DESTDIR)/etc/systemd/system/ol-shim.socket
	install -D -m 0644 plugin.json $(DESTDIR)/etc/docker/plugins/ol-shim.json
	install -d $(DESTDIR)$(CLI_PLUGINS) && ln -sf $(PREFIX)/bin/ol-shim $(DESTDIR)$(CLI_PLUGINS)/docker-ol
	[ -e $(DESTDIR)/etc/ol-shim/config.toml ] || install -D -m 0644 examples/config.toml $(DESTDIR)/etc/ol-shim/config.toml
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; echo "installed: systemctl enable --now ol-shim"; fi

uninstall: ## stop the service, remove its sandboxes (ol-shim serve --purge) and exactly what install put in place (an edited config and the state root stay; PURGE=1 removes the state root)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now ol-shim.service ol-shim.socket 2>/dev/null || true; fi
	@if [ -z "$(DESTDIR)" ] && [ -x $(PREFIX)/bin/ol-shimd ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
		$(PREFIX)/bin/ol-shimd serve --purge || { echo "uninstall: stopped before removing anything: start ol-shim again (systemctl start ol-shim), remove the volumes named above, then run make uninstall again" >&2; exit 1; }; fi
	rm -f $(DESTDIR)$(CLI_PLUGINS)/docker-ol
	rmdir $(DESTDIR)$(CLI_PLUGINS) $(DESTDIR)$(dir $(CLI_PLUGINS)) 2>/dev/null || true
	rm -f $(DESTDIR)$(PREFIX)/bin/ol-shim $(DESTDIR)$(PREFIX)/bin/ol-shimd $(DESTDIR)$(PREFIX)/bin/ol-shim-init $(DESTDIR)$(PREFIX)/bin/ol-shim-runtime $(DESTDIR)/etc/systemd/system/ol-shim.service $(DESTDIR)/etc/systemd/system/ol-shim.socket $(DESTDIR)/etc/docker/plugins/ol-shim.json
	@if cmp -s examples/config.toml $(DESTDIR)/etc/ol-shim/config.toml; then rm -f $(DESTDIR)/etc/ol-shim/config.toml; rmdir $(DESTDIR)/etc/ol-shim 2>/dev/null || true; \
	elif [ -e $(DESTDIR)/etc/ol-shim/config.toml ]; then echo "uninstall: leaving $(DESTDIR)/etc/ol-shim/config.toml: it is not the one install put there"; fi
	@if [ "$(PURGE)" = 1 ]; then rm -rf $(DESTDIR)/var/lib/ol-shim; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

bench-serve: ## ol-shim run vs docker run, and hot acquire+release over the API (real dockerd)
	hack/with-docker.sh sh -c 'hack/images.sh && $(GO) test -run "^$$" -bench Serve -benchtime 1x -count=1 -timeout 30m -tags integration ./integration'

plugin: ## build ol-shim as a managed Docker plugin in build/plugin (docker plugin create ol-shim build/plugin)
	hack/plugin.sh build/plugin

fuzz-save: ## keep what the fuzzers found (in Go's cache) in */testdata/fuzz, where go test replays it as regression inputs
	@for pkg in scratch shim/config shim/server shim/docker; do for d in $$($(GO) env GOCACHE)/fuzz/github.com/open-lambda/ol-shim/$$pkg/Fuzz*; do \
		[ -d "$$d" ] || continue; mkdir -p $$pkg/testdata/fuzz/$$(basename $$d); cp -n $$d/* $$pkg/testdata/fuzz/$$(basename $$d)/; \
		echo "$$pkg/testdata/fuzz/$$(basename $$d): $$(ls $$pkg/testdata/fuzz/$$(basename $$d) | wc -l) inputs"; done; done

FUZZTIME ?= 100000x
FUZZMIN ?= 3000x
fuzz: ## run each fuzz target for FUZZTIME executions (default 100000x, about 10 s each here: a count, not a duration, since a duration races Go 1.26's fuzz coordinator at its deadline, golang/go#75804); crashers land in testdata/fuzz and become regression tests
	$(GO) test -run '^$$' -fuzz '^FuzzValidateName$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./scratch
	$(GO) test -run '^$$' -fuzz '^FuzzParseOptions$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./scratch
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/config
	$(GO) test -run '^$$' -fuzz '^FuzzAPIPoolBody$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/server
	$(GO) test -run '^$$' -fuzz '^FuzzAPIAcquireAndLeases$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/server
	$(GO) test -run '^$$' -fuzz '^FuzzReconcileLabels$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/docker
	$(GO) test -run '^$$' -fuzz '^FuzzRunCallJSON$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/api/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseExit$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) -timeout $(FUZZ_TIMEOUT) ./shim/agent

ctrl-c: ## check that Ctrl-C in make run stops the command before the dockerd it started (root; no dockerd may be running)
	$(GO) run ./hack/ctrlc

CHECK_STEPS := setup lint test fuzz ctrl-c integration e2e e2e-cluster
check: ## the whole test suite, step by step with the time of each: what CI runs (needs root)
	@total=$$(date +%s); for step in $(CHECK_STEPS); do s=$$(date +%s); $(MAKE) --no-print-directory $$step || { echo "check: make $$step failed after $$(( $$(date +%s) - s )) s"; exit 1; }; \
		echo "check: make $$step took $$(( $$(date +%s) - s )) s"; done; echo "check: all of it took $$(( $$(date +%s) - total )) s"

clean: ## remove build output
	rm -rf bin build
