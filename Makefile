# vpblu — the two commands a newcomer needs are `make lab` and `make test`.
# Build caches live outside the clone so reruns (and CI) are quick.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vpblu/target
CARGO ?= cargo

.PHONY: help deps build test fmt-check clippy bench crds testbed testbed-up wireguard-go lab lab-down

help:
	@echo "make lab       bring the vpblu mesh up on this machine (see README)"
	@echo "make test      everything CI runs: fmt, clippy -D warnings, all tests"
	@echo "make bench     print the speed and memory figures"
	@echo "make testbed   build kube-apiserver + etcd from the Go module proxy (cached)"
	@echo "make testbed-up  run them on loopback with vpblu's CRDs, for kubectl, until Ctrl-C"
	@echo "make crds      regenerate k8s/crds/*.yaml from the Rust types"
	@echo "make wireguard-go  build the userspace WireGuard from the Go module proxy (cached)"

# Installs what the build and tests need, idempotently.
deps:
	@tools/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins --locked

fmt-check:
	$(CARGO) fmt --all --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

testbed: deps
	@tools/testbed/build.sh >/dev/null

# The userspace WireGuard the data-plane tests (and the lab) run here.
wireguard-go: deps
	@tools/wireguard-go/build.sh >/dev/null

testbed-up: testbed
	@command -v kubectl >/dev/null || tools/testbed/build.sh kubectl >/dev/null
	$(CARGO) run -q -p vpblu-e2e --bin testbed --locked

test: deps fmt-check clippy build testbed wireguard-go
	$(CARGO) test --workspace --locked

bench: deps
	$(CARGO) bench -p vpblu-controller --bench desired_state --locked
	$(CARGO) bench -p vpblu-daemon --bench classify --locked

crds:
	$(CARGO) run -p vpblu-k8s --bin crdgen --locked

lab:
	@echo "make lab: the whole mesh on this machine arrives with the lab issue (#7); it is not built yet." >&2
	@exit 2

lab-down:
	@echo "make lab-down: nothing to clean up; the lab is not built yet (#7)." >&2
