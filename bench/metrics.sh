#!/usr/bin/env bash
# Slipway's embedded metrics against a real Prometheus, in one run, on the same data:
#
# - ingest: TARGETS exporters of SERIES series each, scraped every INTERVAL by both at once;
#   samples stored per CPU-second of each process (samples/s per core), over WINDOW seconds;
# - memory: each process' RSS at the end, per 10 000 active series;
# - queries: HOURS of identical history (2000 series: request counters, a latency histogram,
#   CPU counters, gauges) written into both (`promtool tsdb create-blocks-from openmetrics` for
#   Prometheus, the same samples appended to Slipway's store), then instant queries and 1h and
#   24h range queries, `histogram_quantile` over `rate` among them, and functions over long
#   ranges (`increase(x[24h])`, `avg_over_time(x[12h])`: Slipway reads its five-minute
#   rollups), each asked ROUNDS times of both, alternating; p50 and p99 per kind.
#
# Ends with a RESULT line: ratios are Slipway / Prometheus (ingest > 1 is better, rss and
# latency < 1 are better).
#
# Usage: [TARGETS=10 SERIES=1000 INTERVAL=1 WINDOW=60 HOURS=24 ROUNDS=15] bench/metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=${TARGETS:-10}
SERIES=${SERIES:-1000}
INTERVAL=${INTERVAL:-1}
WINDOW=${WINDOW:-60}
HOURS=${HOURS:-24}
ROUNDS=${ROUNDS:-15}

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
wait_url() { for _ in $(seq 600); do curl -sf -o /dev/null "$@" && return 0; sleep 0.1; done; echo "$* never answered" >&2; exit 1; }

echo "writing $HOURS h of history for both (2000 series, 30 s apart)" >&2
mkdir -p "$work/project/.slipway" "$work/prom"
"$BIN/examples/history" "$work/history.om" "$work/project/.slipway/metrics" "$HOURS" 30
promtool tsdb create-blocks-from openmetrics "$work/history.om" "$work/prom/tsdb" >/dev/null
rm "$work/history.om"

