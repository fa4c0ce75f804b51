#!/usr/bin/env bash
# Slipway's alerting against a real Prometheus + Alertmanager, in one run, on the same
# condition: an exporter's `bench_queue_depth` jumps from nothing to 150 and both watch
# `bench_queue_depth > 100` with `for: FOR`, P1, to a local webhook receiver. Onset (the
# moment the exporter starts answering 150) → the firing notification's arrival, per side,
# over ROUNDS rounds each with a new `round` label (so each is a new group on both sides):
#
# - defaults: each as it comes (Slipway: 15 s scrapes, rules every second, P1 at once;
#   Prometheus: 1 m scrapes and rule evaluation; Alertmanager: group_wait 30 s);
# - fast: both tuned as fast as each allows (1 s scrapes, Prometheus evaluating every 1 s,
#   Alertmanager group_wait 0 s, group_interval 1 s).
#
# Ends with a RESULT line: latencies in seconds, ratios Slipway / Prometheus+Alertmanager
# (< 1 is better), and `within_for_plus_2s` (Slipway's worst fast round minus the scrape
# interval, against FOR + 2 s).
#
# Usage: [FOR=5 ROUNDS=5 DEFAULT_ROUNDS=3] bench/alert.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FOR=${FOR:-5}
ROUNDS=${ROUNDS:-5}
DEFAULT_ROUNDS=${DEFAULT_ROUNDS:-3}

for pkg in prometheus prometheus-alertmanager; do
    if ! command -v "$pkg" >/dev/null; then
        echo "installing $pkg" >&2
        SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >/dev/null
    fi
done
cargo build --release --quiet --bin slipway --bin slipway-sample
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$BIN" "$work" "$FOR" "$ROUNDS" "$DEFAULT_ROUNDS" <<'EOF'
import json, os, random, signal, socket, subprocess, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

BIN, WORK, FOR, ROUNDS, DEFAULT_ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

# One process is the exporter (the series of the current round) and the webhook receiver
# (the first firing notification of each round, per side, with its arrival time).
state = {"round": 0, "onset": 0.0}
arrivals = {}  # (side, round) -> seconds after onset
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            r = state["round"]
        body = (f'# TYPE bench_queue_depth gauge\nbench_queue_depth{{round="{r}"}} 150\n' if r else "").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        now = time.time()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        side = self.path.rsplit("/", 1)[-1]
        with lock:
            for a in body.get("alerts", []):
                if a.get("status") == "firing":
                    r = int(a["labels"].get("round", 0))
                    if r == state["round"] and (side, r) not in arrivals:
                        arrivals[(side, r)] = now - state["onset"]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

PORT = free_port()
threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever, daemon=True).start()
EXPORTER, HOOK = f"127.0.0.1:{PORT}", f"http://127.0.0.1:{PORT}/hook"

