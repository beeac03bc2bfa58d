# vpblu — the two commands a newcomer needs are `make lab` and `make test`.
# Build caches live outside the clone so reruns (and CI) are quick.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vpblu/target
# CI builds each run from a fresh clone, whose path may differ: incremental
# caches (keyed by that path, about 9 GB a run) would only pile up there.
ifdef CI
export CARGO_INCREMENTAL ?= 0
endif
CARGO ?= cargo

.PHONY: help deps build test fmt-check clippy bench crds deploy-manifests testbed testbed-up wireguard-go helm helm-install images lab lab-root lab-down build-meshtop install-cli kind-e2e kind-down prometheus soak chaos fuzz docs docs-serve mdbook kvm-validate kvm-down

help:
	@echo "make lab       bring the vpblu mesh up on this machine (see README)"
	@echo "make test      everything CI runs: fmt, clippy -D warnings, all tests"
	@echo "make bench     print the speed and memory figures"
	@echo "make soak      50 back-to-back 3-node key rotations under traffic (VPBLU_SOAK_RUNS, VPBLU_SOAK_STRESS)"
	@echo "make chaos     faults under traffic for VPBLU_CHAOS_SECONDS (300): per-fault loss, convergence, invariants"
	@echo "make fuzz      run every cargo-fuzz target FUZZ_SECONDS (600) each; corpora in fuzz/corpus (nightly, fuzzing only)"
	@echo "make testbed   build kube-apiserver + etcd from the Go module proxy (cached)"
	@echo "make testbed-up  run them on loopback with vpblu's CRDs, for kubectl, until Ctrl-C"
	@echo "make crds      regenerate k8s/crds/*.yaml and chart/vpblu/crds/ from the Rust types"
	@echo "make deploy-manifests  regenerate k8s/deploy/*.yaml from chart/vpblu"
	@echo "make helm      build helm from the Go module proxy (cached)"
	@echo "make helm-install  helm install chart/vpblu into the current kubectl context"
	@echo "make images    build the controller and daemon OCI images (no registry, no engine)"
	@echo "make wireguard-go  build the userspace WireGuard from the Go module proxy (cached)"
	@echo "make prometheus  build Prometheus and promtool from the Go module proxy (cached), for the metrics tests"
	@echo "make docs      build the docs site (docs/ -> docs/book) with mdBook; make docs-serve serves it"
	@echo "make lab-down  remove what a killed lab left behind"
	@echo "make kvm-validate  the kernel WireGuard backend in QEMU guests (Debian kernel): the §12 table"
	@echo "make kvm-down  remove what a killed kvm-validate left behind (like lab-down: every lab's)"
	@echo "make kind-e2e  §12 on a real 3-node kind cluster, built offline, vpblu installed with helm (root)"
	@echo "make kind-down remove the cluster and private engine a killed kind-e2e left behind"
	@echo "make build-meshtop  build meshtop, the terminal view of the mesh"
	@echo "make install-cli    install vpblu (and kubectl-vpblu, for kubectl vpblu status) in $$(PREFIX)/bin"

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

# Prometheus and promtool for the metrics tests: the lab scraped for real,
# the alert rules' unit tests, `promtool check metrics` on every page.
prometheus: deps
	@tools/prometheus/build.sh >/dev/null

# helm renders, lints and installs chart/vpblu (and k8s/deploy from it).
helm: deps
	@tools/helm/build.sh >/dev/null

# Installs (or upgrades) vpblu into the current kubectl context, with the
# images `make images` tags (load them into the nodes first, or push them
# and set images.*.repository); set HELM_ARGS for more (--set, -f).
IMAGE_TAG ?= $(shell git describe --tags --always --dirty)
HELM_ARGS ?=
helm-install: helm
	"$$(tools/helm/build.sh 2>/dev/null)/helm" upgrade --install vpblu chart/vpblu \
		--namespace vpblu-system --create-namespace --wait \
		--set images.controller.tag=$(IMAGE_TAG) --set images.daemon.tag=$(IMAGE_TAG) $(HELM_ARGS)

# The controller and daemon images (OCI layouts and docker-archive tars)
# from the release binaries, without pulling or a container engine.
images: deps wireguard-go
	$(CARGO) build --release -p vpblu-controller -p vpblu-daemon --bins --locked
	tools/images/build.sh "$(CARGO_TARGET_DIR)/release" "$(CARGO_TARGET_DIR)/images" --max-mb controller=60,daemon=120

testbed-up: testbed
	@command -v kubectl >/dev/null || tools/testbed/build.sh kubectl >/dev/null
	$(CARGO) run -q -p vpblu-e2e --bin testbed --locked

test: deps fmt-check clippy build testbed wireguard-go helm prometheus mdbook
	$(CARGO) test --workspace --locked
	tools/kind/e2e.sh

# Every bench prints its figures and a GOAL line per goal; the log gathers
# them and tools/bench/table.sh prints one table at the end.
BENCH_LOG := $(CARGO_TARGET_DIR)/vpblu-bench.log
BENCHES := vpblu-engine:desired_state vpblu-controller:stream_fanout vpblu-daemon:classify \
	vpblu-daemon:mesh_throughput vpblu-daemon:daemon_rss vpblu-e2e:lab vpblu-e2e:rotation

