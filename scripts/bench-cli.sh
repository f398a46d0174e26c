#!/usr/bin/env bash
# How fast `micro services` answers, from process start to exit, median of 15 runs:
# on mDNS with the worked example running, and on a local etcd holding two services.
# Goals (issue: the micro command): 1 s on mDNS, 100 ms on etcd. Every run's output
# must name both services; a run that misses one is counted and reported.
#
# Run inside the private network namespace (make bench does), after
# `cargo build --release --examples -p micro-examples -p micro-cli`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=15
# Where cargo put the release build: CARGO_TARGET_DIR when set.
release=${CARGO_TARGET_DIR:-target}/release
micro=$release/micro
for bin in "$micro" "$release/examples/vessel" "$release/examples/consignment"; do
    [ -x "$bin" ] || { echo "$bin is missing: cargo build --release --examples -p micro-examples -p micro-cli" >&2; exit 1; }
done
export MICRO_MDNS_INTERFACES=loopback RUST_LOG=warn
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Milliseconds from start to exit of "$@" for each of $RUNS runs, one per line, and
# how many runs did not list both services (the last line, "missed N").
time_runs() {
    local missed=0 start end out
    for _ in $(seq 1 "$RUNS"); do
        start=$(date +%s%N)
        out=$("$@" 2>/dev/null || true)
        end=$(date +%s%N)
        echo $(((end - start) / 1000000))
        if ! grep -q vessel <<<"$out" || ! grep -q consignment <<<"$out"; then
            missed=$((missed + 1))
        fi
    done
    echo "missed $missed"
}

# "median max missed" of time_runs' output.
summary() {
    local times missed
    missed=$(grep '^missed' <<<"$1" | cut -d' ' -f2)
    times=$(grep -v '^missed' <<<"$1" | sort -n)
    echo "$(sed -n "$(((RUNS + 1) / 2))p" <<<"$times") $(tail -1 <<<"$times") $missed"
}

# mDNS: the worked example, found with nothing configured.
"$release/examples/vessel" >/dev/null 2>&1 &
pids+=($!)
"$release/examples/consignment" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    listed=$("$micro" services 2>/dev/null || true)
    if grep -q vessel <<<"$listed" && grep -q consignment <<<"$listed"; then break; fi
    sleep 0.1
done
read -r mdns_median mdns_max mdns_missed < <(summary "$(time_runs "$micro" services)")

# etcd: one member on loopback; two services written as go-micro (and micro) lay
# them out, /micro/registry/<service>/<node>, through etcd's JSON gateway.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client_port=$(port)
peer_port=$(port)
etcd --data-dir "$work/etcd" --name bench \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$client_port/health" >/dev/null && break
    sleep 0.1
done
put() {
    local key value
    key=$(printf '%s' "$1" | base64 -w0)
    value=$(printf '%s' "$2" | base64 -w0)
    curl -sf -X POST "http://127.0.0.1:$client_port/v3/kv/put" \
        -d "{\"key\":\"$key\",\"value\":\"$value\"}" >/dev/null
}
for name in go.micro.srv.vessel go.micro.srv.consignment; do
    put "/micro/registry/$name/$name-1" \
        "{\"name\":\"$name\",\"version\":\"latest\",\"metadata\":null,\"endpoints\":[],\"nodes\":[{\"id\":\"$name-1\",\"address\":\"127.0.0.1:1\",\"metadata\":{\"protocol\":\"grpc\"}}]}"
done
read -r etcd_median etcd_max etcd_missed < <(summary "$(time_runs "$micro" --registry etcd --registry_address "127.0.0.1:$client_port" services)")

verdict() { if [ "$1" -le "$2" ] && [ "$3" -eq 0 ]; then echo met; else echo "not met"; fi; }
echo
echo "| \`micro services\`, start to exit, $RUNS runs | median ms | slowest ms | runs missing a service | goal |"
echo "|---|---|---|---|---|"
echo "| mDNS, the worked example running | $mdns_median | $mdns_max | $mdns_missed | ≤ 1000 ms: $(verdict "$mdns_median" 1000 "$mdns_missed") |"
echo "| etcd on loopback, two services | $etcd_median | $etcd_max | $etcd_missed | ≤ 100 ms: $(verdict "$etcd_median" 100 "$etcd_missed") |"
