# micro: go-micro for Rust.
#
#   make demo   the shippy example end to end (vessel, consignment, CLI)
#   make test   the workspace's tests
#   make lint   rustfmt and clippy, as CI runs them
#   make bench  discovery speed (more benchmarks come with BENCHMARKS.md)
#
# Everything that speaks mDNS runs inside a private network namespace whose only
# interface is loopback (scripts/in-netns), so nothing is announced to the LAN.
# Dependencies are fetched and built first, outside it; inside, cargo is --offline.

CARGO ?= cargo
NETNS := scripts/in-netns

.PHONY: demo test lint build bench

build:
	$(CARGO) build --workspace --examples

demo: build
	$(NETNS) scripts/demo.sh

test:
	$(CARGO) build --workspace --all-targets --all-features
	$(CARGO) build --examples
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(NETNS) $(CARGO) nextest run --workspace --all-features --offline --no-fail-fast; \
	else \
		$(NETNS) $(CARGO) test --workspace --all-features --offline --no-fail-fast --lib --bins --tests --examples; \
	fi
	$(CARGO) test --workspace --all-features --doc --offline

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

bench:
	$(CARGO) bench --no-run -p micro-registry
	$(NETNS) $(CARGO) bench --offline -p micro-registry --bench discovery
