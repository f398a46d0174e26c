#!/usr/bin/env bash
# The README's "A service" section, checked: its snippets are the files of
# tests/readme-greeter (word for word), that crate builds outside the workspace with
# -D warnings, and, run inside a private network namespace, the service logs its
# start-up, answers the caller by name, and deregisters on SIGTERM.
# Run it through `make readme`.
set -euo pipefail
cd "$(dirname "$0")/.."

crate=tests/readme-greeter
target=${CARGO_TARGET_DIR:-$PWD/target}/readme-greeter

if [ "${1:-}" != "--in-netns" ]; then

# 1. Each block after a `<!-- file: path -->` line in README.md is that file.
python3 - "$crate" <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
blocks = re.findall(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", readme, re.S)
if not blocks:
    sys.exit("README.md: no <!-- file: ... --> blocks found")
bad = 0
for path, text in blocks:
    on_disk = pathlib.Path(path).read_text()
    if on_disk != text:
        print(f"README.md's block for {path} differs from the file")
        bad += 1
    else:
        print(f"README.md's block for {path}: the same as the file")
sys.exit(1 if bad else 0)
PY

# 2. It builds as a user's crate would, without a warning. The workspace's lock file
# keeps it on the versions the workspace is tested with.
cp Cargo.lock "$crate/Cargo.lock"
RUSTFLAGS="-D warnings" CARGO_TARGET_DIR="$target" cargo build --manifest-path "$crate/Cargo.toml"

# 3. Run in a private network namespace (mDNS on loopback only).
exec scripts/in-netns "$0" --in-netns
fi

export MICRO_MDNS_INTERFACES=loopback
unset RUST_LOG MICRO_LOG_LEVEL
bin=$target/debug
log=$(mktemp)
"$bin/readme-greeter" 2>"$log" &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q "registered" "$log" && break
    sleep 0.1
done
echo "the service's log, as it starts (no subscriber installed by the program):"
sed -e 's/^/  /' "$log"
grep -q "service started" "$log" || { echo "FAIL: no start-up line in the log"; exit 1; }
grep -q "registered" "$log" || { echo "FAIL: no registration line in the log"; exit 1; }

reply=$("$bin/caller")
echo "caller: $reply"
[ "$reply" = "Hello John" ] || { echo "FAIL: expected the caller to print \"Hello John\""; exit 1; }

kill -TERM $pid
status=0
wait $pid || status=$?
echo "the service's log, as it stops (exit $status):"
grep -E "shutting down|deregistered|stopped" "$log" | sed -e 's/^/  /'
[ $status -eq 0 ] || { echo "FAIL: the service exited with $status"; exit 1; }
grep -q "deregistered" "$log" || { echo "FAIL: no deregistration line in the log"; exit 1; }
echo "readme: ok"