bench: deps wireguard-go testbed
	$(CARGO) build --release --workspace --bins --locked
	@mkdir -p "$(dir $(BENCH_LOG))" && : > "$(BENCH_LOG)"
	@for b in $(BENCHES); do \
		echo "$(CARGO) bench -p $${b%%:*} --bench $${b#*:} --locked"; \
		$(CARGO) bench -p "$${b%%:*}" --bench "$${b#*:}" --locked | tee -a "$(BENCH_LOG)"; \
	done
	tools/bench/classify_costs.sh | tee -a "$(BENCH_LOG)"
	@tools/bench/table.sh "$(BENCH_LOG)"

# Key rotation soak: VPBLU_SOAK_RUNS (default 50) 3-node rotations under
# traffic on the lab; per-run figures, a summary, and on any loss the
# capture and logs in the directory it prints. Needs root.
soak: lab-root deps wireguard-go testbed
	$(CARGO) build --release --workspace --bins --locked
	$(CARGO) bench -p vpblu-e2e --bench soak --locked

chaos: lab-root deps wireguard-go testbed
	$(CARGO) build --release --workspace --bins --locked
	$(CARGO) bench -p vpblu-e2e --bench chaos --locked

fuzz:
	@tools/fuzz/run.sh

crds:
	$(CARGO) run -p vpblu-k8s --bin crdgen --locked

deploy-manifests: helm
	$(CARGO) run -p vpblu-e2e --bin deploygen --locked

# The whole mesh on this machine: a real API server, two controllers, a
# daemon per node in its own network namespace, pods, real traffic. Stays
# up until Ctrl-C. Needs root (namespaces, eBPF).
lab: lab-root deps build testbed wireguard-go
	"$(CARGO_TARGET_DIR)/debug/vpblu-lab" up

lab-root:
	@[[ $$(id -u) -eq 0 ]] || { echo "make lab: run as root (it creates network namespaces and loads eBPF programs)" >&2; exit 2; }

# Removes whatever a lab killed without cleaning up left behind.
lab-down:
	@[[ $$(id -u) -eq 0 ]] || { echo "make lab-down: run as root" >&2; exit 2; }
	@if [[ -x "$(CARGO_TARGET_DIR)/debug/vpblu-lab" ]]; then "$(CARGO_TARGET_DIR)/debug/vpblu-lab" down; \
	else $(CARGO) run -q -p vpblu-e2e --bin vpblu-lab --locked -- down; fi

# A real 3-node kind cluster built offline (tools/kind: node image, images,
# a private dockerd), vpblu installed from chart/vpblu with helm, §12 on it.
kind-e2e: deps
	tools/kind/e2e.sh

# Removes the cluster and the private engine a killed kind-e2e left behind.
kind-down:
	tools/kind/e2e.sh down

# The docs site: docs/ (guide, generated reference) built by the pinned
# mdBook (tools/mdbook, from crates.io, cached) into docs/book.
mdbook: deps
	@tools/mdbook/build.sh >/dev/null

docs: mdbook
	"$$(tools/mdbook/build.sh | tail -1)/mdbook" build docs
	@echo "docs: the site is in docs/book (open docs/book/index.html, or make docs-serve)"

# Serves the built site on loopback until Ctrl-C.
docs-serve: docs
	@echo "docs: http://127.0.0.1:3000/ (Ctrl-C stops)"
	cd docs/book && python3 -m http.server 3000 --bind 127.0.0.1

# meshtop: the terminal view; it polls a controller's dashboard
# (meshtop --url http://127.0.0.1:8082 after a kubectl port-forward).
build-meshtop:
	$(CARGO) build -p meshtop --locked
	@echo "built $(CARGO_TARGET_DIR)/debug/meshtop"

# `vpblu status`, also as the kubectl plugin `kubectl vpblu status`
# (kubectl runs any kubectl-NAME on PATH).
PREFIX ?= /usr/local
install-cli:
	$(CARGO) build --release -p vpblu-cli --locked
	install -D -m 0755 "$(CARGO_TARGET_DIR)/release/vpblu" "$(PREFIX)/bin/vpblu"
	ln -sf vpblu "$(PREFIX)/bin/kubectl-vpblu"
	@echo "installed $(PREFIX)/bin/vpblu and $(PREFIX)/bin/kubectl-vpblu"

# The kernel WireGuard backend, proven in QEMU guests whose (Debian) kernel
# has the module: the guest image is built and cached by tools/kvm/image.sh
# (~4 min once), then tests/tests/kvm_kernel.rs boots one guest per node and
# prints the §12 table for the kernel backend. Not part of `make test`.
kvm-validate: lab-root deps build testbed wireguard-go
	@tools/kvm/install-deps.sh
	@tools/kvm/image.sh >/dev/null
	VPBLU_KVM_REPORT=$${VPBLU_KVM_REPORT:-$(CARGO_TARGET_DIR)/kvm-validate.txt} \
		$(CARGO) test -p vpblu-e2e --test kvm_kernel --locked -- --ignored --nocapture
	@cat "$${VPBLU_KVM_REPORT:-$(CARGO_TARGET_DIR)/kvm-validate.txt}"

# Removes what a killed kvm-validate left: its QEMU guests, control plane and
# controller are recorded by PID and its namespaces carry the lab's prefix,
# so the lab's cleanup finds them (and, as lab-down does, any lab's).
kvm-down: lab-down
