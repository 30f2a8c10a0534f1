# Starts a host transaction (FLOTILLA_MODE=apply), or runs one of its later modes (recover,
# health, finish) on the transaction directory an apply left: takes the host lock, receives
# the artifacts and the bundle from stdin, runs txn.sh in its own session so that a dropped
# connection cannot stop it, waits for it and prints its result as "flotilla-txn <result>".
# Constant text; inputs come from the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR,
# FLOTILLA_RUNTIMES_DIR, FLOTILLA_TXN, FLOTILLA_MODE) and stdin: in apply mode one tar,
# unpacked into state_dir, that holds the artifacts first (staging/<sha256>.tar.gz, which
# txn.sh checks against its digest before any use) and then the transaction directory
# (txn/<txn>/, 0700: root's only, since undo copies and file contents may be sensitive).
# One command per transaction, uploads included: a separate upload command cost another
# channel, login shell and preamble per host (about 10 ms of host CPU each, measured); and one
# `tar` for the uploads and the bundle (a `dd` per artifact, a `mkdir` and an `rm` fewer).
export LC_ALL=C
set -u
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
TX="$S/txn/$FLOTILLA_TXN"
say() { printf 'flotilla-txn %s\n' "$*"; }
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  { [ -d "$S/staging" ] && [ -d "$S/txn" ] && [ -d "$R$FLOTILLA_RUNTIMES_DIR" ]; } ||
    mkdir -p "$S/staging" "$S/txn" "$R$FLOTILLA_RUNTIMES_DIR" ||
    { say "error cannot create $FLOTILLA_STATE_DIR/staging, $FLOTILLA_STATE_DIR/txn or $FLOTILLA_RUNTIMES_DIR"; exit 0; }
elif [ ! -f "$TX/txn.sh" ]; then
  say "stale transaction $FLOTILLA_TXN is not on this host (never started, or its journal was pruned); nothing was touched"
  exit 0
fi
# The lock is taken before anything arrives, so uploads never race another transaction. txn.sh
# inherits it on fd 9 and keeps it if this shell dies with the connection.
exec 9>>"$S/lock"
flock -n 9 || { say "locked another transaction holds $FLOTILLA_STATE_DIR/lock"; exit 0; }
export FLOTILLA_LOCKED=1
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  # 64 KiB records (-b 128), the default size of the pipe from sshd: each read is one full
  # pipe and its data is written at once (with the large pipe below, records of 1 MiB were
  # slower still: 6.83 s against 6.59 s). tar's default 10 KiB records cost about twice the
  # system time;
  # 128 KiB ones (two pipe reads each) leave data waiting in sshd, whose channel buffer then
  # grows and is copied: about 40 ms more host CPU per 20 MB in sshd (measured, 16 rounds over
  # ssh on loopback: cat 341 ms, -b 128 383 ms, -b 256 424 ms; the `dd bs=128k
  # iflag=fullblock` plus bundle `tar` this replaces: about 415 ms). -m: files get the time of
  # their arrival (the journals' housekeeping sorts by it); -p: the modes as sent, whatever the
  # umask (a file's bundle copy carries the mode txn.sh gives it). tar replaces whatever is at
  # an entry's name instead of writing through it.
  # An upload's pipe from sshd made large (FLOTILLA_LARGE_PIPE bytes; the controller enlarges
  # its end too): sshd then hands what arrives to the pipe at once instead of holding it in
  # its channel buffer, which grows by copying (and, on a connection's first big transfer,
  # by mmap and page faults). Measured, 50 hosts on loopback, 20 MB each: the hosts' sshd
  # 5.9 -> 1.7 CPU-s, all hosts' CPU 13-16 s -> 10.2-11.5 s, the rollout's median 9.9 s ->
  # 7.0 s; perl costs one process start. Best effort: a failure (stdin not a pipe, a lower
  # pipe-max-size) leaves the pipe as it was.
  if [ -n "${FLOTILLA_LARGE_PIPE:-}" ]; then
    perl -e 'fcntl(STDIN, 1031, $ARGV[0] + 0)' -- "$FLOTILLA_LARGE_PIPE" 2>/dev/null
  fi
  tar -b 128 -m -p -xf - -C "$S" ||
    { say "error cannot receive the uploads and the transaction bundle into $FLOTILLA_STATE_DIR (disk full?)"; exit 0; }
  [ -f "$TX/txn.sh" ] || { say "error the bundle holds no transaction $FLOTILLA_TXN"; exit 0; }
  [ "${FLOTILLA_STEPS:-}" = 1 ] && : > "$TX/steps"
  setsid sh "$TX/txn.sh" < /dev/null >> "$TX/log" 2>&1 &
  txn=$!
  # FLOTILLA_STEPS=1 (a terminal, -v or a JSON log shows progress): each step txn.sh starts
  # goes to the controller as it happens, one line each, before the result line. `tail -f`
  # follows the steps file (inotify: no polling of the file), so txn.sh only ever appends to a
  # file and never blocks on or dies with the connection; --pid=$$: a tail left behind by a
  # dropped connection ends with this shell. One process start, about 0.6 ms of host CPU per
  # transaction (measured, 1,000 rounds: 1.2 s with it, 0.6 s without), and none without
  # FLOTILLA_STEPS, which is how the controller runs without a terminal or -v.
  if [ "${FLOTILLA_STEPS:-}" = 1 ]; then
    tail -n +1 -f --pid=$$ -- "$TX/steps" 2>/dev/null &
    follow=$!
  fi
else
  rm -f "$TX/result" "$TX/outputs"
  # Later modes run the controller's txn.sh (sent on stdin), not the one in the bundle: a
  # transaction left by an older Flotilla is recovered with today's fence and locking.
  script=$(cat)
  [ -n "$script" ] || script=$(cat "$TX/txn.sh")
  setsid sh -c "$script" flotilla-txn < /dev/null >> "$TX/log" 2>&1 &
  txn=$!
fi
wait "$txn"
# Every step is in the final list below: the follower stops at once (a step it had not sent
# yet is not lost), and a newline ends a line it may have been cut off in.
if [ -n "${follow:-}" ]; then kill "$follow" 2>/dev/null; wait "$follow" 2>/dev/null; echo; fi
if [ -f "$TX/result" ]; then
  IFS= read -r res < "$TX/result"
  say "$res"
else
  say "error the transaction stopped without a result (see $TX/log)"
  res=error
fi
if [ -f "$TX/steps" ]; then
  echo "flotilla-steps"
  while IFS= read -r l; do printf '%s\n' "$l"; done < "$TX/steps"
fi
# -v (FLOTILLA_OUTPUT=1): the end of each command's own output (txn.sh names them in
# `outputs`), whatever the result: its last 4 KiB (a `tail` per command, only with -v), each
# line prefixed so that no output can pass for a label ("=") or for the next section.
if [ -f "$TX/outputs" ]; then
  echo "flotilla-output"
  while IFS='	' read -r n label; do
    case $n in '' | *[!0-9]*) continue ;; esac
    printf '=%s\n' "$label"
    tail -c 4096 -- "$TX/out/$n" > "$TX/out/tail" 2>/dev/null || continue
    while IFS= read -r l || [ -n "$l" ]; do printf '|%s\n' "$l"; done < "$TX/out/tail"
  done < "$TX/outputs"
fi
# The log's tail is for failure messages only: no `tail` fork when all went well.
if [ "$res" != ok ] && [ -f "$TX/log" ]; then echo "flotilla-log"; tail -n 20 "$TX/log"; fi
