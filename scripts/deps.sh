#!/usr/bin/env bash
# Installs the system tools the tests and the demo use, when they are missing:
#   unshare, ip     the private network namespace everything that speaks mDNS runs in
#   protoc          etcd-client (feature `etcd`) generates its code with it at build time
#   etcd            the etcd registry's tests start members on loopback ports
#   nats-server     the NATS broker's tests start one on a loopback port
# Debian package names; needs root (or sudo) and apt. Does nothing when all are there.
set -euo pipefail

declare -A package=(
    [unshare]=util-linux
    [ip]=iproute2
    [protoc]=protobuf-compiler
    [etcd]=etcd-server
    [nats-server]=nats-server
)
missing=()
for tool in "${!package[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=sudo
    else
        echo "missing: ${missing[*]} (install them with apt-get as root)" >&2
        exit 1
    fi
fi
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
