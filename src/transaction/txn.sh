# Flotilla's host transaction (DESIGN §6.1). Constant text, shipped in the transaction bundle
# and run detached from the connection (setsid), so it finishes or rolls back by itself even
# if the controller goes away. Inputs: the bundle directory ($TX: ops, files/, cmds/,
# state.pending.json, state.final.json) and the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR,
# FLOTILLA_RUNTIMES_DIR, FLOTILLA_HOST, FLOTILLA_ENVIRONMENT, FLOTILLA_TXN,
# FLOTILLA_COMMAND_TIMEOUT, FLOTILLA_MODE=apply|recover). Manifest values are never part of
# this text: names, paths and digests come from tab-separated op lines (validated by the
# controller), commands from files under cmds/.
#
# The undo record of every step is in $TX/journal, on disk, before the first change, so a
# rollback — now, or by a later `recover` after a crash — replays the journal backwards. The result goes to
# $TX/result: "ok", "stale <why>", "locked", "rolled-back <step>: <why>", "broken <why>",
# or "committed-with-errors <why>" (the new state is in place; a deletion or prune failed).
export LC_ALL=C
set -u
umask 022
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
RT="$R$FLOTILLA_RUNTIMES_DIR"
TX="$S/txn/$FLOTILLA_TXN"
TO=${FLOTILLA_COMMAND_TIMEOUT:-300}
TAB=$(printf '\t')
J="$TX/journal"

result() { printf '%s\n' "$*" > "$TX/result.tmp" && mv -f "$TX/result.tmp" "$TX/result"; }
step() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$TX/steps"; }
note() { printf '%s\t%s\t%s\t%s\n' "$1" "${2:-}" "${3:-}" "${4:-}" >> "$J"; }
# Which steps really ran (not flushed: after a crash it may miss the last steps, and the
# rollback then re-runs a hook too many, never one too few for a restored file or link).
did() { printf '%s\t%s\n' "$1" "$2" >> "$TX/done"; }
sync_file() { sync "$1" 2>/dev/null || sync; }

# Writes $1 (a bundle file) to state.json atomically.
put_state() {
  cp "$1" "$S/state.json.tmp-$FLOTILLA_TXN" && sync_file "$S/state.json.tmp-$FLOTILLA_TXN" &&
    mv -f "$S/state.json.tmp-$FLOTILLA_TXN" "$S/state.json"
}

# Runs a command file with the hook environment, bounded by the command timeout.
run_cmd() { # cmdfile cwd [runtime version previous]
  ( cd "$2" 2>/dev/null || cd /
    FLOTILLA_RUNTIME=${3:-} FLOTILLA_VERSION=${4:-} FLOTILLA_PREVIOUS_VERSION=${5:-} \
    FLOTILLA_VERSION_DIR=${4:+$RT/$3/$4} FLOTILLA_ROOT=$R \
      timeout "$TO" sh "$1" < /dev/null ) >> "$TX/log" 2>&1
}

set_link() { # runtime version|-
  if [ "$2" = - ]; then rm -f "$RT/$1/current"; return; fi
  ln -sfn "$2" "$RT/$1/.current-$FLOTILLA_TXN" && mv -T -f "$RT/$1/.current-$FLOTILLA_TXN" "$RT/$1/current"
}

# Replays the journal backwards; then re-runs on_change and activate hooks for what was
# restored, and puts back the state.json from before the transaction.
rollback() {
  ok=0
  [ -f "$J" ] || : > "$J"
  tac "$J" > "$TX/journal.rev" 2>/dev/null || { awk '{l[NR]=$0} END {for (i=NR;i>0;i--) print l[i]}' "$J" > "$TX/journal.rev"; }
  : > "$TX/rerun"
  while IFS="$TAB" read -r kind a b c; do
    case $kind in
      link)
        set_link "$a" "$b" || ok=1
        if [ "$b" != - ] && grep -qx "link$TAB$a" "$TX/done" 2>/dev/null; then
          printf 'activate\t%s\t%s\t%s\n' "$a" "$b" "$c" >> "$TX/rerun"
        fi ;;
      install) rm -rf "$RT/$a/$b" || ok=1 ;;
      rtdir) rmdir "$RT/$a" 2>/dev/null ;;
      file)
        if [ "$c" = absent ]; then rm -f "$R$b" || ok=1
        else cp -p "$TX/undo/$a" "$R$b.flotilla-undo" && mv -f "$R$b.flotilla-undo" "$R$b" || ok=1; fi
        if [ -f "$TX/onchange-for/$a" ] && grep -qx "file$TAB$a" "$TX/done" 2>/dev/null; then
          printf 'onchange\t%s\n' "$(cat "$TX/onchange-for/$a")" >> "$TX/rerun"
        fi ;;
    esac
  done < "$TX/journal.rev"
  # Hooks again for what was restored: each distinct on_change once, then activate hooks.
  sort -u "$TX/rerun" | while IFS="$TAB" read -r kind a b c; do
    [ "$kind" = onchange ] && [ -f "$TX/cmds/onchange-$a" ] && run_cmd "$TX/cmds/onchange-$a" / || true
  done
  while IFS="$TAB" read -r kind a b c; do
    [ "$kind" = activate ] && [ -f "$TX/cmds/activate-$a" ] && run_cmd "$TX/cmds/activate-$a" "$RT/$a/$b" "$a" "$b" "$c" || true
  done < "$TX/rerun"
  if [ -f "$TX/state.before" ]; then put_state "$TX/state.before" || ok=1
  else rm -f "$S/state.json" || ok=1; fi
  return $ok
}

