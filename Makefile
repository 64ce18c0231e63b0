# ringlb: the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
MANIFEST ?= manifests/cluster.yaml
# The port `make run` publishes the load balancer on.
PORT ?= 5000
IMAGE ?= ringlb:latest
# Tests run `make` from inside `cargo nextest`, whose environment carries cargo's per-package
# variables (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, CARGO_PKG_VERSION_MAJOR, ...). ring's build script
# watches several of them, so passing them on to cargo would rebuild the binaries from scratch.
CARGO_ENV_CLEARED = env $(foreach v,$(filter CARGO_PKG_% CARGO_MANIFEST_% CARGO_CFG_% CARGO_CRATE_NAME \
	CARGO_BIN_NAME CARGO_PRIMARY_PACKAGE OUT_DIR,$(.VARIABLES)),-u $(v))
TARGET := x86_64-unknown-linux-gnu
STATIC := target/$(TARGET)/release/ringlb
# `docker compose` (plugin) where it exists, else `docker-compose`.
COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
# The cluster name, from the manifest: every container ringlb creates carries it as a label.
CLUSTER = $(shell sed -n 's/^name:[[:space:]]*\([^[:space:]#]*\).*/\1/p' $(MANIFEST))
# What docker-compose.yml runs: the manifest's directory (mounted, so that /add and /rm can
# replace the file) and its name in it.
COMPOSE_ENV = RINGLB_PORT=$(PORT) RINGLB_MANIFEST=$(notdir $(MANIFEST)) RINGLB_MANIFEST_DIR=$(abspath $(dir $(MANIFEST)))
# `make local` runs manifests/local.yaml unless MANIFEST is given on the command line.
LOCAL_MANIFEST = $(if $(filter command line environment,$(origin MANIFEST)),$(MANIFEST),manifests/local.yaml)

.PHONY: your-app-image run-swarm stop-swarm logs-swarm run stop logs image static build test test-docker-image test-clients bench check fmt lint local analyze demo-autoscale bench-micro soak fuzz

## Build the image and start the load balancer (in a container) and its replicas; wait until
## every replica is ready.
# A manifest may name the example image of manifests/your-app.yaml: build it too.
run: image $(if $(shell grep -qs 'image: *your-app:' $(MANIFEST) && echo yes),your-app-image)
	@test -n "$(COMPOSE)" || { echo "make run needs 'docker compose' or 'docker-compose'" >&2; exit 1; }
	@./$(STATIC) check --manifest $(MANIFEST) >/dev/null || { ./$(STATIC) check --manifest $(MANIFEST); exit 1; }
	$(COMPOSE_ENV) $(COMPOSE) up -d
	@./$(STATIC) status --url http://127.0.0.1:$(PORT) --wait --timeout 120 \
		|| { $(COMPOSE_ENV) $(COMPOSE) logs --tail 50 lb; exit 1; }
	@echo "ringlb runs $(MANIFEST) on http://127.0.0.1:$(PORT) (try: curl http://127.0.0.1:$(PORT)/rep); logs: make logs; stop: make stop MANIFEST=$(MANIFEST)"

## Stop the load balancer and remove every container and network it created (by label).
stop:
	@test -n "$(COMPOSE)" || { echo "make stop needs 'docker compose' or 'docker-compose'" >&2; exit 1; }
	-$(COMPOSE_ENV) $(COMPOSE) stop lb
	@ids=$$(docker ps -aq --filter label=ringlb.cluster=$(CLUSTER)); \
		if [ -n "$$ids" ]; then echo "removing replicas of cluster $(CLUSTER)"; docker rm -f $$ids >/dev/null; fi
	$(COMPOSE_ENV) $(COMPOSE) down --remove-orphans
	@nets=$$(docker network ls -q --filter label=ringlb.cluster=$(CLUSTER)); \
		if [ -n "$$nets" ]; then docker network rm $$nets >/dev/null; fi
	@left=$$(docker ps -aq --filter label=ringlb.cluster=$(CLUSTER)); \
		if [ -n "$$left" ]; then echo "containers left: $$left" >&2; exit 1; fi; echo "stopped; nothing of cluster $(CLUSTER) is left"

