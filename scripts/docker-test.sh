#!/usr/bin/env bash
# The worked example in containers, on a fresh Docker network of its own:
# book a consignment; stop the vessel service and see booking fail cleanly, storing
# nothing; start it again and book. Removes everything it created, pass or fail.
set -euo pipefail

id=$$
net=micro-test-$id
vessel=micro-vessel-$id
consignment=micro-consignment-$id

cleanup() {
    docker rm -f "$vessel" "$consignment" >/dev/null 2>&1 || true
    docker network rm "$net" >/dev/null 2>&1 || true
}
trap cleanup EXIT

fail() { echo "docker-test: FAILED: $*"; exit 1; }

started() { # container -> waits until it has registered
    for _ in $(seq 1 100); do
        if docker logs "$1" 2>&1 | grep -q "service started"; then return 0; fi
        sleep 0.1
    done
    docker logs "$1"; fail "$1 did not start"
}

cli() { docker run --rm --network "$net" consignment-cli 2>&1; }

for image in vessel-service consignment-service consignment-cli; do
    size=$(docker image inspect "$image" --format '{{.Size}}')
    echo "image $image: $((size / 1024)) KiB"
    [ "$size" -le $((20 * 1024 * 1024)) ] || fail "$image is larger than 20 MB"
done

# A plain bridge network. (Not --internal: Docker's isolation rules for internal
# networks drop every packet addressed outside the subnet, multicast included.)
# Link-local multicast such as mDNS is never routed off the bridge.
docker network create "$net" >/dev/null
docker run -d --name "$vessel" --network "$net" vessel-service >/dev/null
docker run -d --name "$consignment" --network "$net" consignment-service >/dev/null
started "$vessel"
started "$consignment"

out=$(cli) || { echo "$out"; fail "the first booking failed"; }
echo "$out" | grep -q "vessel_id: vessel001" || { echo "$out"; fail "no vessel001 in the booking"; }
echo "booked: vessel001"

begin=$(date +%s%N)
docker stop -t 10 "$vessel" >/dev/null
took=$(( ($(date +%s%N) - begin) / 1000000 ))
code=$(docker inspect "$vessel" --format '{{.State.ExitCode}}')
echo "docker stop vessel: ${took} ms, exit code $code"
[ "$code" = 0 ] || fail "vessel exited with $code on SIGTERM"
[ "$took" -le 2000 ] || fail "docker stop took ${took} ms (more than 2 s)"
# Docker's log driver may hand over the last lines a moment after the container
# exits: look for a second before calling it missing, and show the log if it is.
deregistered=false
for _ in $(seq 1 10); do
    if docker logs "$vessel" 2>&1 | grep -q deregistered; then deregistered=true; break; fi
    sleep 0.1
done
[ "$deregistered" = true ] || { docker logs "$vessel" 2>&1 | tail -20; fail "vessel did not deregister"; }

if out=$(cli); then echo "$out"; fail "booking succeeded without a vessel service"; fi
echo "$out" | grep -q "no vessel available" || { echo "$out"; fail "unclear error without a vessel service"; }
echo "without vessel: $(echo "$out" | grep -o 'no vessel available[^(]*' | head -1)"

docker start "$vessel" >/dev/null
for _ in $(seq 1 100); do
    [ "$(docker logs "$vessel" 2>&1 | grep -c 'service started')" -ge 2 ] && break
    sleep 0.1
done
out=$(cli) || { echo "$out"; fail "booking failed after the vessel service came back"; }
echo "$out" | grep -q "vessel_id: vessel001" || { echo "$out"; fail "no vessel001 after restart"; }
# Two bookings stored, not three: the failed one stored nothing.
echo "$out" | grep -q "Consignments: 2" || { echo "$out"; fail "expected exactly 2 stored consignments"; }
echo "docker-test: passed"
