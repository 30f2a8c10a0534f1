#!/usr/bin/env bash
# watch's drift check with warm SSH connections against a cold `flotilla plan` (not a test):
# N real sshd hosts (default 200), each with one managed file, converged. Then:
#   cold: `flotilla plan` of the converged fleet, RUNS times (every run makes N handshakes);
#   warm: one `flotilla watch --drift-interval 2s`, whose first cycle connects and whose later
#         cycles reuse the open connections; each cycle's duration is read from /status.
# Prints the medians, the ratio, and watch's RSS after the cycles.
# Needs openssh-server, root.   bash benches/watch_drift.sh [HOSTS]  (cargo build --release first)
set -euo pipefail
N=${1:-200}
RUNS=${RUNS:-3}
CYCLES=${CYCLES:-6}
here=$(cd "$(dirname "$0")/.." && pwd)
FL=${FLOTILLA:-$here/target/release/flotilla}
[ -x "$FL" ] || { echo "build first: cargo build --release" >&2; exit 1; }
. "$here/benches/lab.sh"
start_lab "$N"
# A dedicated user whose login shell is sh: sshd runs every command through the login shell,
# and root's bash here reads a .bashrc that starts pyenv (two extra processes per command, the
# larger part of a warm probe's host CPU on this machine, and nothing a real host pays).
BENCH_USER=${BENCH_USER:-flbench}
id "$BENCH_USER" >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /bin/sh "$BENCH_USER"
# Without a password field of "*", sshd (UsePAM no) treats the account as locked.
usermod -p "*" "$BENCH_USER"
chown -R "$BENCH_USER" "$lab/roots"
cat > "$lab/fleet/flotilla.toml" <<TOML
[fleet]
name = "bench"
[defaults]
transport = "ssh"
user = "$BENCH_USER"
identity_file = "$lab/client"
known_hosts = "$lab/known_hosts"
[trust]
require_signatures = false
TOML
printf 'auto_apply = true\n[[file]]\npath = "/etc/motd"\ncontent = "hello\\n"\n[rollout]\nwaves = ["100%%"]\nmax_parallel = %d\n' "$N" \
  > "$lab/fleet/environments/bench.toml"
git -C "$lab/fleet" init -q && git -C "$lab/fleet" add -A && git -C "$lab/fleet" -c user.name=b -c user.email=b@b commit -qm bench
"$FL" --state-dir "$lab/store" --parallel "$N" apply --auto-approve "$lab/fleet" > "$lab/apply.log" 2>&1 \
  || { tail -5 "$lab/apply.log"; exit 1; }

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "== $N hosts, $(ssh -V 2>&1)"
for run in $(seq 1 "$RUNS"); do
  t0=$(date +%s.%N)
  "$FL" --state-dir "$lab/store" --parallel "$N" plan "$lab/fleet" > "$lab/plan.log" 2>&1
  t1=$(date +%s.%N)
  grep -q "No changes" "$lab/plan.log" || { echo "plan was not a no-op" >&2; tail -3 "$lab/plan.log" >&2; }
  echo "$t1 - $t0" | bc | tee -a "$lab/cold" | xargs printf 'cold plan          %6.2f s\n'
done

# Below the ephemeral range (32768-60999): an outgoing connection can hold any port there.
port=$((10000 + $$ % 10000))
"$FL" --state-dir "$lab/store" --parallel "$N" watch --interval 1h --drift-interval 2s --listen ":$port" "$lab/fleet" \
  > "$lab/watch.log" 2>&1 &
wpid=$!
seen=""
: > "$lab/cycles"
while [ "$(wc -l < "$lab/cycles")" -lt "$CYCLES" ]; do
  sleep 0.2
  kill -0 "$wpid" 2>/dev/null || { echo "watch exited:" >&2; tail -5 "$lab/watch.log" >&2; exit 1; }
  s=$(curl -sf "http://127.0.0.1:$port/status" || true)
  started=$(printf '%s' "$s" | python3 -c 'import json,sys; c=json.load(sys.stdin).get("last_cycle") or {}; print(c.get("started",""), c.get("seconds",""), c.get("outcome",""))' 2>/dev/null || true)
  [ -n "${started%% *}" ] && [ "$started" != "$seen" ] && { seen=$started; echo "$started" >> "$lab/cycles"; }
done
rss=$(ps -o rss= -p "$wpid")
# watch's own CPU (user+sys, all cycles): the controller's share of the work.
wcpu=$(awk '{print ($14 + $15) / 100}' "/proc/$wpid/stat")
kill -TERM "$wpid"; wait "$wpid" || true
n=0
while read -r _ secs outcome; do
  n=$((n + 1))
  printf 'watch cycle %d      %6.2f s  (%s)\n' "$n" "$secs" "$outcome"
  [ "$n" -gt 1 ] && echo "$secs" >> "$lab/warm"
done < "$lab/cycles"
cold=$(median < "$lab/cold"); warm=$(median < "$lab/warm")
printf 'cold plan median %.2f s, warm drift check median %.2f s (cycles 2-%d): %.1fx faster; watch RSS %d MiB, watch CPU %.2f s over %d cycles\n' \
  "$cold" "$warm" "$CYCLES" "$(echo "$cold / $warm" | bc -l)" "$((rss / 1024))" "$wcpu" "$CYCLES"