# Docker Swarm: the manifest, its cluster name, and the file that says `make run-swarm` created
# the swarm (so that `make stop-swarm` leaves it, and only then).
SWARM_MANIFEST ?= manifests/swarm.yaml
SWARM_CLUSTER = $(shell sed -n 's/^name:[[:space:]]*\([^[:space:]#]*\).*/\1/p' $(SWARM_MANIFEST))
SWARM_NETWORK = $(shell sed -n 's/^[[:space:]]*network:[[:space:]]*\([^[:space:]#]*\).*/\1/p' $(SWARM_MANIFEST))
SWARM_CREATED ?= target/swarm-created-by-ringlb

## Run on Docker Swarm: make a single-node swarm if the engine is in none (advertising
## 127.0.0.1), build the image, create the overlay network, start the load balancer as a service
## on a manager publishing $(PORT) in host mode, and wait until every replica is ready.
run-swarm: image
	@state=$$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'); \
	case "$$state" in \
	"active true") echo "using the swarm this engine manages";; \
	"inactive false") mkdir -p $(dir $(SWARM_CREATED)); \
		if docker network inspect docker_gwbridge >/dev/null 2>&1; then bridge=kept; else bridge=created; fi; \
		docker swarm init --advertise-addr 127.0.0.1 >/dev/null || exit 1; \
		echo "$$bridge $$(docker info --format '{{.Swarm.Cluster.ID}}')" > $(SWARM_CREATED); \
		echo "created a single-node swarm (make stop-swarm leaves it)";; \
	*) echo "this engine's swarm state is '$$state': run make run-swarm on a manager" >&2; exit 1;; \
	esac
	@docker network inspect $(SWARM_NETWORK) >/dev/null 2>&1 || docker network create --driver overlay --attachable \
		--label ringlb.cluster=$(SWARM_CLUSTER) $(SWARM_NETWORK) >/dev/null
	@# A load balancer service that is there already gets the image just built (a no-op when it is
	@# the same); the command waits until its task runs the new image.
	@image=$$(docker image inspect --format '{{.Id}}' $(IMAGE)); \
	if docker service inspect $(SWARM_CLUSTER)-lb >/dev/null 2>&1; then \
		docker service update --quiet --no-resolve-image --image $$image $(SWARM_CLUSTER)-lb >/dev/null; \
	else docker service create --detach --quiet \
		--name $(SWARM_CLUSTER)-lb --label ringlb.load-balancer=$(SWARM_CLUSTER) \
		--container-label ringlb.load-balancer=$(SWARM_CLUSTER) \
		--constraint node.role==manager --network $(SWARM_NETWORK) \
		--publish mode=host,target=5000,published=$(PORT) \
		--mount type=bind,source=/var/run/docker.sock,target=/var/run/docker.sock \
		--mount type=bind,source=$(abspath $(dir $(SWARM_MANIFEST))),target=/manifests \
		--env RINGLB_ADMIN_TOKEN --stop-grace-period 20s --endpoint-mode dnsrr --no-resolve-image \
		$$image run --manifest /manifests/$(notdir $(SWARM_MANIFEST)) >/dev/null; fi
	@./$(STATIC) status --url http://127.0.0.1:$(PORT) --wait --timeout 120 \
		|| { docker service logs --tail 50 $(SWARM_CLUSTER)-lb; exit 1; }
	@echo "ringlb listens on http://127.0.0.1:$(PORT) (try: curl http://127.0.0.1:$(PORT)/rep); replicas: docker service ls; logs: make logs-swarm; stop: make stop-swarm"