fail() { # step message
  step "failed: $*"
  if rollback; then result "rolled-back $*"; else result "broken $*; rollback failed, see $TX/log"; fi
  exit 0
}

exec 9>>"$S/lock"
if ! flock -n 9; then result "locked another transaction holds $FLOTILLA_STATE_DIR/lock"; exit 0; fi

if [ "${FLOTILLA_MODE:-apply}" = recover ]; then
  # Also used to roll back a committed transaction when its rollout halts: the journal holds
  # everything needed to return to the state from before it.
  step "rolling back to the state before this transaction"
  if rollback; then result ok; else result "broken rollback failed, see $TX/log"; fi
  exit 0
fi

if [ "${FLOTILLA_MODE:-apply}" = health ]; then
  # A bake's re-check: the transaction's health checks again, changing nothing.
  while IFS="$TAB" read -r op a b c d e f; do
    case $op in
      health)
        step "re-check health $a $b"
        ( cd "$RT/$a/$b" && FLOTILLA_RUNTIME=$a FLOTILLA_VERSION=$b FLOTILLA_VERSION_DIR="$RT/$a/$b" \
            FLOTILLA_ROOT=$R timeout "$c" sh "$TX/cmds/health-$a" ) >> "$TX/log" 2>&1 < /dev/null ||
          { result "unhealthy health check of $a $b failed after the bake (see $TX/log)"; exit 0; } ;;
      health-env)
        step "re-check health_command"
        run_cmd "$TX/cmds/health-env" / || { result "unhealthy health_command failed after the bake (see $TX/log)"; exit 0; } ;;
    esac
  done < "$TX/ops"
  result ok
  exit 0
fi

# Preconditions, under the lock: the host is still what the plan was made against.
while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    pre-state)
      if [ "$a" = - ]; then [ ! -e "$S/state.json" ] || { result "stale state.json appeared"; exit 0; }
      else
        have=$(sha256sum < "$S/state.json" 2>/dev/null | cut -c1-64)
        [ "$have" = "$a" ] || { result "stale state.json changed since the plan"; exit 0; }
      fi ;;
    pre-link)
      have=$(readlink "$RT/$a/current" 2>/dev/null || echo -)
      [ "$have" = "$b" ] || { result "stale runtime $a is now at $have"; exit 0; } ;;
    pre-file)
      if [ -f "$R$a" ] && [ ! -L "$R$a" ]; then have=$(sha256sum < "$R$a" | cut -c1-64); else have=-; fi
      [ "$have" = "$b" ] || { result "stale file $a changed since the plan"; exit 0; } ;;
  esac
done < "$TX/ops"

# Every undo record, written before anything changes and flushed to disk once: the state to
# return to, copies of the files that will be replaced, the links that will move, the
# directories that will appear. Undoing a step that never ran is harmless, so a rollback
# replays all of it.
mkdir -p "$TX/undo" || exit 1
: > "$J"; : > "$TX/done"
if [ -f "$S/state.json" ]; then cp -p "$S/state.json" "$TX/state.before" || fail "pending: cannot copy state.json"; fi
while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    install)
      [ -d "$RT/$a/$b" ] && continue
      [ -d "$RT/$a" ] || note rtdir "$a"
      note install "$a" "$b" ;;
    file)
      if [ -e "$R$b" ]; then
        cp -p "$R$b" "$TX/undo/$a" || fail "file $b: cannot back it up"
        note file "$a" "$b" present
      else
        note file "$a" "$b" absent
      fi ;;
    link) note link "$a" "$c" "$b" ;;
  esac
done < "$TX/ops"
sync "$J" "$TX/undo" "$TX" 2>/dev/null || sync
[ -f "$TX/state.before" ] && sync_file "$TX/state.before"
# `pending`, before anything changes.
put_state "$TX/state.pending.json" || fail "pending: cannot write state.json"

