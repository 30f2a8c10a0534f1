#!/usr/bin/env bash
# SSH fan-out benchmark (not a test): 50 real sshd hosts on 127.0.0.10-59, side by side with a
# raw `xargs -P 50 ssh` baseline doing the same work.
#   (a) a no-op plan of a converged fleet  vs  the same probe script over plain ssh
#   (b) a full rollout of a 20 MB runtime (upload, sha256 on the host, unpack, switch
#       `current`, health check, state file)  vs  one plain ssh per host streaming the
#       artifact on stdin
# Both sides use the same key exchange (curve25519-sha256, what Flotilla's generated ssh config
# prefers): OpenSSH 9.2's default sntrup761x25519 costs about 3x the CPU per connection and,
# on the raw side only, used to hide Flotilla's own overhead. Each side runs RUNS times (default
# 3) from the same starting point (hosts emptied before each rollout); prints each run's wall
# time, the machine's busy CPU-seconds, the hosts' share of them, the controller's (the rest)
# and the peak RSS summed over flotilla and its ssh processes, then the medians and
# flotilla/raw ratios.
# Needs openssh-server, minisign, root.
#   bash benches/ssh_fanout.sh [HOSTS]   (build first: cargo build --release)
set -euo pipefail
N=${1:-50}
RUNS=${RUNS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
FL=${FLOTILLA:-$here/target/release/flotilla}
[ -x "$FL" ] || { echo "build first: cargo build --release" >&2; exit 1; }
. "$here/benches/lab.sh"
start_lab "$N"

# A 20 MB runtime (incompressible), signed.
mkdir -p "$lab/src/bin"
head -c 20000000 /dev/urandom > "$lab/src/payload"
printf '#!/bin/sh\necho ok\n' > "$lab/src/bin/check"; chmod +x "$lab/src/bin/check"
tar -czf "$lab/fleet/artifacts/big-1.0.0.tar.gz" -C "$lab/src" bin payload
minisign -G -W -p "$lab/k.pub" -s "$lab/k.sec" >/dev/null
minisign -S -s "$lab/k.sec" -m "$lab/fleet/artifacts/big-1.0.0.tar.gz" >/dev/null
sha=$(sha256sum "$lab/fleet/artifacts/big-1.0.0.tar.gz" | cut -c1-64)
cat > "$lab/fleet/flotilla.toml" <<TOML
[fleet]
name = "bench"
[defaults]
transport = "ssh"
identity_file = "$lab/client"
known_hosts = "$lab/known_hosts"
[trust]
keys = ["$(tail -n 1 "$lab/k.pub")"]
TOML
printf '[runtimes]\nbig = "1.0.0"\n[rollout]\nwaves = ["100%%"]\nmax_parallel = %d\n' "$N" > "$lab/fleet/environments/bench.toml"
printf '[[version]]\nversion = "1.0.0"\nartifact = "artifacts/big-1.0.0.tar.gz"\nsha256 = "%s"\n[health]\ncommand = "./bin/check"\n' "$sha" > "$lab/fleet/runtimes/big.toml"
git -C "$lab/fleet" init -q && git -C "$lab/fleet" add -A && git -C "$lab/fleet" -c user.name=b -c user.email=b@b commit -qm bench

SSH="ssh -o KexAlgorithms=curve25519-sha256 -i $lab/client -o UserKnownHostsFile=$lab/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR"
export SSH lab sha

# Runs a command, sampling the summed RSS of flotilla and ssh processes; prints
# "wall_s peak_rss_mib".
measure() {
  local peak=0 start end
  start=$(date +%s.%N)
  ( "$@" > "$lab/out.log" 2>&1 ) & local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local rss; rss=$(ps -eo rss=,comm= | awk '$2 ~ /^(flotilla|ssh|xargs|sh)$/ {s += $1} END {print s + 0}')
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.05
  done
  wait "$pid" || { echo "FAILED: $*" >&2; tail -5 "$lab/out.log" >&2; }
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $((peak / 1024))"
}
# The machine's busy CPU-seconds (user, nice, system, irq, softirq; USER_HZ = 100). The
# controller's share is this minus the hosts': ssh masters detach from Flotilla (`ssh -f`), so
# no parent ever reaps their CPU, and a children-only count (as this script used to take)
# missed about 1 CPU-second of Flotilla's side per rollout.
cpu_now() { awk '/^cpu / {print ($2 + $3 + $4 + $7 + $8) / 100}' /proc/stat; }
# Host-side CPU: every sshd listener accumulates the CPU of its reaped session processes
# (sshd, the login shell and everything the command ran), so this is the hosts' whole cost,
# and unlike wall time it barely moves with the machine's load.
host_cpu_now() { cat "$lab"/sshd-*.pid | while read -r p; do cat "/proc/$p/stat"; done | awk '{s += $14 + $15 + $16 + $17} END {print s / 100}'; }

run_timed() { # label command...; also appends the wall time to $lab/times-<label>
  local c0 c1 h0 h1 t0 t1 peak wall
  sync # start each run with no dirty pages from the previous one (fsyncs would wait on them)
  c0=$(cpu_now); h0=$(host_cpu_now); t0=$(date +%s.%N)
  read -r _ peak < <(measure "${@:2}")
  t1=$(date +%s.%N); c1=$(cpu_now); h1=$(host_cpu_now)
  wall=$(echo "$t1 - $t0" | bc)
  echo "$wall" >> "$lab/times-${1// /_}"
  printf '%-34s wall %6.2f s  CPU %6.2f s: host %6.2f s, controller %6.2f s  peak RSS %4d MiB\n' \
    "$1" "$wall" "$(echo "$c1 - $c0" | bc)" "$(echo "$h1 - $h0" | bc)" "$(echo "$c1 - $c0 - ($h1 - $h0)" | bc)" "$peak"
}
median() { sort -n "$lab/times-${1// /_}" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
summary() { # label raw-label flotilla-label
  local r f; r=$(median "$2"); f=$(median "$3")
  printf '%s: median of %d  raw %.2f s  flotilla %.2f s  ratio %.3f\n' "$1" "$RUNS" "$r" "$f" "$(echo "$f / $r" | bc -l)"
}
# Every host back to empty (both sides), so each rollout run does the full work. The old trees
# are not deleted until the benchmark ends: this machine's ext4 has no journal, and there ext4
# skips inodes deleted in the last 60 s when it allocates new ones (`recently_deleted`, a scan
# that perf showed as the top of `tar`'s and `mkdir`'s kernel time). Deleting a run's files
# seconds before the next run made every file created cost more, and Flotilla creates more
# files than the raw script (its transaction journal), so the deletions taxed it more. Big
# files are truncated first, so the trash holds inodes, not gigabytes.
reset_hosts() {
  mkdir -p "$lab/trash"
  find "$lab/roots" "$lab/raw" -type f -size +1M -exec truncate -s 0 {} + 2>/dev/null || true
  local t; t=$(mktemp -d "$lab/trash/XXXX")
  mv "$lab/roots" "$lab/raw" "$t/"; [ -d "$lab/store" ] && mv "$lab/store" "$t/"
  for i in $(seq 0 $((N - 1))); do mkdir -p "$lab/roots/h$i" "$lab/raw/h$i"; done
}

raw_rollout() {
  hosts | xargs -P "$N" -L 1 sh -c '
    a=$0; p=$1; i=$2; r=$lab/raw/h$i
    $SSH -p "$p" "root@$a" "set -e; d=$r/opt/rt/big; mkdir -p \$d/.in; cat > \$d/a.tgz; \
      echo \"$sha  \$d/a.tgz\" | sha256sum -c --quiet; tar --no-same-owner -xzf \$d/a.tgz -C \$d/.in; \
      mv -T \$d/.in \$d/1.0.0; ln -sfn 1.0.0 \$d/.cur; mv -T \$d/.cur \$d/current; \
      (cd \$d/current && ./bin/check) >/dev/null; echo {\\\"big\\\":\\\"1.0.0\\\"} > $r/state.json" \
      < "$lab/fleet/artifacts/big-1.0.0.tar.gz"'
}
# The same raw rollout, but as durable as a Flotilla transaction: the unpacked files reach the
# disk (fsync) before the state file names them. Flotilla must do this (a power loss must not
# leave a committed, truncated version); on this benchmark's one shared disk it is 1 GB of
# flushes that the plain raw script never waits for.
raw_rollout_durable() {
  hosts | xargs -P "$N" -L 1 sh -c '
    a=$0; p=$1; i=$2; r=$lab/raw/h$i
    $SSH -p "$p" "root@$a" "set -e; d=$r/opt/rt/big; mkdir -p \$d/.in; cat > \$d/a.tgz; \
      echo \"$sha  \$d/a.tgz\" | sha256sum -c --quiet; tar --no-same-owner -xzf \$d/a.tgz -C \$d/.in; \
      find \$d/.in -exec sync -- {} +; \
      mv -T \$d/.in \$d/1.0.0; ln -sfn 1.0.0 \$d/.cur; mv -T \$d/.cur \$d/current; \
      (cd \$d/current && ./bin/check) >/dev/null; echo {\\\"big\\\":\\\"1.0.0\\\"} > $r/state.json; sync -- $r/state.json" \
      < "$lab/fleet/artifacts/big-1.0.0.tar.gz"'
}
# The raw probe reads the same converged host roots the plan reads (FLOTILLA_ROOT is set per
# host), so both sides do the same work on the host.
sed -n "/^export LC_ALL=C/,\$p" "$here/src/observe/probe.sh" > "$lab/probe.sh"
raw_probe() {
  hosts | xargs -P "$N" -L 1 sh -c '$SSH -p "$1" "root@$0" "FLOTILLA_ROOT=$lab/roots/h$2 FLOTILLA_RUNTIMES_DIR=/opt/flotilla/runtimes FLOTILLA_STATE_DIR=/var/lib/flotilla FLOTILLA_PROBE_FULL=1 sh -s" < "$lab/probe.sh" > /dev/null'
}

acct_run() { # label command...
  reset_hosts; sync
  rm -f /tmp/acct.$1; touch /tmp/acct.$1; accton /tmp/acct.$1
  "${@:2}" > "$lab/out.log" 2>&1 || true
  accton off
}
acct_run raw raw_rollout_durable
acct_run flo "$FL" --state-dir "$lab/store" --parallel "$N" apply --auto-approve "$lab/fleet"