## Remove ringlb's services and network from the swarm (by label); leave the swarm only if
## `make run-swarm` created it.
stop-swarm:
	@lb=$$(docker service ls -q --filter label=ringlb.load-balancer=$(SWARM_CLUSTER)); \
		if [ -n "$$lb" ]; then docker service rm $$lb >/dev/null; fi
	@# The load balancer must be gone before its replicas go, or it would start them again.
	@for i in $$(seq 150); do [ -z "$$(docker ps -aq --filter label=ringlb.load-balancer=$(SWARM_CLUSTER))" ] && break; sleep 0.2; done
	@services=$$(docker service ls -q --filter label=ringlb.cluster=$(SWARM_CLUSTER)); \
		if [ -n "$$services" ]; then echo "removing the replica services of cluster $(SWARM_CLUSTER)"; docker service rm $$services >/dev/null; fi
	@for i in $$(seq 150); do \
		[ -z "$$(docker ps -aq --filter label=ringlb.cluster=$(SWARM_CLUSTER))" ] && break; \
		sleep 0.2; done
	@for i in $$(seq 50); do \
		nets=$$(docker network ls -q --filter label=ringlb.cluster=$(SWARM_CLUSTER)); [ -z "$$nets" ] && break; \
		docker network rm $$nets >/dev/null 2>&1; sleep 0.2; done
	@# Leave the swarm only if it is the very one make run-swarm created (its cluster ID).
	@if [ -f $(SWARM_CREATED) ]; then read -r bridge cluster < $(SWARM_CREATED); \
		if [ -n "$$cluster" ] && [ "$$(docker info --format '{{.Swarm.Cluster.ID}}' 2>/dev/null)" = "$$cluster" ]; then \
			docker swarm leave --force >/dev/null || exit 1; \
			if [ "$$bridge" = created ]; then docker network rm docker_gwbridge >/dev/null 2>&1 || true; fi; \
			echo "left the swarm make run-swarm created"; fi; \
		rm -f $(SWARM_CREATED); fi
	@left="$$(docker service ls -q --filter label=ringlb.cluster=$(SWARM_CLUSTER) 2>/dev/null) $$(docker ps -aq --filter label=ringlb.cluster=$(SWARM_CLUSTER)) $$(docker ps -aq --filter label=ringlb.load-balancer=$(SWARM_CLUSTER)) $$(docker network ls -q --filter label=ringlb.cluster=$(SWARM_CLUSTER))"; \
		if [ -n "$${left// /}" ]; then echo "left behind: $$left" >&2; exit 1; fi; echo "stopped; nothing of cluster $(SWARM_CLUSTER) is left"

## Follow the Swarm load balancer's log.
logs-swarm:
	docker service logs -f $(SWARM_CLUSTER)-lb

## Follow the load balancer's log (one line per controller event).
logs:
	$(COMPOSE_ENV) $(COMPOSE) logs -f lb

## The static binary the image is made of: the load balancer and the replica, without the
## `analyze` feature (the analysis and its charts run from `make analyze` on the host).
static:
	$(CARGO_ENV_CLEARED) RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target $(TARGET) --no-default-features

## The image, FROM scratch around the static binary: no registry needed.
image: static
	@command -v docker >/dev/null || { echo "make image needs docker" >&2; exit 1; }
	rm -rf target/image && mkdir -p target/image
	cp $(STATIC) Dockerfile target/image/
	docker build -q -t $(IMAGE) target/image
	@docker image ls $(IMAGE) --format 'built {{.Repository}}:{{.Tag}} ({{.Size}})'

## Build the release binary for this host.
build:
	$(CARGO_ENV_CLEARED) $(CARGO) build --release --locked

## Run the load balancer with process replicas on 127.0.0.1, no Docker needed (Ctrl-C stops all):
## manifests/local.yaml, or MANIFEST=... run as processes whatever its replica.runtime says.
local: build
	./target/release/ringlb run --manifest $(LOCAL_MANIFEST) --runtime process

