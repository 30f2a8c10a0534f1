# Starts (or, with FLOTILLA_MODE=recover, resumes the rollback of) a host transaction: unpacks
# the bundle from stdin, runs txn.sh in its own session so that a dropped connection cannot stop
# it, waits for it and prints its result as "flotilla-txn <result>". Constant text; inputs
# come from the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR, FLOTILLA_TXN, FLOTILLA_MODE).
export LC_ALL=C
set -u
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
TX="$S/txn/$FLOTILLA_TXN"
if [ "${FLOTILLA_MODE:-apply}" = apply ]; then
  # The bundle arrives on stdin, so a transaction costs one command after its uploads.
  mkdir -p "$S/staging" "$S/backup" "$R$FLOTILLA_RUNTIMES_DIR" "$TX" && tar -xf - -C "$TX" ||
    { echo "flotilla-txn error cannot unpack the transaction bundle into $TX"; exit 0; }
fi
[ -f "$TX/txn.sh" ] || { echo "flotilla-txn error no transaction $FLOTILLA_TXN on this host"; exit 0; }
rm -f "$TX/result"
setsid sh "$TX/txn.sh" < /dev/null >> "$TX/log" 2>&1 &
wait $!
if [ -f "$TX/result" ]; then printf 'flotilla-txn %s\n' "$(cat "$TX/result")"
else echo "flotilla-txn error the transaction stopped without a result (see $TX/log)"; fi
if [ -f "$TX/steps" ]; then echo "flotilla-steps"; tail -n 50 "$TX/steps"; fi
if [ -f "$TX/log" ]; then echo "flotilla-log"; tail -n 20 "$TX/log"; fi