# The exporters: one process, a port per target, pages of SERIES counters and gauges that
# move every second.
ports=()
for _ in $(seq "$TARGETS"); do ports+=("$(free_port)"); done
cat > "$work/exporter.py" <<'EOF'
import sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
series = int(sys.argv[1])
cache = {}
def page(port):
    second = int(time.time())
    hit = cache.get(port)
    if hit and hit[0] == second:
        return hit[1]
    lines = []
    for i in range(series):
        if i % 4 == 3:
            lines.append('bench_queue_depth{shard="%d"} %d' % (i, (second * 7 + i) % 100))
        else:
            lines.append('bench_events_total{shard="%d",kind="k%d"} %d' % (i, i % 7, second * (i % 13 + 1)))
    body = ("\n".join(lines) + "\n").encode()
    cache[port] = (second, body)
    return body
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = page(self.server.server_address[1])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
for p in sys.argv[2:]:
    s = ThreadingHTTPServer(("127.0.0.1", int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
while True:
    time.sleep(3600)
EOF
python3 "$work/exporter.py" "$SERIES" "${ports[@]}" & pids+=($!)
for p in "${ports[@]}"; do wait_url "http://127.0.0.1:$p/metrics"; done

# Prometheus.
PROM_PORT=$(free_port)
{
    echo "global:"
    echo "  scrape_interval: ${INTERVAL}s"
    echo "  scrape_timeout: ${INTERVAL}s"
    echo "scrape_configs:"
    echo "  - job_name: bench"
    echo "    static_configs:"
    echo "      - targets: [$(printf "'127.0.0.1:%s'," "${ports[@]}" | sed 's/,$//')]"
} > "$work/prom/prometheus.yml"
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/tsdb" \
    --storage.tsdb.retention.time=30d --web.listen-address="127.0.0.1:$PROM_PORT" >"$work/prom/log" 2>&1 &
PROM_PID=$!; pids+=($!)
wait_url "http://127.0.0.1:$PROM_PORT/-/ready"

# Slipway: a project with one worker and the same targets.
{
    echo '[project]'
    echo 'name = "bench"'
    echo '[services.worker]'
    echo 'kind = "worker"'
    echo "start = \"$BIN/slipway-sample worker\""
    echo '[metrics]'
    echo "interval = \"${INTERVAL}s\""
    echo "targets = [{ name = \"bench\", urls = [$(for p in "${ports[@]}"; do printf '"http://127.0.0.1:%s/metrics",' "$p"; done | sed 's/,$//')] }]"
} > "$work/project/slipway.toml"
(cd "$work/project" && exec "$BIN/slipway" up --listen 127.0.0.1:0 >"$work/slipway.log" 2>&1) &
SLIPWAY_PID=$!; pids+=($!)
for _ in $(seq 600); do [ -s "$work/project/.slipway/daemon.json" ] && break; sleep 0.1; done
[ -s "$work/project/.slipway/daemon.json" ] || { echo "slipway up did not start:" >&2; tail -20 "$work/slipway.log" >&2; exit 1; }
SLIPWAY_URL="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$work/project/.slipway/daemon.json")"
TOKEN=$(cat "$work/project/.slipway/admin.token")
wait_url -H "authorization: Bearer $TOKEN" "$SLIPWAY_URL/api/v1/query?query=1"

python3 - "$SLIPWAY_PID" "$SLIPWAY_URL" "$TOKEN" "$PROM_PID" "http://127.0.0.1:$PROM_PORT" \
    "$TARGETS" "$SERIES" "$INTERVAL" "$WINDOW" "$ROUNDS" <<'EOF'
import json, os, sys, time, urllib.parse, urllib.request
spid, surl, token, ppid, purl = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
targets, series, interval, window, rounds = (int(x) for x in sys.argv[6:11])
tick = os.sysconf("SC_CLK_TCK")
sides = {"slipway": (spid, surl, {"Authorization": "Bearer " + token}), "prometheus": (ppid, purl, {})}

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def ask(side, path, **params):
    _, base, headers = sides[side]
    req = urllib.request.Request(base + path, data=urllib.parse.urlencode(params).encode(), headers=headers)
    start = time.perf_counter()
    body = json.load(urllib.request.urlopen(req, timeout=300))
    took = time.perf_counter() - start
    if body.get("status") != "success":
        raise SystemExit(f"{side}: {path} {params}: {body}")
    return body["data"], took

def scalar(side, q):
    data, _ = ask(side, "/api/v1/query", query=q)
    r = data["result"]
    return float(r[0]["value"][1]) if r else 0.0

# Ingest: wait until both scrape every target, warm up, then count over the window.
deadline = time.time() + 120
while any(scalar(s, 'count(up{job="bench"} == 1)') < targets for s in sides):
    if time.time() > deadline:
        raise SystemExit("the targets never came up on both sides")
    time.sleep(1)
time.sleep(max(15, 5 * interval))
before = {s: (cpu(sides[s][0]), time.time()) for s in sides}
time.sleep(window)
after = {s: (cpu(sides[s][0]), time.time()) for s in sides}
ingest, rss_per_10k, active = {}, {}, {}
for s in sides:
    stored = scalar(s, f'sum(sum_over_time(scrape_samples_scraped{{job="bench"}}[{window}s]))')
    used = after[s][0] - before[s][0]
    ingest[s] = stored / used if used > 0 else float("inf")
    active[s] = scalar(s, "count({__name__=~\".+\"})")
    rss_per_10k[s] = rss(sides[s][0]) / active[s] * 10000
    print(f"{s:>10}: {stored:,.0f} samples in {window} s, {used:.2f} CPU-s → {ingest[s]:,.0f} samples/s per core; "
          f"RSS {rss(sides[s][0]) / 2**20:.1f} MiB for {active[s]:,.0f} active series → {rss_per_10k[s] / 2**20:.1f} MiB per 10k series",
          file=sys.stderr)

# Queries over the history, both sides at the same instant.
now = time.time()
instant = [
    'sum by (service) (rate(http_requests_total[5m]))',
    'sum(rate(http_requests_total{status="500"}[5m])) / sum(rate(http_requests_total[5m]))',
    'histogram_quantile(0.99, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))',
    'topk(5, sum by (cpu) (rate(node_cpu_seconds_total{mode!="idle"}[5m])))',
    'avg by (site) (avg_over_time(temperature_celsius[1h]))',
    'max_over_time(temperature_celsius[24h])',
]
ranged = [
    'sum by (service) (rate(http_requests_total[5m]))',
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))',
    'avg by (site) (temperature_celsius)',
]
# Functions over long ranges (the embedded store reads them from its five-minute rollups).
long = [
    'sum by (service) (increase(http_requests_total[24h]))',
    'avg by (site) (avg_over_time(temperature_celsius[12h]))',
]
cases = [("instant", q, dict(query=q, time=now)) for q in instant]
cases += [("long", q, dict(query=q, time=now)) for q in long]
cases += [("long", q, dict(query=q, start=now - 86400, end=now, step=900)) for q in long]
cases += [("range 1h", q, dict(query=q, start=now - 3600, end=now, step=15)) for q in ranged]
cases += [("range 24h", q, dict(query=q, start=now - 86400, end=now, step=300)) for q in ranged]
times = {(kind, s): [] for kind, _, _ in cases for s in sides}
for kind, q, params in cases:
    path = "/api/v1/query" if "time" in params else "/api/v1/query_range"
    shapes = {}
    for s in sides:
        data, _ = ask(s, path, **params)  # warm
        shapes[s] = (len(data["result"]), sum(len(r.get("values", [1])) for r in data["result"]))
    if shapes["slipway"] != shapes["prometheus"]:
        print(f"  answers differ in shape for {kind} {q}: {shapes}", file=sys.stderr)
    for _ in range(rounds):
        for s in sides:
            times[(kind, s)].append(ask(s, path, **params)[1])

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]

