# metastream — two commands do everything: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN_DIR := $(TARGET_DIR)/debug
# The fault-injection suite: full size for `make test-faults`, reduced inside `make test`.
FAULTS_FULL := --events 20000 --entities 2000 --poison 50
FAULTS_QUICK := --events 3000 --entities 300 --poison 20
# `make test` runs every process fault and, of the network and resource faults (each about a
# minute), the partition that fences a transaction (the cluster suite adds a broker cut off);
# `make test-faults` runs all, at full size.
FAULTS_QUICK_SCENARIOS := --scenarios baseline,kill-broker,kill-redis,kill-gateway,kill-pre-transformer,kill-post-transformer,kill-consumer-api,two-pre-kill-one,two-post-kill-one,sigterm-each,boundary-mix,native-mix-kill-gateway,native-mix-kill-pre,net-partition-pre-kafka

.PHONY: help run stop status build infra infra-stop test test-unit test-e2e test-faults test-cluster test-image smoke contract docs fmt lint clean images k8s-validate bench bench-quick fuzz test-k8s test-console

help:
	@echo "make run        start Kafka, Redis, the four services and the edge on :8080 (dev config)"
	@echo "make stop       stop everything 'make run' started"
	@echo "make test       start Kafka and Redis if needed, run every test (unit, end-to-end, smoke, k8s, reduced fault suite)"
	@echo "make test-faults  the full fault-injection suite (20,000 events per scenario)"
	@echo "make test-cluster the e2e tests on a Redis Cluster, then the cluster fault scenarios (3 KRaft brokers, Redis Cluster; part of make test)"
	@echo "make test-console the operator console (/console on :9081) in Debian's chromium: journeys, axe-core, screenshots (part of make test)"
	@echo "make contract   schemathesis against each listener's /openapi.json on the dev stack"
	@echo "make docs       the docs book into var/book (mdBook), its generated API reference and every link checked (part of make test)"
	@echo "make bench      throughput and latency against the broker's limit (make bench-quick: about 15 min)"
	@echo "make fuzz       fuzz the domain crate's parsers, FUZZ_SECONDS (default 60) per target (nightly)"
	@echo "make infra      start only Kafka and Redis"
	@echo "make images       build the metastream image (needs a Docker engine)"
	@echo "make test-image   build the image on locally made bases, run the four services from it (part of make test)"
	@echo "make k8s-validate render and validate the Kubernetes manifests and the compose file"
	@echo "make test-k8s     apply both overlays to a real control plane on fake nodes: rollout, re-apply, rolling update, drain (part of make test)"

build:
	$(CARGO) build --workspace --bins

infra:
	scripts/kafka.sh start
	scripts/redis.sh start

infra-stop:
	scripts/kafka.sh stop
	scripts/redis.sh stop

run: infra build
	scripts/services.sh start

status:
	scripts/services.sh status
	scripts/kafka.sh status
	scripts/redis.sh status

stop:
	scripts/services.sh stop
	scripts/kafka.sh stop
	scripts/redis.sh stop

# Everything: unit tests, end-to-end tests against the real broker and Redis, a smoke run of
# the dev stack with the prototype's two curl calls, the manifests, and the fault-injection
# suite at reduced size.
test: infra build k8s-validate
	scripts/clients.sh install
	$(CARGO) test --workspace --no-fail-fast
	python3 scripts/test_check_dashboards.py
	BIN_DIR=$(BIN_DIR) scripts/docs.sh test
	python3 scripts/check_dependencies.py
	scripts/smoke.sh
	scripts/contract.sh
	$(MAKE) --no-print-directory test-console
	scripts/prometheus.sh check
	$(MAKE) --no-print-directory test-k8s
	$(MAKE) --no-print-directory test-image
	$(BIN_DIR)/metastream-faults --bin $(BIN_DIR) $(FAULTS_QUICK) $(FAULTS_QUICK_SCENARIOS)
	$(MAKE) --no-print-directory test-cluster

