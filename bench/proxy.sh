#!/usr/bin/env bash
# Throughput and latency of `slipway proxy` against nginx and HAProxy, in one run with wrk:
# the sample app measured directly, then through each proxy, each configured as an
# equivalent keep-alive reverse proxy with one backend, no access log, as many workers or
# threads as cores. Prints requests/s, p50/p99 and the ratios to nginx and HAProxy, and the
# peak RSS of each proxy.
#
# Usage: [ROUNDS=3] bench/proxy.sh [seconds] [connections]   (installs wrk, nginx, haproxy if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-64}
THREADS=2

need=()
for tool in wrk nginx haproxy; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin slipway --bin slipway-sample
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
CORES=$(nproc)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

BACKEND=$(free_port)
PORT="$BACKEND" "$BIN/slipway-sample" web >/dev/null 2>&1 & pids+=($!)
wait_port "$BACKEND"

# slipway proxy
SLIPWAY=$(free_port); ADMIN=$(free_port)
"$BIN/slipway" proxy --dir "$work/slipway" --admin "127.0.0.1:$ADMIN" --access-log-sample 0 >/dev/null 2>&1 & SLIPWAY_PID=$!; pids+=($!)
wait_port "$ADMIN"
curl -sf -X PUT -H "authorization: Bearer $(cat "$work/slipway/admin.token")" "http://127.0.0.1:$ADMIN/routes" \
  -d "{\"version\":1,\"routes\":[{\"service\":\"web\",\"listen\":\"127.0.0.1:$SLIPWAY\",\"pools\":[{\"release\":\"r1\",\"track\":\"stable\",\"weight\":100,\"backends\":[{\"id\":\"b\",\"addr\":\"127.0.0.1:$BACKEND\"}]}]}]}" >/dev/null
wait_port "$SLIPWAY"

# nginx
NGINX=$(free_port); mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes $CORES;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >/dev/null 2>&1 & NGINX_PID=$!; pids+=($!)
wait_port "$NGINX"

# HAProxy
HAPROXY=$(free_port)
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread $CORES
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
frontend web
  bind 127.0.0.1:$HAPROXY
  default_backend app
backend app
  http-reuse always
  server b 127.0.0.1:$BACKEND
EOF
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & HAPROXY_PID=$!; pids+=($!)
wait_port "$HAPROXY"

# wrk prints "Requests/sec: N" and, with --latency, "50% 1.2ms" lines.
to_ms() { python3 -c "import sys,re; v=sys.argv[1]; m=re.match(r'([\d.]+)(us|ms|s)',v); n=float(m[1]); print(round(n/1000 if m[2]=='us' else n*1000 if m[2]=='s' else n,3))" "$1"; }
run() {
    local port=$1 out
    wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm-up
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    echo "$rps $p50 $p99 ${errors:-none}"
}
peak_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
children() { pgrep -P "$1" | tr '\n' ' '; }

# Rounds alternate between the targets so drift on a shared machine hits all of them alike;
# each figure is the median over the rounds.
ROUNDS=${ROUNDS:-3}
declare -A results
for round in $(seq "$ROUNDS"); do
    for target in direct:$BACKEND slipway:$SLIPWAY nginx:$NGINX haproxy:$HAPROXY; do
        results[${target%%:*}]+="$(run "${target#*:}")"$'\n'
    done
    echo "round $round of $ROUNDS done" >&2
done
median() { # field N of the rounds of target T
    printf '%s' "${results[$1]}" | awk -v f="$2" 'NF {print $f}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
errors_of() { printf '%s' "${results[$1]}" | awk 'NF {$1=$2=$3=""; print}' | sort -u | tr -s ' ' | tr '\n' ' '; }
for t in direct slipway nginx haproxy; do
    declare "${t:0:1}_rps=$(median "$t" 1)" "${t:0:1}_p50=$(median "$t" 2)" "${t:0:1}_p99=$(median "$t" 3)" "${t:0:1}_err=$(errors_of "$t")"
done
s_mem=$(peak_kib "$SLIPWAY_PID")
n_mem=$(peak_kib "$NGINX_PID" $(children "$NGINX_PID"))
h_mem=$(peak_kib "$HAPROXY_PID")

ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
printf '\nwrk -t%s -c%s -d%ss, GET / of slipway-sample, %s cores shared by wrk, proxy and backend; median of %s alternating rounds\n\n' "$THREADS" "$CONNS" "$DURATION" "$CORES" "$ROUNDS"
printf '%-16s %12s %9s %9s %12s  %s\n' "" "requests/s" "p50 ms" "p99 ms" "peak RSS KiB" "errors"
printf '%-16s %12s %9s %9s %12s  %s\n' "direct" "$d_rps" "$d_p50" "$d_p99" "-" "$d_err"
printf '%-16s %12s %9s %9s %12s  %s\n' "slipway proxy" "$s_rps" "$s_p50" "$s_p99" "$s_mem" "$s_err"
printf '%-16s %12s %9s %9s %12s  %s\n' "nginx" "$n_rps" "$n_p50" "$n_p99" "$n_mem" "$n_err"
printf '%-16s %12s %9s %9s %12s  %s\n' "haproxy" "$h_rps" "$h_p50" "$h_p99" "$h_mem" "$h_err"
printf '\nslipway / nginx:   requests/s %s, p99 %s\n' "$(ratio "$s_rps" "$n_rps")" "$(ratio "$s_p99" "$n_p99")"
printf 'slipway / haproxy: requests/s %s, p99 %s\n' "$(ratio "$s_rps" "$h_rps")" "$(ratio "$s_p99" "$h_p99")"
echo "RESULT rps_slipway=$s_rps rps_nginx=$n_rps rps_haproxy=$h_rps p99_ms_slipway=$s_p99 p99_ms_nginx=$n_p99 p99_ms_haproxy=$h_p99 rss_kib_slipway=$s_mem rss_kib_nginx=$n_mem rss_kib_haproxy=$h_mem rps_ratio_nginx=$(ratio "$s_rps" "$n_rps") rps_ratio_haproxy=$(ratio "$s_rps" "$h_rps") p99_ratio_nginx=$(ratio "$s_p99" "$n_p99") p99_ratio_haproxy=$(ratio "$s_p99" "$h_p99")"
