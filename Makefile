# metastream — two commands do everything: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help run stop status build infra infra-stop test test-unit test-e2e smoke fmt lint clean

help:
	@echo "make run        start Kafka, Redis, the four services and the edge on :8080 (dev config)"
	@echo "make stop       stop everything 'make run' started"
	@echo "make test       start Kafka and Redis if needed, run every test (unit, end-to-end, smoke)"
	@echo "make infra      start only Kafka and Redis"

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

# Everything: unit tests, end-to-end tests against the real broker and Redis, and a smoke run of
# the dev stack with the prototype's two curl calls.
test: infra
	$(CARGO) test --workspace --no-fail-fast
	scripts/smoke.sh

test-unit:
	$(CARGO) test --workspace --lib --bins

test-e2e: infra
	$(CARGO) test -p e2e

smoke: infra
	scripts/smoke.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf var
