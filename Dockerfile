# An image of one example, from a statically linked binary built on the host:
#
#   make docker          builds the binaries and the three images
#   docker build --build-arg EXAMPLE=vessel -t vessel-service .
#
# FROM scratch needs no base image, so nothing is pulled from any registry: the same
# file works offline and online. `make docker` builds the binaries first
# (RUSTFLAGS=-C target-feature=+crt-static, --target x86_64-unknown-linux-gnu).
FROM scratch

ARG EXAMPLE
ARG TARGET=x86_64-unknown-linux-gnu

# The CLI's default input; harmless in the service images.
COPY examples/consignment-cli/consignment.json /examples/consignment-cli/consignment.json
COPY target/${TARGET}/release/examples/${EXAMPLE} /service

# Find the other services on this container's network (a Docker network) over mDNS.
ENV MICRO_REGISTRY=mdns
WORKDIR /
ENTRYPOINT ["/service"]
