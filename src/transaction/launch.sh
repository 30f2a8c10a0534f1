# Starts a host transaction (FLOTILLA_MODE=apply), or runs one of its later modes (recover,
# health, finish) on the transaction directory an apply left: takes the host lock, receives
# the artifacts and the bundle from stdin, runs txn.sh in its own session so that a dropped
# connection cannot stop it, waits for it and prints its result as "flotilla-txn <result>".
# Constant text; inputs come from the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR,
# FLOTILLA_RUNTIMES_DIR, FLOTILLA_TXN, FLOTILLA_MODE) and stdin:
#   artifact <sha256> <size>\n<size bytes>   (any number of times)
#   bundle\n<tar of the transaction directory>
# One command per transaction, uploads included: a separate upload command cost another
# channel, login shell and preamble per host (about 10 ms of host CPU each, measured).
export LC_ALL=C
set -u
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
TX="$S/txn/$FLOTILLA_TXN"
say() { printf 'flotilla-txn %s\n' "$*"; }
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  { [ -d "$S/staging" ] && [ -d "$R$FLOTILLA_RUNTIMES_DIR" ]; } ||
    mkdir -p "$S/staging" "$R$FLOTILLA_RUNTIMES_DIR" ||
    { say "error cannot create $FLOTILLA_STATE_DIR/staging or $FLOTILLA_RUNTIMES_DIR"; exit 0; }
elif [ ! -f "$TX/txn.sh" ]; then
  say "stale transaction $FLOTILLA_TXN is not on this host (never started, or its journal was pruned); nothing was touched"
  exit 0
fi
# The lock is taken before anything arrives, so uploads never race another transaction and
# every staging/*.part a lock holder finds is left over from an interrupted upload. txn.sh
# inherits it on fd 9 and keeps it if this shell dies with the connection.
exec 9>>"$S/lock"
flock -n 9 || { say "locked another transaction holds $FLOTILLA_STATE_DIR/lock"; exit 0; }
export FLOTILLA_LOCKED=1
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  while IFS=' ' read -r kind sha size; do
    [ "$kind" = bundle ] && break
    case $kind:$sha:$size in
      artifact:*[!0-9a-f]*:* | artifact:*:*[!0-9]* | artifact::* | artifact:*:) kind=bad ;;
    esac
    [ "$kind" = artifact ] && [ "${#sha}" = 64 ] || { say "error malformed upload header"; exit 0; }
    # Exactly $size bytes, leaving the rest of stdin in place, in 128 KiB reads: `head -c`
    # does the same in 8 KiB ones, about 5000 syscalls for a 20 MB artifact.
    dd bs=128k iflag=fullblock,count_bytes count="$size" status=none of="$S/staging/$sha.$FLOTILLA_TXN.part" ||
      { say "error cannot write $FLOTILLA_STATE_DIR/staging/$sha.$FLOTILLA_TXN.part (disk full?)"; exit 0; }
  done
  # Root's only: undo copies and file contents may be sensitive.
  mkdir -p -m 700 "$TX" && tar -xf - -C "$TX" ||
    { say "error cannot unpack the transaction bundle into $TX"; exit 0; }
fi
rm -f "$TX/result"
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  setsid sh "$TX/txn.sh" < /dev/null >> "$TX/log" 2>&1 &
else
  # Later modes run the controller's txn.sh (sent on stdin), not the one in the bundle: a
  # transaction left by an older Flotilla is recovered with today's fence and locking.
  script=$(cat)
  [ -n "$script" ] || script=$(cat "$TX/txn.sh")
  setsid sh -c "$script" flotilla-txn < /dev/null >> "$TX/log" 2>&1 &
fi
wait $!
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
# The log's tail is for failure messages only: no `tail` fork when all went well.
if [ "$res" != ok ] && [ -f "$TX/log" ]; then echo "flotilla-log"; tail -n 20 "$TX/log"; fi
