#!/usr/bin/env bash
# The worked example end to end: vessel and consignment services, then the CLI,
# and at the end the booking's trace, as a receiver on loopback got it over OTLP.
# Run it through `make demo`, which builds first and runs this inside a private
# network namespace; mDNS is kept on loopback either way.
set -euo pipefail
cd "$(dirname "$0")/.."

export MICRO_MDNS_INTERFACES=loopback
export RUST_LOG=${RUST_LOG:-info}
bin=${CARGO_TARGET_DIR:-target}/debug/examples
logs=$(mktemp -d)
pids=()
receiver=

stop_all() {
    for pid in "${pids[@]}" $receiver; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}" $receiver; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

# The trace receiver first, so the services and the CLI export their spans to it.
otlp=${DEMO_OTLP_ADDRESS:-127.0.0.1:4317}
"$bin/trace-receiver" "$otlp" >"$logs/trace.txt" 2>"$logs/trace-receiver.log" &
receiver=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$logs/trace-receiver.log" && break
    if ! kill -0 "$receiver" 2>/dev/null; then
        echo "trace-receiver did not start:"; cat "$logs/trace-receiver.log"; exit 1
    fi
    sleep 0.1
done
grep -q "listening on" "$logs/trace-receiver.log" || { echo "trace-receiver did not start"; exit 1; }
export OTEL_EXPORTER_OTLP_ENDPOINT=http://$otlp

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

# The `micro` command against the running example: what the registry knows, and
# one call by name with JSON.
micro=${CARGO_TARGET_DIR:-target}/debug/micro
echo "micro services:"
"$micro" services
echo
spec='{"capacity": 500, "max_weight": 200000}'
echo "micro call go.micro.srv.vessel VesselService.FindAvailable '$spec':"
"$micro" call go.micro.srv.vessel VesselService.FindAvailable "$spec"
echo

trap - EXIT
for i in "${!pids[@]}"; do
    kill -TERM "${pids[$i]}"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "services stopped (exit status $status):"
grep -h "deregistered" "$logs"/*.log | sed -e 's/^.*INFO //'

# The services flushed their spans as they stopped; now the receiver prints them.
kill -TERM "$receiver"
wait "$receiver" || { echo "trace-receiver failed:"; cat "$logs/trace-receiver.log"; status=1; }
echo
echo "the traces the receiver got, the booking's first (its calls and its event):"
cat "$logs/trace.txt"
exit "$status"
