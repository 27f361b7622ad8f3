# ServiceCall mesh. `make up` runs a local mesh; `make test` runs every check and test.
# Every target installs what it needs first (scripts/bootstrap.sh: cached, ~1 s when warm).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export PYTHONPATH := $(CURDIR):$(CURDIR)/gen
export PATH := $(CURDIR)/.run/bin:$(CURDIR)/.venv/bin:$(PATH)
PY := .venv/bin/python
PYTEST_FLAGS ?=
SOURCES := mesh orchestrator scheduler executor gateway meshctl tests bench k8s

.PHONY: help bootstrap proto proto-check buf-lint lint typecheck check test test-unit \
        test-integration test-e2e up down status logs demo-curl demo-grpcurl clean \
        bench-scheduler bench-executor bench-burst bench-fairness bench-list bench-submit fuzz admin chaos \
        k8s-up k8s-down images test-k8s

help:
	@echo "make up          start Postgres, Kafka, the three services and Envoy (local processes)"
	@echo "make down        stop everything 'make up' started"
	@echo "make status      what runs, and whether it is healthy"
	@echo "make logs        follow the mesh's logs"
	@echo "make test        lint, typecheck, proto-check, unit + integration + e2e tests"
	@echo "make proto       regenerate gen/ from proto/"
	@echo "make k8s-up      start a local single-node Kubernetes (root; builds it once, ~17 min cold)"
	@echo "make k8s-down    stop it and remove everything it created"
	@echo "make images      build the Kubernetes images locally (no Docker) and load them into the node"
	@echo "make test-k8s    the mesh on that node, from nothing: up, images, apply, prove, down"

bootstrap:
	@scripts/bootstrap.sh

# gen/ from proto/, and what is generated from gen/ and envoy/ for Kubernetes.
proto: bootstrap
	scripts/proto.sh
	$(PY) k8s/render_envoy_config.py

# gen/ is committed; regenerate into a scratch dir and compare, so a stale gen/ fails CI.
proto-check: bootstrap
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	scripts/proto.sh "$$tmp" && diff -r -q gen "$$tmp" -x __pycache__ \
	  || { echo "gen/ is stale: run 'make proto' and commit"; exit 1; }

# buf lints the same descriptor set Envoy loads (googleapis imports come from the wheel).
buf-lint: bootstrap
	buf lint - --config buf.yaml < gen/servicecall.protoset

lint: bootstrap
	ruff check $(wildcard $(SOURCES))
	ruff format --check $(wildcard $(SOURCES))
	lint-imports

typecheck: bootstrap
	mypy $(wildcard $(SOURCES))

check: lint typecheck proto-check buf-lint

test: check
	pytest $(PYTEST_FLAGS)

test-unit: bootstrap
	pytest tests/unit $(PYTEST_FLAGS)

test-integration: bootstrap
	pytest tests/integration $(PYTEST_FLAGS)

test-e2e: bootstrap
	pytest tests/e2e $(PYTEST_FLAGS)

up: bootstrap
	$(PY) -m meshctl up

down: bootstrap
	$(PY) -m meshctl down

status: bootstrap
	@$(PY) -m meshctl status

logs: bootstrap
	tail -n 20 -F $$($(PY) -m meshctl logs)

# Tenants and API keys of the local mesh, e.g. make admin ARGS="create-key acme --create-tenant"
admin: bootstrap
	@DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:55432/servicecall} \
	  $(PY) -m orchestrator admin $(ARGS)

# Figures, not pass/fail: each prints what it measured (medians of repeated runs).
bench-scheduler: bootstrap
	$(PY) -m bench.scheduler $(BENCH_FLAGS)

bench-list: bootstrap
	$(PY) -m bench.list_pages $(BENCH_FLAGS)

bench-executor: bootstrap
	$(PY) -m bench.executor $(BENCH_FLAGS)

bench-burst: bootstrap
	$(PY) -m bench.executor_burst $(BENCH_FLAGS)

# One tenant's single call beside another's 20k due at once (bench/fairness.py, docs/timing.md).
bench-fairness: bootstrap
	$(PY) -m bench.fairness $(BENCH_FLAGS)

# Intake and end-to-end throughput of the running `make up` mesh (docs/intake.md), e.g.
# make bench-submit BENCH_FLAGS="--quick"
bench-submit: bootstrap
	$(PY) -m bench.submit $(BENCH_FLAGS)

# Faults injected into a mesh of its own while calls are due (bench/chaos.py, docs/chaos.md):
# every scenario, the broker kill five times; fails on any lost, stuck, early or double-terminal
# call. E.g. make chaos CHAOS_FLAGS="--scenarios kill-kafka --repeat 2 --seed 7"
chaos: bootstrap
	$(PY) -m bench.chaos $(CHAOS_FLAGS)

# A longer fuzz run than the bounded one inside `make test` (tests/e2e/test_fuzz.py).
fuzz: bootstrap
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-3000} pytest tests/e2e/test_fuzz.py $(PYTEST_FLAGS)

# The mesh, dev Postgres, Kafka and Envoy images for k8s/overlays/local, built with debootstrap
# and buildah (scripts/k8s/images.sh), cached by their inputs, loaded into the `make k8s-up` node.
images: bootstrap
	nice -n 10 scripts/k8s/images.sh build

demo-curl:
	scripts/demo-curl.sh

demo-grpcurl: bootstrap
	scripts/demo-grpcurl.sh

clean: down
	rm -rf .run/dev .run/test

# A real single-node Kubernetes on this machine (scripts/k8s/node.sh: interface in its header).
k8s-up:
	scripts/k8s/node.sh up

k8s-down:
	scripts/k8s/node.sh down

# tests/k8s is not in pyproject's testpaths, so `make test` never starts a node. This starts one
# (unless one runs), builds and loads the images, applies k8s/overlays/local, proves the mesh
# through Envoy's node port and stops the node again; KEEP_K8S=1 leaves it running. Skips on a
# machine that cannot run a node. Cold (Kubernetes built from source) ~25 min, warm 2.5-6 min.
test-k8s: bootstrap
	pytest tests/k8s $(PYTEST_FLAGS)
