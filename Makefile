# Setpoint developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# The build system of `make build`, `test`, `lint`, `fuzz`, `image` and `deploy`: Bazel
# when bazelisk or bazel is on PATH (or BAZEL names one, e.g. tools/bazel/airgap/bazel),
# Cargo otherwise; BUILD=bazel or BUILD=cargo chooses. Each says which.
BAZEL ?= $(firstword $(shell command -v bazelisk bazel 2>/dev/null))
BUILD ?= $(if $(BAZEL),bazel,cargo)
ifeq ($(BUILD),bazel)
ifeq ($(BAZEL),)
$(error BUILD=bazel, but neither bazelisk nor bazel is on PATH)
endif
else ifneq ($(BUILD),cargo)
$(error BUILD=$(BUILD): use BUILD=bazel or BUILD=cargo)
endif
USING = @echo "make $@: building with $(BUILD)$(if $(filter bazel,$(BUILD)), ($(BAZEL)))"
# The image's binary is static (glibc, +crt-static): no libc in the image. It is built
# for this machine's architecture (x86_64 or aarch64); on a host that is not Linux
# (macOS) the same `make image` runs inside the pinned Rust image (needs Docker).
IMAGE_TARGET := $(shell uname -m | sed 's/^arm64$$/aarch64/')-unknown-linux-gnu
IMAGE_BUILDER ?= $(if $(filter Linux,$(shell uname -s)),native,docker)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Every timestamp in the image and its SBOM, and the revision label: from the commit.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Rust tools are built from crates.io at pinned versions into the cache, like the
# control plane.
TOOLS_CACHE := $(or $(SETPOINT_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/setpoint)/tools
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY := $(TOOLS_CACHE)/cargo-deny-$(CARGO_DENY_VERSION)/bin/cargo-deny
CARGO_CYCLONEDX_VERSION := 0.5.9
CARGO_CYCLONEDX := $(TOOLS_CACHE)/cargo-cyclonedx-$(CARGO_CYCLONEDX_VERSION)/bin/cargo-cyclonedx

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: controlplane ## Local control plane, demo Deployments, dev PKI, the API and the reconciler (Ctrl-C stops)
	$(CARGO) build --locked --bins
	target/debug/setpoint-dev

.PHONY: controlplane
controlplane: ## Build etcd, kube-apiserver, kube-controller-manager into the cache (no-op when built)
	@tools/controlplane/build.sh >/dev/null

.PHONY: build
build: ## Every binary (Bazel: every target)
	$(USING)
ifeq ($(BUILD),bazel)
	$(BAZEL) build //...
else
	$(CARGO) build --workspace --locked --bins
endif

# Under Bazel the @controlplane repository builds the control plane (tools/bazel/controlplane.bzl).
.PHONY: test
test: $(if $(filter cargo,$(BUILD)),controlplane) ## Unit and integration tests (against a real local control plane)
	$(USING)
ifeq ($(BUILD),bazel)
	$(BAZEL) test //...
else
	$(CARGO) build --workspace --locked --bins
	$(CARGO) test --workspace --locked
endif

# BENCH_ARGS, for example `--deployments 500 --calls 5000`, or
# `--deployments 1000,10000,100000` to measure the count the goals are set at (it takes
# much longer): see `setpoint-bench --help`.
BENCH_ARGS ?=
SETPOINT_BENCH = ghz=$$(tools/bench/build.sh) && target/release/setpoint-bench \
  --api-bin target/release/setpoint-api --ghz "$$ghz" $(BENCH_ARGS)
.PHONY: bench
bench: controlplane ## Release build; 1,000 vs 10,000 Deployments (default; make bench BENCH_ARGS="--deployments 1000,10000,100000" measures 100,000 too): reads (ghz), CPU per call, memory, start-up, 10,000 watchers, writes → docs/benchmarks.md
	$(CARGO) build --release --locked --bins
	$(SETPOINT_BENCH) --output docs/benchmarks.md

.PHONY: soak
soak: controlplane ## 200 clients for 10 min at 10,000 Deployments; fails on any failed call or memory growth (not in CI)
	$(CARGO) build --release --locked --bins
	$(SETPOINT_BENCH) --deployments 10000 --soak-seconds 600

# Property tests of every parser of untrusted input (request names, label selectors,
# page tokens, the policy): 256 cases each in `make test`, FUZZ_CASES here.
FUZZ_CASES ?= 20000
.PHONY: fuzz
fuzz: ## Property tests ("fuzz"): request validation, selector, page token, policy parsers, FUZZ_CASES each
	$(USING)
ifeq ($(BUILD),bazel)
# --nocache_test_results: each run tries new random cases, never a cached result.
	$(BAZEL) test --test_env=PROPTEST_CASES=$(FUZZ_CASES) --test_arg=properties --test_output=summary \
	  --nocache_test_results //services/core:setpoint_core_unit_test //services/api:setpoint_api_unit_test
else
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p setpoint-core -p setpoint-api --lib properties
endif

.PHONY: image
image: $(if $(filter cargo,$(BUILD)),$(if $(filter native,$(IMAGE_BUILDER)),$(CARGO_CYCLONEDX))) ## Both static binaries in one reproducible OCI image archive (Cargo: and their SBOMs; no Docker on Linux): target/image/
	$(USING)
	BUILD=$(BUILD) BAZEL=$(BAZEL) CARGO=$(CARGO) IMAGE_BUILDER=$(IMAGE_BUILDER) IMAGE_TARGET=$(IMAGE_TARGET) \
	  TARGET_DIR=$(TARGET_DIR) CARGO_CYCLONEDX=$(CARGO_CYCLONEDX) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	  REVISION=$(REVISION) tools/image/build.sh

.PHONY: image-reproducible
image-reproducible: image ## Build the image again from a clean clone elsewhere; fail unless identical
	tools/image-reproducible.sh

.PHONY: deploy
deploy: image ## KIND (needs Docker): cluster, image, TLS Secret, manifests, rollout, smoke test (KIND_OFFLINE=1: no registry)
	$(USING)
	tools/deploy/deploy.sh up

# The cluster kubectl talks to (its current context, or KUBECTL="kubectl --context NAME").
KUBECTL ?= kubectl
OVERLAY ?= .dev/overlay
.PHONY: overlay
overlay: ## Kustomize overlay of k8s/base with egress to this cluster's API-server endpoints only: $(OVERLAY)
	tools/deploy/egress.sh $(OVERLAY) $(KUBECTL)

.PHONY: kind-node
kind-node: ## Offline KIND node image and CNI from the Go module proxy and Debian (Linux; ~10 min cold, then cached)
	tools/kind/build.sh >/dev/null

.PHONY: e2e-kind
e2e-kind: ## End-to-end suite against the cluster of `KIND_OFFLINE=1 make deploy`
	$(CARGO) build --locked -p setpointctl
	$(CARGO) test --locked -p e2e-kind -- --ignored --test-threads=1 --nocapture

.PHONY: undeploy
undeploy: ## Remove Setpoint from the KIND cluster
	tools/deploy/deploy.sh down

.PHONY: kind-down
kind-down: ## Delete the KIND cluster
	tools/deploy/deploy.sh kind-down

.PHONY: deny
deny: $(CARGO_DENY) ## Supply chain: sources, licenses and bans of every Rust dependency (deny.toml)
	$(CARGO_DENY) check sources licenses bans

.PHONY: audit
audit: $(CARGO_DENY) ## Known advisories: Cargo.lock against a dated RustSec snapshot, offline (SETPOINT_ADVISORY_DB)
	CARGO_DENY=$(CARGO_DENY) tools/audit/audit.sh

.PHONY: audit-live
audit-live: $(CARGO_DENY) ## Known advisories against the live RustSec database (fetches it from GitHub)
	$(CARGO_DENY) check advisories

$(CARGO_DENY):
	@echo "building cargo-deny $(CARGO_DENY_VERSION) from crates.io (about 3 min) ..."
	$(CARGO) install --locked --quiet cargo-deny@$(CARGO_DENY_VERSION) --root $(TOOLS_CACHE)/cargo-deny-$(CARGO_DENY_VERSION)

$(CARGO_CYCLONEDX):
	@echo "building cargo-cyclonedx $(CARGO_CYCLONEDX_VERSION) from crates.io (about 2 min) ..."
	$(CARGO) install --locked --quiet cargo-cyclonedx@$(CARGO_CYCLONEDX_VERSION) --root $(TOOLS_CACHE)/cargo-cyclonedx-$(CARGO_CYCLONEDX_VERSION)

.PHONY: lint
lint: ## rustfmt, clippy (warnings are errors; Bazel: as aspects), buildifier, actionlint, the Bazel files against Cargo
	$(USING)
ifeq ($(BUILD),bazel)
	$(BAZEL) build --config=lint //...
else
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
endif
	lint=$$(tools/lint/build.sh) && $$lint/buildifier --mode=check --lint=warn -r . && $$lint/actionlint
	$(CARGO) test --locked --quiet -p bazelcheck

.PHONY: fmt
fmt: ## Format the Rust code and the Bazel files
	$(CARGO) fmt --all
	rustfmt --edition 2024 tools/ociimage/bazel/*.rs # a Bazel-only test, outside Cargo's targets
	lint=$$(tools/lint/build.sh) && $$lint/buildifier -r .

.PHONY: crds
crds: ## Regenerate k8s/base/crd.yaml from the Rust types
	$(CARGO) run --quiet --locked -p setpoint-k8s-api --bin crdgen > k8s/base/crd.yaml

.PHONY: clean
clean: ## Remove build output (the control-plane cache in ~/.cache/setpoint stays)
	$(CARGO) clean
