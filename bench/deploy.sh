#!/usr/bin/env bash
# Deploys under steady load: wrk (50 connections) through the proxy while v2 of the sample app
# is deployed with each strategy, recreate being the naive stop-then-start baseline; then a bad
# v3 (30 % of its requests fail) as a canary with default settings; then a blue-green deploy
# and a manual rollback. Prints failed requests (non-2xx and socket errors) per strategy, the
# bad canary's time from start to fully rolled back and the share of the requests during it
# that saw its errors, and the time from `slipway rollback` to all traffic on the previous
# release.
#
# The bad canary's share is its 5xx answers divided by the requests wrk made during the
# deployment (wrk's steady rate × the deployment's duration as the control plane recorded it).
#
# Usage: [STRATEGIES="rolling canary"] bench/deploy.sh   (installs wrk if missing; needs python3)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-50}
STRATEGIES=${STRATEGIES-recreate rolling blue-green canary}

if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet --bin slipway --bin slipway-sample
export PATH="${CARGO_TARGET_DIR:-$PWD/target}/release:$PATH"
work=$(mktemp -d)
projects=()
cleanup() {
    for p in "${projects[@]}"; do slipway -f "$p/slipway.toml" down >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }

# A project whose web service (2 sample instances) deploys with strategy $1.
project() {
    local dir="$work/$2"
    mkdir -p "$dir"
    cat > "$dir/slipway.toml" <<EOF
[project]
name = "bench-$2"

[env]
SAMPLE_VERSION = "v1"

[services.web]
start = "slipway-sample web"
port = 0
replicas = 2
health = { path = "/health", interval = "1s" }
strategy = $1
EOF
    projects+=("$dir")
    slipway -f "$dir/slipway.toml" up --detach --listen 127.0.0.1:0 >/dev/null 2>&1
    echo "$dir"
}

port_of() { slipway -f "$1/slipway.toml" --json status | json 'd["services"][0]["port"]'; }

# Failed requests (non-2xx + socket errors) in a wrk report.
failed_in() {
    python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
non2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
print(non2xx + (sum(int(x) for x in sock.groups()) if sock else 0))
EOF
}
rate_in() { python3 -c "import re,sys; print(re.search(r'Requests/sec:\s+([\d.]+)', open(sys.argv[1]).read()).group(1))" "$1"; }

declare -A failed=([recreate]=- [rolling]=- [blue-green]=- [canary]=-)
for strategy in $STRATEGIES; do
    case $strategy in
        canary) spec='{ type = "canary", steps = ["5%", "25%", "50%"], bake = "2s" }' ;;
        *) spec="\"$strategy\"" ;;
    esac
    dir=$(project "$spec" "$strategy")
    port=$(port_of "$dir")
    wrk -t2 -c"$CONNS" -d30s "http://127.0.0.1:$port/" > "$work/$strategy.wrk" 2>&1 &
    wrk_pid=$!
    sleep 2
    slipway -f "$dir/slipway.toml" --json deploy --set SAMPLE_VERSION=v2 > "$work/$strategy.json" 2>/dev/null || true
    # Let the load run on until it ends, so every request of the deploy is counted.
    wait "$wrk_pid"
    failed[$strategy]=$(failed_in "$work/$strategy.wrk")
    outcome=$(json 'd["outcome"]' < "$work/$strategy.json")
    took=$(json 'd["duration_ms"]' < "$work/$strategy.json")
    printf '%-10s deploy %s in %5sms: %6s failed of %s requests (%s req/s)\n' \
        "$strategy" "$outcome" "$took" "${failed[$strategy]}" \
        "$(grep -oE '[0-9]+ requests in' "$work/$strategy.wrk" | cut -d' ' -f1)" "$(rate_in "$work/$strategy.wrk")"
    slipway -f "$dir/slipway.toml" down >/dev/null
done

# A bad canary, default settings.
dir=$(project '"canary"' bad-canary)
port=$(port_of "$dir")
wrk -t2 -c"$CONNS" -d12s "http://127.0.0.1:$port/" > "$work/bad.wrk" 2>&1 &
wrk_pid=$!
sleep 2
slipway -f "$dir/slipway.toml" --json deploy --set SAMPLE_FAIL_RATE=0.3 > "$work/bad.json" 2>/dev/null || true
wait "$wrk_pid"
bad_outcome=$(json 'd["outcome"]' < "$work/bad.json")
bad_ms=$(json 'd["duration_ms"]' < "$work/bad.json")
bad_reason=$(json 'd["reason"]' < "$work/bad.json")
bad_failed=$(failed_in "$work/bad.wrk")
bad_rate=$(rate_in "$work/bad.wrk")
bad_share=$(python3 -c "print(f'{$bad_failed / ($bad_rate * $bad_ms / 1000):.5f}')")
bad_s=$(python3 -c "print(f'{$bad_ms / 1000:.2f}')")
echo "bad canary: $bad_outcome in ${bad_s}s; $bad_failed requests saw its errors, $(python3 -c "print(f'{$bad_share * 100:.3f}')")% of the ~$(python3 -c "print(int($bad_rate * $bad_ms / 1000))") during the deploy"
echo "  reason: $bad_reason"
slipway -f "$dir/slipway.toml" down >/dev/null

# A blue-green deploy, then a manual rollback to the warm standby, under load.
dir=$(project '"blue-green"' rollback)
port=$(port_of "$dir")
slipway -f "$dir/slipway.toml" --json deploy --set SAMPLE_VERSION=v2 >/dev/null
wrk -t2 -c"$CONNS" -d6s "http://127.0.0.1:$port/" > "$work/rollback.wrk" 2>&1 &
wrk_pid=$!
sleep 2
start=$(date +%s%N)
slipway -f "$dir/slipway.toml" --json rollback > "$work/rollback.json"
end=$(date +%s%N)
wait "$wrk_pid"
switch_ms=$(json 'd["duration_ms"]' < "$work/rollback.json")
rollback_s=$(python3 -c "print(f'{$switch_ms / 1000:.3f}')")
echo "manual rollback: all traffic on $(json 'd["to_release"]' < "$work/rollback.json") after ${switch_ms}ms (the command took $(( (end - start) / 1000000 ))ms); $(failed_in "$work/rollback.wrk") requests failed meanwhile"

echo
echo "recreate (naive) lost ${failed[recreate]} requests; rolling ${failed[rolling]}, blue-green ${failed[blue-green]}, canary ${failed[canary]} (target: 0)"
echo "bad canary rolled back in ${bad_s}s (target ≤ 15s; Flagger's defaults take about 5 min) with $(python3 -c "print(f'{$bad_share * 100:.3f}')")% of requests seeing its errors (target < 0.5%)"
echo "manual rollback ${rollback_s}s (target ≤ 1s)"
echo "RESULT failed_recreate=${failed[recreate]} failed_rolling=${failed[rolling]} failed_bluegreen=${failed[blue-green]} failed_canary=${failed[canary]} bad_canary_rollback_s=$bad_s bad_canary_error_share=$bad_share rollback_s=$rollback_s"