def wait(what, check, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not happen within {timeout} s")

def ready(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=2).status == 200

def start(mode):
    """Slipway, Prometheus and Alertmanager for one mode; their processes."""
    fast = mode == "fast"
    d = os.path.join(WORK, mode)
    os.makedirs(os.path.join(d, "project"))
    am_port, am_cluster, prom_port = free_port(), free_port(), free_port()
    timing = "  group_wait: 0s\n  group_interval: 1s\n" if fast else ""
    open(os.path.join(d, "am.yml"), "w").write(
        f"route:\n  receiver: hook\n  group_by: [alertname, round]\n{timing}"
        f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {HOOK}/prometheus\n        send_resolved: false\n")
    glob = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" if fast else ""
    open(os.path.join(d, "prometheus.yml"), "w").write(
        f"{glob}rule_files: [rules.yml]\n"
        f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n"
        f"scrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: ['{EXPORTER}']\n")
    open(os.path.join(d, "rules.yml"), "w").write(
        f"groups:\n  - name: bench\n    rules:\n      - alert: bench_high\n        expr: bench_queue_depth > 100\n"
        f"        for: {FOR}s\n        labels:\n          severity: P1\n")
    interval = 'interval = "1s"\n' if fast else ""
    open(os.path.join(d, "project", "slipway.toml"), "w").write(f"""[project]
name = "alertbench"

[services.worker]
kind = "worker"
start = "{BIN}/slipway-sample worker"

[metrics]
{interval}targets = [{{ name = "bench", url = "http://{EXPORTER}/metrics" }}]

[alerting]
builtin = false
group_by = ["alertname", "round"]

[alerts.bench_high]
expr = 'bench_queue_depth > 100'
for = "{FOR}s"
severity = "P1"
channels = ["hook"]

[channels.hook]
type = "webhook"
url = "{HOOK}/slipway"
""")
    log = lambda name: open(os.path.join(d, name + ".log"), "w")
    procs = [
        subprocess.Popen(["prometheus-alertmanager", f"--config.file={d}/am.yml", f"--storage.path={d}/am",
                          f"--web.listen-address=127.0.0.1:{am_port}", f"--cluster.listen-address=127.0.0.1:{am_cluster}"],
                         stdout=subprocess.DEVNULL, stderr=log("alertmanager")),
        subprocess.Popen(["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/tsdb",
                          f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=subprocess.DEVNULL, stderr=log("prometheus")),
        subprocess.Popen([f"{BIN}/slipway", "up", "--listen", "127.0.0.1:0"], cwd=os.path.join(d, "project"),
                         stdout=log("slipway"), stderr=subprocess.STDOUT),
    ]
    wait("Alertmanager ready", lambda: ready(f"http://127.0.0.1:{am_port}/-/ready"))
    wait("Prometheus ready", lambda: ready(f"http://127.0.0.1:{prom_port}/-/ready"))
    wait("Slipway up", lambda: os.path.getsize(os.path.join(d, "project", ".slipway", "daemon.json")) > 0)
    return procs, os.path.join(d, "project")

def stop(procs, project):
    subprocess.run([f"{BIN}/slipway", "down"], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()

def run(mode, rounds):
    procs, project = start(mode)
    time.sleep(2)
    got = {"slipway": [], "prometheus": []}
    try:
        for _ in range(rounds):
            # A random phase against both sides' scrape and evaluation ticks.
            time.sleep(random.uniform(1, 3))
            with lock:
                state["round"] += 1
                state["onset"] = time.time()
                r = state["round"]
            wait(f"round {r}'s notifications", lambda: all((s, r) in arrivals for s in got), timeout=400)
            for s in got:
                got[s].append(arrivals[(s, r)])
            print(f"  {mode:<8} round {r}: slipway {arrivals[('slipway', r)]:6.2f} s   "
                  f"prometheus+alertmanager {arrivals[('prometheus', r)]:6.2f} s", file=sys.stderr, flush=True)
        with lock:
            state["round"] += 1  # the last series goes: both resolve
    finally:
        stop(procs, project)
    return got

def p50(v):
    v = sorted(v); return v[len(v) // 2]

print(f"onset → firing notification at a local webhook, for: {FOR}s", file=sys.stderr)
result = {"for_s": FOR}
for mode, rounds in [("defaults", DEFAULT_ROUNDS), ("fast", ROUNDS)]:
    got = run(mode, rounds)
    a, b = got["slipway"], got["prometheus"]
    result[f"{mode}_slipway_p50_s"] = round(p50(a), 2)
    result[f"{mode}_slipway_max_s"] = round(max(a), 2)
    result[f"{mode}_prometheus_p50_s"] = round(p50(b), 2)
    result[f"{mode}_prometheus_max_s"] = round(max(b), 2)
    result[f"{mode}_p50_ratio"] = round(p50(a) / p50(b), 2)
    print(f"{mode:<8}: slipway p50 {p50(a):.2f} s (max {max(a):.2f}), "
          f"prometheus+alertmanager p50 {p50(b):.2f} s (max {max(b):.2f}), ratio {p50(a) / p50(b):.2f}",
          file=sys.stderr, flush=True)
# Onset is at the exporter: up to one scrape interval (1 s when fast) passes before anyone sees it.
result["within_for_plus_2s"] = str(result["fast_slipway_max_s"] - 1 <= FOR + 2).lower()
print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
EOF