result = {
    "targets": targets, "series_per_target": series,
    "ingest_slipway": round(ingest["slipway"]), "ingest_prometheus": round(ingest["prometheus"]),
    "ingest_ratio": round(ingest["slipway"] / ingest["prometheus"], 2),
    "rss_per_10k_series_mib_slipway": round(rss_per_10k["slipway"] / 2**20, 1),
    "rss_per_10k_series_mib_prometheus": round(rss_per_10k["prometheus"] / 2**20, 1),
    "rss_ratio": round(rss_per_10k["slipway"] / rss_per_10k["prometheus"], 2),
}
print(f"\n{'queries':<10} {'slipway p50':>12} {'p99':>9} {'prometheus p50':>15} {'p99':>9} {'p50 ratio':>10}", file=sys.stderr)
for kind in ["instant", "range 1h", "range 24h", "long"]:
    a, b = times[(kind, "slipway")], times[(kind, "prometheus")]
    key = kind.replace(" ", "_")
    for p in (50, 99):
        result[f"{key}_p{p}_ms_slipway"] = round(pct(a, p) * 1000, 1)
        result[f"{key}_p{p}_ms_prometheus"] = round(pct(b, p) * 1000, 1)
    result[f"{key}_p50_ratio"] = round(pct(a, 50) / pct(b, 50), 2)
    result[f"{key}_p99_ratio"] = round(pct(a, 99) / pct(b, 99), 2)
    print(f"{kind:<10} {pct(a, 50) * 1000:>10.1f}ms {pct(a, 99) * 1000:>7.1f}ms {pct(b, 50) * 1000:>13.1f}ms "
          f"{pct(b, 99) * 1000:>7.1f}ms {result[key + '_p50_ratio']:>10}", file=sys.stderr)
print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
EOF