## Run every test this machine can run: unit, property and integration tests (real binary, real
## ports), and the #[ignore]d ones whose needs are met here: a Docker engine and the image
## (tests/docker.rs, tests/swarm.rs), root and extra daemons (tests/swarm_nodes.rs), chromium (the
## browser test), the Python clients (tests/clients/, `make test-clients`). The summary counts the
## others as skipped, and a NOTE says why. With CI=true
## every test runs, so one whose needs are missing fails the run. (In the filter, `& test(/./)`,
## true of every test, makes nextest list a left-out binary and count its tests as skipped; a
## filter on binary() alone drops the binary before listing, uncounted.)
test: test-docker-image test-clients
	@set -uo pipefail; \
	out=(); why=(); \
	if [ "$${CI:-}" != true ]; then \
		state=$$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null) || state=; \
		image=; [ -n "$$state" ] && docker image inspect ringlb:latest >/dev/null 2>&1 && image=yes; \
		refusal='test(=outside_a_swarm_ringlb_refuses_to_start_and_says_why)'; \
		if [ -z "$$state" ]; then \
			out+=('binary(docker) | binary(swarm) | binary(swarm_nodes)'); \
			why+=("no Docker engine answers: tests/docker.rs, tests/swarm.rs, tests/swarm_nodes.rs"); \
		else \
			if [ -z "$$image" ]; then \
				out+=("binary(docker) | (binary(swarm) & not $$refusal) | binary(swarm_nodes)"); \
				why+=("no image ringlb:latest: tests/docker.rs, tests/swarm.rs, tests/swarm_nodes.rs"); \
			fi; \
			case "$$state" in \
			"inactive false") ;; \
			"active true") out+=("binary(swarm) & $$refusal"); \
				why+=("the engine is in a swarm: outside_a_swarm_ringlb_refuses_to_start_and_says_why"); ;; \
			*) out+=('binary(swarm)'); \
				why+=("the engine's swarm state is '$$state', not a manager nor inactive: tests/swarm.rs"); ;; \
			esac; \
			nodes=yes; [ "$$(id -u)" = 0 ] || nodes=; \
			for tool in ip nsenter unshare dockerd; do command -v $$tool >/dev/null 2>&1 || nodes=; done; \
			if [ -z "$$nodes" ]; then \
				out+=('binary(swarm_nodes)'); \
				why+=("not root, or no ip, nsenter, unshare or dockerd: tests/swarm_nodes.rs"); \
			fi; \
		fi; \
		if [ ! -x /bin/busybox ]; then \
			out+=('test(/foreign_image/) | test(/foreign_command/)'); \
			why+=("no /bin/busybox (apt install busybox-static): the foreign-image tests"); \
		fi; \
		if ! cmp -s tests/clients/requirements.txt target/pyenv/requirements.txt; then \
			out+=('binary(websocket) | binary(http2) | binary(grpc)'); \
			why+=("no Python test clients in target/pyenv (make test-clients): tests/websocket.rs, tests/http2.rs, tests/grpc.rs"); \
		fi; \
		if ! command -v h2load >/dev/null 2>&1; then \
			out+=('test(/h2load/)'); \
			why+=("no h2load (apt install nghttp2-client): the h2load test"); \
		fi; \
		if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
			out+=('binary(observability) & test(=the_dashboard_renders_in_a_real_browser)'); \
			why+=("no chromium: the_dashboard_renders_in_a_real_browser"); \
		fi; \
	fi; \
	for reason in "$${why[@]}"; do echo "NOTE: left out (counted as skipped): $$reason"; done; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		filter=(); \
		if [ $${#out[@]} -gt 0 ]; then \
			joined=$$(printf ' | (%s)' "$${out[@]}"); \
			filter=(-E "not (($${joined# | }) & test(/./))"); \
		fi; \
		$(CARGO) nextest run --locked --run-ignored all "$${filter[@]}"; \
	elif [ $${#out[@]} -eq 0 ]; then \
		echo "cargo-nextest not found; using cargo test"; \
		$(CARGO) test --locked -- --include-ignored; \
	else \
		echo "cargo-nextest not found; using cargo test, without the #[ignore]d tests (libtest counts them as ignored): install cargo-nextest to run those whose needs are met"; \
		$(CARGO) test --locked; \
	fi

## The third-party clients and servers the tests speak with (Python's websockets, h2, grpcio;
## pinned in tests/clients/requirements.txt) in a venv, target/pyenv; rebuilt when the list
## changes. Without PyPI the tests that need them are left out (with CI=true, the run fails).
test-clients:
	@if ! cmp -s tests/clients/requirements.txt target/pyenv/requirements.txt; then \
		rm -rf target/pyenv; \
		if python3 -m venv target/pyenv && target/pyenv/bin/pip install -q --disable-pip-version-check \
			-r tests/clients/requirements.txt; then \
			cp tests/clients/requirements.txt target/pyenv/requirements.txt; \
		else \
			rm -rf target/pyenv; \
			if [ "$${CI:-}" = "true" ]; then echo "CI=true but the Python test clients did not install" >&2; exit 1; fi; \
			echo "NOTE: the Python test clients did not install; the tests that need them will be left out"; \
		fi; \
	fi

# The Docker and Swarm tests need the image; build it when an engine answers.
test-docker-image:
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory image; \
	elif [ "$${CI:-}" = "true" ]; then \
		echo "CI=true but no Docker engine answers: the Docker tests cannot run" >&2; exit 1; \
	else \
		echo "NOTE: no Docker engine answers; the Docker and Swarm tests will be left out"; \
	fi

## Regenerate the analysis report docs/analysis/README.md (A-1 to A-4) on local process clusters.
analyze: build
	./target/release/ringlb --log-level warn analyze --out docs/analysis

## A fixed-rate load ramp against an autoscaled cluster: per-second table, docs/autoscale/ (CSV, SVG).
demo-autoscale: build
	./target/release/ringlb --log-level warn demo-autoscale --out docs/autoscale

## ringlb beside nginx, HAProxy and the bare prototypes over the same backends (wrk, pinned CPUs; ~12 minutes).
## Installs wrk, nginx and haproxy from Debian when missing; results in bench/results/.
## Runs the data path again with every contender on two cores (CORES=1: only the one-core layout).
bench: build
	python3 bench/run.py $(if $(CORES),--cores $(CORES))

## Criterion micro-benchmarks: ring lookups, metrics recording and scraping, route lookups.
bench-micro:
	$(CARGO) bench --locked --bench ring --bench metrics --bench routes

## Validate $(MANIFEST) like `nginx -t`.
check: build
	./target/release/ringlb check --manifest $(MANIFEST)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

## Chaos soak (tests/soak.rs): 200 keep-alive clients through the load balancer while replicas
## are killed and hung, the cluster is scaled (manifest edits, /add, /rm), an invalid manifest is
## saved and fixed, and the load balancer restarts; prints a table and fails on any lost GET.
## SOAK_SECONDS of faults; SOAK_RUNTIME process, docker or all (Docker: docker kill / docker pause).
## `all` is every runtime this machine has: without a Docker engine it runs the process soak and
## says so; SOAK_RUNTIME=docker without one fails. RINGLB_TEST_SEED=<seed> replays a schedule.
SOAK_SECONDS ?= 60
SOAK_RUNTIME ?= all
soak:
	@runtime=$(SOAK_RUNTIME); \
	if [ "$$runtime" != process ]; then \
		if docker info >/dev/null 2>&1; then \
			$(MAKE) --no-print-directory image || exit 1; \
		elif [ "$$runtime" = all ]; then \
			echo "NOTE: no Docker engine answers: the Docker soak is left out (SOAK_RUNTIME=docker makes that an error)"; \
			runtime=process; \
		fi; \
	fi; \
	set -x; \
	RINGLB_SOAK_SECONDS=$(SOAK_SECONDS) RINGLB_SOAK_RUNTIME=$$runtime RINGLB_TEST_LOG=$${RINGLB_TEST_LOG:-warn} \
		$(CARGO) test --locked --release --test soak -- --nocapture --test-threads=1

## Fuzz the manifest parser, validator and editor, the /add and /rm bodies, and the rings, for
## FUZZ_SECONDS each (stable Rust; installs cargo-fuzz when missing); fails on the first crash.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

## The example image of manifests/your-app.yaml: Debian's static busybox and one page, FROM
## scratch (nothing is pulled).
your-app-image:
	@test -x /bin/busybox || { echo "make your-app-image needs Debian's static busybox: apt install busybox-static" >&2; exit 1; }
	rm -rf target/your-app-image && mkdir -p target && cp -r examples/your-app target/your-app-image
	cp /bin/busybox target/your-app-image/busybox
	docker build -q -t your-app:latest target/your-app-image
