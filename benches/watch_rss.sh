#!/usr/bin/env bash
# watch's memory over many cycles, and its CPU at rest (not a test): HOSTS local-transport
# hosts (default 1000), each with one managed file, converged; `flotilla watch --drift-interval
# 1s` runs CYCLES drift checks (default 100) and its RSS is sampled from /proc, to show it does
# not grow. Then a watch with the default drift interval is left alone for IDLE seconds
# (default 60) after its first cycle, and its CPU use over that time is printed.
#   bash benches/watch_rss.sh [HOSTS] [CYCLES]   (cargo build --release first)
set -euo pipefail
N=${1:-1000}
CYCLES=${2:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
FL=${FLOTILLA:-$here/target/release/flotilla}
[ -x "$FL" ] || { echo "build first: cargo build --release" >&2; exit 1; }
lab=$(mktemp -d /tmp/flr-XXXX)
trap 'kill "$wpid" 2>/dev/null; rm -rf "$lab"' EXIT
mkdir -p "$lab/fleet"/{environments,hosts} "$lab/roots"
printf '[fleet]\nname = "rss"\n[defaults]\ntransport = "local"\n[trust]\nrequire_signatures = false\n' > "$lab/fleet/flotilla.toml"
printf 'auto_apply = true\n[[file]]\npath = "/etc/motd"\ncontent = "hello\\n"\n[rollout]\nwaves = ["100%%"]\nmax_parallel = 64\n' \
  > "$lab/fleet/environments/rss.toml"
for i in $(seq 0 $((N - 1))); do
  mkdir -p "$lab/roots/h$i"
  printf '[[host]]\nname = "h%04d"\nenvironment = "rss"\nroot = "%s/roots/h%d"\n' "$i" "$lab" "$i"
done > "$lab/fleet/hosts/all.toml"
git -C "$lab/fleet" init -q && git -C "$lab/fleet" add -A && git -C "$lab/fleet" -c user.name=b -c user.email=b@b commit -qm rss
"$FL" --state-dir "$lab/store" apply --auto-approve "$lab/fleet" > "$lab/apply.log" 2>&1 || { tail -5 "$lab/apply.log"; exit 1; }
port=$((30000 + $$ % 20000))
"$FL" --state-dir "$lab/store" watch --interval 1h --drift-interval 1s --listen ":$port" "$lab/fleet" > "$lab/watch.log" 2>&1 &
wpid=$!
last=-1
echo "== $N local hosts, $CYCLES drift checks"
while :; do
  sleep 0.5
  kill -0 "$wpid" || { tail -5 "$lab/watch.log"; exit 1; }
  n=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "flotilla_cycles_total" {print $2}')
  [ -n "$n" ] || continue
  if [ "$n" != "$last" ] && { [ "$n" -le 3 ] || [ $((n % 10)) -eq 0 ] || [ "$n" -ge "$CYCLES" ]; }; then
    secs=$(curl -sf "http://127.0.0.1:$port/status" | python3 -c 'import json,sys; c=json.load(sys.stdin).get("last_cycle") or {}; print(c.get("seconds", 0))')
    printf 'cycle %4d  RSS %4d MiB  (this cycle %.2f s)\n' "$n" "$(($(awk '/VmRSS/ {print $2}' /proc/$wpid/status) / 1024))" "$secs"
  fi
  last=$n
  [ "$n" -ge "$CYCLES" ] && break
done
kill -TERM "$wpid"; wait "$wpid" || true

IDLE=${IDLE:-60}
"$FL" --state-dir "$lab/store" watch --listen ":$port" "$lab/fleet" > "$lab/idle.log" 2>&1 &
wpid=$!
until curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^flotilla_cycles_total 1'; do
  sleep 0.5; kill -0 "$wpid" || { tail -5 "$lab/idle.log"; exit 1; }
done
t0=$(awk '{print $14 + $15}' "/proc/$wpid/stat")
sleep "$IDLE"
t1=$(awk '{print $14 + $15}' "/proc/$wpid/stat")
printf 'at rest (drift check every 15m, polling every 60s): %.2f%% of one CPU over %ds\n' \
  "$(echo "($t1 - $t0) / $IDLE" | bc -l)" "$IDLE"
kill -TERM "$wpid"; wait "$wpid" || true
