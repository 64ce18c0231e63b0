# ringlb: the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
MANIFEST ?= manifests/cluster.yaml

.PHONY: run test build bench fmt lint check

## Build the release binary.
build:
	$(CARGO) build --release --locked

## Run the load balancer and its replicas from $(MANIFEST) in the foreground (Ctrl-C stops all).
run: build
	@echo "ringlb: starting from $(MANIFEST); try: curl http://127.0.0.1:5000/rep"
	./target/release/ringlb run --manifest $(MANIFEST)

## Run every test: unit, property and integration (real binary, real ports).
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked; \
	else \
		echo "cargo-nextest not found; using cargo test"; \
		$(CARGO) test --locked; \
	fi

## Criterion benchmarks of the hash rings.
bench:
	$(CARGO) bench --locked --bench ring

## Validate $(MANIFEST) like `nginx -t`.
check: build
	./target/release/ringlb check --manifest $(MANIFEST)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps
