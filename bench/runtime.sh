#!/usr/bin/env bash
# Supervision cost, side by side with supervisord (the process supervisor people reach for):
# N long-running processes under each, then
#   - memory of the supervisor, as PSS (slipway: control plane + one shim per instance),
#   - CPU the supervisor burns while nothing happens (10 s idle),
#   - time from `kill -9` of one instance until a replacement process runs.
# Slipway also health-checks every instance; supervisord does not.
#
# Needs: cargo, python3 with `pip install supervisor`, procps. Usage: bench/runtime.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
IDLE=${IDLE:-10}

command -v supervisord >/dev/null || { echo "install supervisord: pip install supervisor" >&2; exit 1; }
cargo build --release --quiet
SLIPWAY=${CARGO_TARGET_DIR:-$PWD/target}/release/slipway
TICKS=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'cd /; "$SLIPWAY" -f "$work/s/slipway.toml" down >/dev/null 2>&1 || true; [ -f "$work/sv/supervisord.pid" ] && kill "$(cat "$work/sv/supervisord.pid")" 2>/dev/null; rm -rf "$work"' EXIT

cpu_ticks() { # utime+stime of the given pids
    local total=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        read -r -a f < <(sed 's/.*) //' "/proc/$p/stat")
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
# Proportional set size: shared pages (the one slipway binary all shims map) counted once.
pss_kib() { local total=0; for p in "$@"; do total=$((total + $(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done; echo "$total"; }
now_ms() { date +%s%3N; }

# --- slipway ---------------------------------------------------------------------------------
mkdir -p "$work/s"
cat > "$work/s/slipway.toml" <<EOF
[project]
name = "bench"
[services.sleeper]
kind = "worker"
start = "sleep 100000"
replicas = $N
restart = { backoff = "0s" }
EOF
"$SLIPWAY" -f "$work/s/slipway.toml" up --detach --listen 127.0.0.1:0 >/dev/null
running() { "$SLIPWAY" -f "$work/s/slipway.toml" --json status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for i in s["services"][0]["instances"] if i["state"]=="running"))'; }
until [ "$(running)" = "$N" ]; do sleep 0.05; done
daemon=$(python3 -c 'import json;print(json.load(open("'"$work"'/s/.slipway/daemon.json"))["pid"])')
shims=$(pgrep -f "slipway __shim $work/s" || true)
s_rss=$(pss_kib "$daemon" $shims)
t0=$(cpu_ticks "$daemon" $shims); sleep "$IDLE"; t1=$(cpu_ticks "$daemon" $shims)
s_cpu=$(python3 -c "print(round(($t1-$t0)/$TICKS/$IDLE*100,2))")
victim=$("$SLIPWAY" -f "$work/s/slipway.toml" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"][0]["instances"][0]["pid"])')
start=$(now_ms); kill -9 "$victim"
until [ "$("$SLIPWAY" -f "$work/s/slipway.toml" --json status | python3 -c 'import json,sys; s=json.load(sys.stdin); i=s["services"][0]["instances"]; print(int(len(i)=='"$N"' and all(x["pid"]!='"$victim"' for x in i)))')" = 1 ]; do sleep 0.01; done
s_restart=$(( $(now_ms) - start ))
"$SLIPWAY" -f "$work/s/slipway.toml" down >/dev/null

# --- supervisord -----------------------------------------------------------------------------
mkdir -p "$work/sv"
cat > "$work/sv/supervisord.conf" <<EOF
[unix_http_server]
file=$work/sv/sock
[supervisord]
pidfile=$work/sv/supervisord.pid
logfile=$work/sv/supervisord.log
childlogdir=$work/sv
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$work/sv/sock
[program:sleeper]
command=sleep 100000
numprocs=$N
process_name=%(program_name)s_%(process_num)02d
autorestart=true
startsecs=0
EOF
supervisord -c "$work/sv/supervisord.conf"
ctl() { supervisorctl -c "$work/sv/supervisord.conf" "$@"; }
until [ "$(ctl status | grep -c RUNNING)" = "$N" ]; do sleep 0.05; done
sv=$(cat "$work/sv/supervisord.pid")
v_rss=$(pss_kib "$sv")
t0=$(cpu_ticks "$sv"); sleep "$IDLE"; t1=$(cpu_ticks "$sv")
v_cpu=$(python3 -c "print(round(($t1-$t0)/$TICKS/$IDLE*100,2))")
victim=$(ctl pid sleeper:sleeper_00)
start=$(now_ms); kill -9 "$victim"
until p=$(ctl pid sleeper:sleeper_00) && [ "$p" != "$victim" ] && [ "$p" != 0 ]; do sleep 0.01; done
v_restart=$(( $(now_ms) - start ))
kill "$sv"

printf '\n%d processes, %ds idle\n' "$N" "$IDLE"
printf '%-30s %12s %12s %8s\n' "" slipway supervisord ratio
printf '%-30s %12s %12s %8s\n' "supervisor memory, PSS (KiB)" "$s_rss" "$v_rss" "$(python3 -c "print(round($s_rss/$v_rss,2))")"
printf '%-30s %12s %12s %8s\n' "idle CPU (% of one core)" "$s_cpu" "$v_cpu" "$(python3 -c "print(round($s_cpu/max($v_cpu,0.01),2))")"
printf '%-30s %12s %12s %8s\n' "kill -9 to replacement (ms)" "$s_restart" "$v_restart" "$(python3 -c "print(round($s_restart/max($v_restart,1),2))")"
echo "(restart times include each tool's status polling: slipway's HTTP API, supervisorctl's XML-RPC)"
echo "RESULT processes=$N pss_kib_slipway=$s_rss pss_kib_supervisord=$v_rss pss_ratio=$(python3 -c "print(round($s_rss/$v_rss,2))") idle_cpu_pct_slipway=$s_cpu idle_cpu_pct_supervisord=$v_cpu restart_ms_slipway=$s_restart restart_ms_supervisord=$v_restart restart_ratio=$(python3 -c "print(round($s_restart/max($v_restart,1),2))")"