while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    install) # runtime version sha256
      [ -d "$RT/$a/$b" ] && continue
      step "install $a $b"
      part="$S/staging/$c.$FLOTILLA_TXN.part"; art="$S/staging/$c.tar.gz"
      if [ -f "$part" ]; then
        have=$(sha256sum < "$part" | cut -c1-64)
        [ "$have" = "$c" ] || fail "install $a $b: uploaded artifact has sha256 $have, expected $c"
        mv -f "$part" "$art" || fail "install $a $b: cannot move the artifact into place"
      fi
      [ -f "$art" ] || fail "install $a $b: artifact $c was not uploaded"
      mkdir -p "$RT/$a" || fail "install $a $b: cannot create $RT/$a"
      inc="$RT/$a/.incoming-$FLOTILLA_TXN"
      rm -rf "$inc"; mkdir "$inc" || fail "install $a $b: cannot create $inc"
      tar --no-same-owner --no-same-permissions -xzf "$art" -C "$inc" >> "$TX/log" 2>&1 ||
        { rm -rf "$inc"; fail "install $a $b: unpacking failed (see $TX/log)"; }
      mv -T "$inc" "$RT/$a/$b" || { rm -rf "$inc"; fail "install $a $b: cannot rename into place"; } ;;
    file) # n path mode owner group took_over_backup_id
      step "file $b"
      target="$R$b"
      mkdir -p "$(dirname "$target")" || fail "file $b: cannot create its directory"
      if [ -e "$target" ] && [ "$f" != - ] && [ ! -e "$S/backup/$f" ]; then
        mkdir -p "$S/backup" && cp -p "$target" "$S/backup/$f" || fail "file $b: cannot keep the original in backup/"
      fi
      did file "$a"
      tmp="$target.flotilla-$FLOTILLA_TXN"
      cp "$TX/files/$a" "$tmp" && chmod "$c" "$tmp" || { rm -f "$tmp"; fail "file $b: cannot write it"; }
      if [ "$d" != - ] || [ "$e" != - ]; then
        own=""; [ "$d" != - ] && own=$d; [ "$e" != - ] && own="$own:$e"
        chown "$own" "$tmp" >> "$TX/log" 2>&1 || { rm -f "$tmp"; fail "file $b: chown $own failed"; }
      fi
      sync_file "$tmp"; mv -f "$tmp" "$target" || { rm -f "$tmp"; fail "file $b: cannot rename into place"; } ;;
    link) # runtime version previous|-
      step "switch $a to $b"
      did link "$a"
      set_link "$a" "$b" || fail "switch $a: cannot move the current link" ;;
    onchange) # n path
      step "on_change for $b"
      run_cmd "$TX/cmds/onchange-$a" / || fail "on_change of $b failed (exit $?, see $TX/log)" ;;
    activate) # runtime version previous
      [ -f "$TX/cmds/activate-$a" ] || continue
      step "activate $a $b"
      run_cmd "$TX/cmds/activate-$a" "$RT/$a/$b" "$a" "$b" "$c" || fail "activate hook of $a $b failed (see $TX/log)" ;;
    health) # runtime version timeout retries interval
      step "health $a $b"
      n=0
      until ( cd "$RT/$a/$b" && FLOTILLA_RUNTIME=$a FLOTILLA_VERSION=$b FLOTILLA_VERSION_DIR="$RT/$a/$b" \
          FLOTILLA_ROOT=$R timeout "$c" sh "$TX/cmds/health-$a" ) >> "$TX/log" 2>&1 < /dev/null; do
        n=$((n + 1)); [ "$n" -gt "$d" ] && fail "health check of $a $b failed after $n attempt(s) (see $TX/log)"
        sleep "$e"
      done ;;
    health-env)
      step "environment health_command"
      run_cmd "$TX/cmds/health-env" / || fail "health_command failed (see $TX/log)" ;;
    commit)
      step "commit"
      put_state "$TX/state.final.json" || fail "commit: cannot write state.json"
      break ;;
  esac
done < "$TX/ops"

# After the commit: deletions and pruning. The new state is in place; failures are reported.
errors=""
committed=0
while IFS="$TAB" read -r op a b c d e f; do
  [ "$op" = commit ] && { committed=1; continue; }
  [ $committed = 1 ] || continue
  case $op in
    remove-runtime) # runtime
      step "remove $a"
      if [ -f "$TX/cmds/remove-$a" ]; then run_cmd "$TX/cmds/remove-$a" "$RT/$a" "$a" || errors="$errors; remove hook of $a failed"; fi
      rm -rf "$RT/$a" || errors="$errors; cannot remove $RT/$a" ;;
    remove-file) # path backup_id|-
      step "remove $a"
      if [ "$b" != - ] && [ -f "$S/backup/$b" ]; then
        cp -p "$S/backup/$b" "$R$a.flotilla-restore" && mv -f "$R$a.flotilla-restore" "$R$a" && rm -f "$S/backup/$b" ||
          errors="$errors; cannot restore the original of $a"
      else
        rm -f "$R$a" || errors="$errors; cannot remove $a"
      fi ;;
    prune) # runtime active previous keep
      kept=0
      for v in $(ls -1t "$RT/$a" 2>/dev/null); do
        case $v in current|.*|*[!A-Za-z0-9._+-]*) continue ;; esac
        [ -d "$RT/$a/$v" ] || continue
        if [ "$v" = "$b" ] || [ "$v" = "$c" ]; then continue; fi
        kept=$((kept + 1))
        [ "$kept" -le $(( d - 1 - $( [ "$c" != - ] && echo 1 || echo 0 ) )) ] && continue
        step "prune $a $v"
        rm -rf "$RT/$a/$v" || errors="$errors; cannot prune $a $v"
      done ;;
  esac
done < "$TX/ops"
rm -f "$S"/staging/*."$FLOTILLA_TXN".part
if [ -n "$errors" ]; then result "committed-with-errors ${errors#; }"; else result ok; fi
