#!/usr/bin/env bash
# The worked example end to end: vessel and consignment services, then the CLI.
# Run it through `make demo`, which builds first and runs this inside a private
# network namespace; mDNS is kept on loopback either way.
set -euo pipefail
cd "$(dirname "$0")/.."

export MICRO_MDNS_INTERFACES=loopback
export RUST_LOG=${RUST_LOG:-info}
bin=${CARGO_TARGET_DIR:-target}/debug/examples
logs=$(mktemp -d)
pids=()

stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

start() {
    local name=$1
    "$bin/$name" >"$logs/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        if grep -q "service started" "$logs/$name.log"; then
            echo "started $name: $(grep -o 'address=[^ ]*' "$logs/$name.log" | head -1)"
            return
        fi
        sleep 0.1
    done
    echo "$name did not start:"; cat "$logs/$name.log"; exit 1
}

start vessel
start consignment

echo
echo "consignment-cli examples/consignment-cli/consignment.json:"
"$bin/consignment-cli"
echo

# The booking event, as the vessel service received it.
for _ in $(seq 1 50); do
    grep -q "booking received" "$logs/vessel.log" && break
    sleep 0.1
done
echo "vessel service, on event consignment.created:"
grep -h "booking received" "$logs/vessel.log" | sed -e 's/^.*INFO //' || echo "  (no event received)"
echo

trap - EXIT
for i in "${!pids[@]}"; do
    kill -TERM "${pids[$i]}"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "services stopped (exit status $status):"
grep -h "deregistered" "$logs"/*.log | sed -e 's/^.*INFO //'
exit "$status"