# Cluster mode: three KRaft brokers (scripts/kafka-cluster.sh; replication factor 3,
# min.insync.replicas 2) and a Redis Cluster of 3 masters + 3 replicas (scripts/redis.sh cluster).
# First the end-to-end tests against the Redis Cluster (all but `store::`, which kills one
# connection of a single Redis); then, with the services on both clusters and under load: the
# ingest topic's leader killed, every broker restarted in turn, the Redis master of slot 0
# killed (its replica takes over), one broker cut off from the others and the clients for 30 s
# (through toxiproxy: KAFKA_CLUSTER_PROXY). Nothing acknowledged may be lost. Both clusters are
# stopped after.
test-cluster: infra build
	scripts/clients.sh install
	scripts/toxiproxy.sh start
	KAFKA_CLUSTER_PROXY=1 scripts/kafka-cluster.sh start
	scripts/redis.sh cluster-reset
	scripts/redis.sh cluster
	export METASTREAM_TEST_REDIS_CLUSTER=$$(scripts/redis.sh cluster-urls); \
	  $(CARGO) test -p e2e --test e2e -- --skip store:: \
	  && METASTREAM_TEST_KAFKA=$$(scripts/kafka-cluster.sh bootstrap) $(BIN_DIR)/metastream-faults --cluster --bin $(BIN_DIR) $(FAULTS_QUICK) --out var/faults-cluster; \
	  rc=$$?; scripts/kafka-cluster.sh stop; scripts/redis.sh cluster-stop; scripts/toxiproxy.sh stop; exit $$rc

# The operator console in a real browser (scripts/test-console.sh): Python Playwright (PyPI) driving
# Debian's chromium, axe-core (npm) on every page, against the dev stack with real Kafka and Redis;
# screenshots (light and dark, 1280 px) in var/console-screenshots/.
test-console: infra build
	scripts/test-console.sh

# Kills and restarts each component under load; checks nothing acknowledged is lost.
test-faults: infra build
	$(BIN_DIR)/metastream-faults --bin $(BIN_DIR) $(FAULTS_FULL)

test-unit:
	$(CARGO) test --workspace --lib --bins

test-e2e: infra
	scripts/clients.sh install
	$(CARGO) test -p e2e

smoke: infra
	scripts/smoke.sh

# The API contract: schemathesis against each listener's /openapi.json on the live dev stack.
contract: infra
	scripts/contract.sh

# The docs book (scripts/docs.sh): mdBook, at the version the script pins, installed into
# ~/.cache/metastream once; the generated API reference (docs/src/reference/) compared with the
# OpenAPI documents the built services print; the book built into var/book; every relative link
# and anchor checked, in the Markdown and in the HTML.
docs: build
	BIN_DIR=$(BIN_DIR) scripts/docs.sh build

fmt:
	$(CARGO) fmt --all

# Throughput and latency next to the broker's own limit (release build); see docs/src/performance.md.
bench:
	scripts/bench.sh

bench-quick:
	scripts/bench.sh quick

# libFuzzer targets for what parses untrusted input (fuzz/README.md); fails on a crash and names
# the saved input. `make fuzz FUZZ_SECONDS=300` fuzzes longer.
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) scripts/fuzz.sh

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf var

# One image with the four services and the admin CLI; the command picks the program. Tagged with
# the workspace version and :dev (the tag k8s/overlays/dev and deploy/docker-compose.yml use).
# Needs a Docker engine that reaches the public base images; make test-image builds the same
# Dockerfile on bases made here.
IMAGE ?= metastream
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
TAG ?= $(VERSION)

images:
	docker build -f deploy/Dockerfile -t $(IMAGE):$(TAG) -t $(IMAGE):dev .

# The image built and run for real (scripts/image.sh): Debian's docker.io engine without a bridge
# (host network only), base images made with debootstrap and the machine's Rust toolchain; the four
# services run from the image against the host's Kafka and Redis and answer the prototype's two
# calls. Where dockerd cannot start, it fails naming why (METASTREAM_SKIP_IMAGE=1 skips it on purpose,
# with a banner and in its summary line).
test-image: infra
	scripts/image.sh test

# The manifests applied to a real control plane (scripts/test-k8s.sh): kube-apiserver,
# kube-controller-manager and kube-scheduler v1.34.3 built from the Go module proxy (cached in
# ~/.cache/metastream), etcd from Debian, fake nodes; both overlays applied server-side, rolled out,
# re-applied, rolled to a new tag and drained through their PodDisruptionBudgets.
test-k8s:
	scripts/test-k8s.sh

# Renders every k8s overlay, validates each object offline against the Kubernetes schemas, runs
# the project's own checks, validates deploy/docker-compose.yml; ends with "N passed, M failed".
k8s-validate:
	scripts/k8s-validate.sh
