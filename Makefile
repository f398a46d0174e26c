# micro: go-micro for Rust.
#
#   make demo   the shippy example end to end (vessel, consignment, CLI, `micro`, the trace)
#   make test   the workspace's tests
#   make lint   rustfmt and clippy, as CI runs them
#   make doc    the API docs, all features, failing on any rustdoc warning or broken link
#   make package  every crate packed as for crates.io and built from its package
#   make bench  micro against raw tonic (bare and observed), discovery speed, footprint, `micro services` (BENCHMARKS.md)
#   make bench-scale  at size: hundreds of mDNS node processes, brokers against raw async-nats,
#                     cold start on mDNS and etcd, etcd with 10,000 nodes (BENCHMARKS.md; about 20 minutes)
#   make chaos  faults against the example's release processes (RELIABILITY.md)
#   make docker build the example images (no registry needed: static binaries, FROM scratch)
#   make run    run consignment-service with port 50051 published, as the tutorial does
#   make docker-test  the example in containers on a fresh Docker network
#   make deps   the system tools the above use (apt-get; done by demo and test)
#
# Everything that speaks mDNS runs inside a private network namespace whose only
# interface is loopback (scripts/in-netns), so nothing is announced to the LAN.
# Dependencies are fetched and built first, outside it; inside, cargo is --offline.

CARGO ?= cargo
NETNS := scripts/in-netns

.PHONY: demo test lint readme doc package build bench bench-scale chaos docker docker-bins run docker-test deps

# Static binaries for FROM scratch images.
TARGET := x86_64-unknown-linux-gnu
STATIC_RUSTFLAGS := -C target-feature=+crt-static

deps:
	scripts/deps.sh

build:
	$(CARGO) build --workspace --examples --bins

demo: deps build
	$(NETNS) scripts/demo.sh

test: deps
	$(CARGO) build --workspace --all-targets --all-features
	$(CARGO) build --examples
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(NETNS) $(CARGO) nextest run --workspace --all-features --offline --no-fail-fast; \
	else \
		$(NETNS) $(CARGO) test --workspace --all-features --offline --no-fail-fast --lib --bins --tests --examples; \
	fi
	$(CARGO) test --workspace --all-features --doc --offline

# The README's "A service" as a crate outside the workspace: same files, built with
# -D warnings, run in the private namespace (scripts/readme.sh).
readme: deps
	scripts/readme.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

doc: deps
	RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -D warnings" $(CARGO) doc --workspace --all-features --no-deps

# Each crate packs (LICENSE, README, path dependencies with versions) and builds
# from its package alone, with every feature. --no-verify is not used: that build is
# the point. PACKAGE_FLAGS=--allow-dirty packs a working tree with changes.
package: deps
	$(CARGO) package --workspace --exclude micro-examples --all-features $(PACKAGE_FLAGS)

# The rpc table is micro-core's default build (spans and the log, nothing else); the
# observability table builds the bench again with the features otel, then otel and
# metrics (the examples' build), and last exports every span over OTLP.
bench:
	$(CARGO) build --release --examples
	$(CARGO) build --release -p micro-cli
	$(CARGO) bench --no-run -p micro-registry --bench discovery
	$(CARGO) bench --no-run --bench rpc --no-default-features
	$(CARGO) bench --no-run --bench rpc --no-default-features --features otel
	$(CARGO) bench --no-run --bench rpc --features otel,metrics
	$(NETNS) $(CARGO) bench --offline -p micro-registry --bench discovery
	$(NETNS) $(CARGO) bench --offline --bench rpc --no-default-features
	@echo
	$(NETNS) $(CARGO) bench --offline --bench rpc --no-default-features --features otel -- --observability --header
	$(NETNS) $(CARGO) bench --offline --bench rpc --features otel,metrics -- --observability
	$(NETNS) $(CARGO) bench --offline --bench rpc --features otel,metrics -- --observability --otlp
	$(NETNS) scripts/bench-cli.sh

#   make bench-scale  at size: hundreds of mDNS node processes, brokers against raw async-nats,
#                     cold start on mDNS and etcd, etcd with 10,000 nodes (BENCHMARKS.md; about 20 minutes)

# Kept out of `make bench`: minutes each. Every node of mdns_scale is a process of its
# own, and traffic at rest is counted over a full announcement period at each size,
# from 135 s after start (the steady state: between mdns-sd's browse repeats, for a
# registry that browses). broker,
# coldstart and etcd_scale start their own nats-server and etcd on loopback ports; the
# vessel coldstart spawns is built with etcd (it also runs on mDNS). One feature set
# per package, so each is built once.
SCALE_FEATURES := etcd,nats

bench-scale: deps
	$(CARGO) build --release --example vessel --features etcd
	$(CARGO) bench --no-run -p micro-registry --features etcd --bench mdns_scale --bench etcd_scale
	$(CARGO) bench --no-run --bench broker --bench coldstart --features $(SCALE_FEATURES)
	MDNS_SCALE_SIZES=20,100,200 MDNS_SCALE_SETTLE=135 $(NETNS) $(CARGO) bench --offline -p micro-registry --features etcd --bench mdns_scale
	@echo
	$(NETNS) $(CARGO) bench --offline --bench broker --features $(SCALE_FEATURES)
	@echo
	$(NETNS) $(CARGO) bench --offline --bench coldstart --features $(SCALE_FEATURES)
	@echo
	$(NETNS) $(CARGO) bench --offline -p micro-registry --features etcd --bench etcd_scale

# The examples with the etcd registry and the NATS broker compiled in (the options
# only add choices); the suite starts them as processes, inside the namespace.
CHAOS_FEATURES := etcd micro-core/nats

chaos: deps
	$(CARGO) build --release --examples --features "$(CHAOS_FEATURES)"
	$(CARGO) bench --no-run --bench chaos --features "$(CHAOS_FEATURES)"
	$(NETNS) $(CARGO) bench --offline --bench chaos --features "$(CHAOS_FEATURES)"

docker-bins:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --target $(TARGET) --examples

docker: docker-bins
	docker build --build-arg EXAMPLE=vessel -t vessel-service .
	docker build --build-arg EXAMPLE=consignment -t consignment-service .
	docker build --build-arg EXAMPLE=consignment-cli -t consignment-cli .

run:
	docker run --rm -p 50051:50051 -e MICRO_SERVER_ADDRESS=:50051 -e MICRO_REGISTRY=mdns consignment-service

docker-test: docker
	scripts/docker-test.sh
