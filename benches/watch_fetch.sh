#!/usr/bin/env bash
# What one poll of `watch --remote` costs when nothing was pushed (not a test): the exact
# `git fetch` watch runs into its mirror, against a file:// remote holding a 10,000-host fleet
# (examples/gen_fleet.rs), RUNS times (default 10); prints each and the median. The rest of a
# poll is one ref read in the mirror (libgit2, well under a millisecond): nothing is loaded or
# planned when the branch did not move.
#   bash benches/watch_fetch.sh [HOSTS]
set -euo pipefail
N=${1:-10000}
RUNS=${RUNS:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
lab=$(mktemp -d /tmp/flf-XXXX)
trap 'rm -rf "$lab"' EXIT
(cd "$here" && cargo run -q --release --example gen_fleet -- "$lab/fleet" --hosts "$N" >/dev/null)
git -C "$lab/fleet" init -q -b main && git -C "$lab/fleet" add -A \
  && git -C "$lab/fleet" -c user.name=b -c user.email=b@b commit -qm fleet
git clone -q --bare "$lab/fleet" "$lab/remote.git"
git init -q --bare "$lab/mirror.git"
fetch() { git -C "$lab/mirror.git" fetch --quiet --no-tags --no-write-fetch-head -- "file://$lab/remote.git" "+refs/heads/main:refs/flotilla/fetched"; }
t0=$(date +%s.%N); fetch; t1=$(date +%s.%N)
printf 'first fetch (the whole repository, %s files): %.3f s\n' "$(git -C "$lab/fleet" ls-files | wc -l)" "$(echo "$t1 - $t0" | bc)"
for i in $(seq "$RUNS"); do
  t0=$(date +%s.%N); fetch; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
done | sort -n | tee "$lab/times" | awk '{v[NR] = $1} END {printf "no-op fetch: median %.3f s, max %.3f s over %d runs\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR], NR}'
