#!/usr/bin/env bash
# Installs the system tools the tests and the demo use, when they are missing:
#   unshare, ip     the private network namespace everything that speaks mDNS runs in
#   protoc          etcd-client (feature `etcd`) generates its code with it at build time
#   etcd            the etcd registry's tests start members on loopback ports
#   nats-server     the NATS broker's tests start one on a loopback port
#   promtool        the metrics test lints the /metrics text with `promtool check metrics`;
#                   taken out of Debian's `prometheus` package into /usr/local/bin, so that
#                   no Prometheus server is installed or started
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
need_promtool=false
command -v promtool >/dev/null 2>&1 || need_promtool=true
[ ${#missing[@]} -eq 0 ] && [ "$need_promtool" = false ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=sudo
    else
        echo "missing: ${missing[*]}$($need_promtool && echo " promtool") (install them with apt-get as root)" >&2
        exit 1
    fi
fi
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$need_promtool" = true ]; then
    echo "installing promtool (from the prometheus package)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq prometheus >/dev/null)
    dpkg -x "$work"/prometheus_*.deb "$work/x"
    $sudo install -m 0755 "$work/x/usr/bin/promtool" /usr/local/bin/promtool
fi
