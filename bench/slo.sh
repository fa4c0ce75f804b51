#!/usr/bin/env bash
# SLO computation, Slipway against a real Prometheus, in one run, on the same 30 days:
# DAYS of request counters (service × route × status, 200 series, a sample every INTERVAL s)
# written into both (`promtool tsdb create-blocks-from openmetrics` for Prometheus), then
# SLOS ratio SLOs (each a service's route: 500s over all requests) evaluated as their
# recording rules do every interval: the error ratio over each of the eight windows Sloth
# records (5m 30m 1h 2h 6h 1d 3d 30d), ROUNDS times on both sides, alternating. Per round: the
# time to evaluate all of them; at the end, each process' RSS.
#
# Ends with a RESULT line: ratios are Slipway / Prometheus (< 1 is better).
#
# Usage: [SLOS=50 DAYS=30 INTERVAL=120 ROUNDS=5] bench/slo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SLOS=${SLOS:-50}
DAYS=${DAYS:-30}
INTERVAL=${INTERVAL:-120}
ROUNDS=${ROUNDS:-5}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "installing prometheus" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi
cargo build --release --quiet --bin slipway --bin slipway-sample
cargo build --release --quiet -p slipway-metrics --example history
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
pids=()
cleanup() {
    [ -f "$work/project/slipway.toml" ] && (cd "$work/project" && "$BIN/slipway" down >/dev/null 2>&1 || true)
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_url() { for _ in $(seq 1200); do curl -sf -o /dev/null "$@" && return 0; sleep 0.1; done; echo "$* never answered" >&2; exit 1; }

echo "writing $DAYS days of request counters for both (200 series, ${INTERVAL} s apart)" >&2
mkdir -p "$work/project/.slipway" "$work/prom"
"$BIN/examples/history" "$work/history.om" "$work/project/.slipway/metrics" "$((DAYS * 24))" "$INTERVAL" http_requests_total
promtool tsdb create-blocks-from openmetrics "$work/history.om" "$work/prom/tsdb" >/dev/null
rm "$work/history.om"

PROM_PORT=$(free_port)
printf 'global:\n  scrape_interval: 15s\n' > "$work/prom/prometheus.yml"
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/tsdb" \
    --storage.tsdb.retention.time=60d --web.listen-address="127.0.0.1:$PROM_PORT" >"$work/prom/log" 2>&1 &
PROM_PID=$!; pids+=($!)
wait_url "http://127.0.0.1:$PROM_PORT/-/ready"

# Slipway: the SLOs in slipway.toml, so the same expressions are the ones it would record.
{
    echo '[project]'
    echo 'name = "slobench"'
    echo '[services.worker]'
    echo 'kind = "worker"'
    echo "start = \"$BIN/slipway-sample worker\""
    echo '[metrics]'
    echo 'retention = "60d"'
    for i in $(seq 0 $((SLOS - 1))); do
        s=$((i / 10)); r=$((i % 10))
        echo "[slos.svc$s-r$r]"
        echo 'objective = "99%"'
        echo 'indicator = "ratio"'
        echo "bad = 'sum(rate(http_requests_total{service=\"svc$s\",route=\"/r$r\",status=\"500\"}[{{.window}}]))'"
        echo "total = 'sum(rate(http_requests_total{service=\"svc$s\",route=\"/r$r\"}[{{.window}}]))'"
    done
} > "$work/project/slipway.toml"
"$BIN/slipway" -f "$work/project/slipway.toml" slo export > "$work/rules.yml"
(cd "$work/project" && exec "$BIN/slipway" up --listen 127.0.0.1:0 >"$work/slipway.log" 2>&1) &
SLIPWAY_PID=$!; pids+=($!)
for _ in $(seq 600); do [ -s "$work/project/.slipway/daemon.json" ] && break; sleep 0.1; done
[ -s "$work/project/.slipway/daemon.json" ] || { echo "slipway up did not start:" >&2; tail -20 "$work/slipway.log" >&2; exit 1; }
SLIPWAY_URL="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$work/project/.slipway/daemon.json")"
TOKEN=$(cat "$work/project/.slipway/admin.token")
wait_url -H "authorization: Bearer $TOKEN" "$SLIPWAY_URL/api/v1/query?query=1"

python3 - "$SLIPWAY_PID" "$SLIPWAY_URL" "$TOKEN" "$PROM_PID" "http://127.0.0.1:$PROM_PORT" "$work/rules.yml" "$ROUNDS" "$SLOS" <<'PY'
import json, sys, time, urllib.parse, urllib.request
spid, surl, token, ppid, purl, rules, rounds, slos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]), int(sys.argv[8])
sides = {"slipway": (int(spid), surl, {"Authorization": "Bearer " + token}), "prometheus": (int(ppid), purl, {})}
# The recording rules' expressions, as exported (the same text both sides evaluate).
exprs = [json.loads(line.split("expr: ", 1)[1]) for line in open(rules) if line.strip().startswith("expr: ") and "slo:sli_error" not in line]
exprs = [e for e in exprs if " / " in e and "> " not in e]
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
def ask(side, q, t):
    _, base, headers = sides[side]
    req = urllib.request.Request(base + "/api/v1/query", data=urllib.parse.urlencode({"query": q, "time": t}).encode(), headers=headers)
    body = json.load(urllib.request.urlopen(req, timeout=600))
    if body.get("status") != "success":
        raise SystemExit(f"{side}: {q}: {body}")
    return body["data"]["result"]
now = time.time()
# Same answers first (within rounding): the 30-day ratio of every SLO.
differ = 0
for q in exprs[7::8]:
    a, b = ask("slipway", q, now), ask("prometheus", q, now)
    va = float(a[0]["value"][1]) if a else None
    vb = float(b[0]["value"][1]) if b else None
    if va is None or vb is None or abs(va - vb) > 1e-3 * max(abs(vb), 1e-9):
        differ += 1
print(f"{len(exprs)} expressions ({slos} SLOs x 8 windows); 30-day ratios that differ by more than 0.1%: {differ}", file=sys.stderr)
times = {s: [] for s in sides}
for r in range(rounds):
    for s in sides:
        t0 = time.perf_counter()
        for q in exprs:
            ask(s, q, now)
        times[s].append(time.perf_counter() - t0)
    print(f"  round {r + 1}: slipway {times['slipway'][-1]:.2f} s, prometheus {times['prometheus'][-1]:.2f} s", file=sys.stderr)
p50 = {s: sorted(v)[len(v) // 2] for s, v in times.items()}
mem = {s: rss(sides[s][0]) for s in sides}
for s in sides:
    print(f"{s:>10}: one evaluation of every SLO's windows p50 {p50[s]:.2f} s, RSS {mem[s] / 2**20:.0f} MiB", file=sys.stderr)
res = {"slos": slos, "expressions": len(exprs), "answers_differ": differ,
       "eval_p50_s_slipway": round(p50["slipway"], 3), "eval_p50_s_prometheus": round(p50["prometheus"], 3),
       "eval_ratio": round(p50["slipway"] / p50["prometheus"], 2),
       "rss_mib_slipway": round(mem["slipway"] / 2**20), "rss_mib_prometheus": round(mem["prometheus"] / 2**20),
       "rss_ratio": round(mem["slipway"] / mem["prometheus"], 2)}
print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items()))
PY
