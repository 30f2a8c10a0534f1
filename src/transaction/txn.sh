# Flotilla's host transaction (DESIGN §6.1). Constant text, shipped in the transaction bundle
# and run detached from the connection (setsid), so it finishes or rolls back by itself even
# if the controller goes away. Inputs: the bundle directory ($TX: ops, files/, cmds/, undo/,
# state.pending.json, state.final.json) and the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR,
# FLOTILLA_RUNTIMES_DIR, FLOTILLA_HOST, FLOTILLA_ENVIRONMENT, FLOTILLA_TXN,
# FLOTILLA_COMMAND_TIMEOUT, FLOTILLA_KEEP_VERSIONS, FLOTILLA_MODE=apply|recover|health|finish).
# Manifest values are never part of this text: names, paths and digests come from
# tab-separated op lines (validated by the controller), commands from files under cmds/.
#
# The undo record of every step is in $TX/journal, on disk, before the first change, so a
# rollback — now, or by a later `recover` after a crash — replays the journal backwards. The
# result goes to $TX/result: "ok", "stale <why>", "locked", "rolled-back <step>: <why>",
# "broken <why>", "unhealthy <why>", or "committed-with-errors <why>" (the new state is in
# place; a deletion or prune failed).
#
# Every fork counts: a fork+exec costs about 1.5 ms of host CPU here, and 50 hosts share the
# machine in the benchmark; the previous version spent about 55 per transaction (a `date` per
# step, a `sync` per file, `sha256sum | cut`), this one about 20. Builtins where they do.
export LC_ALL=C
set -u
umask 022
R=${FLOTILLA_ROOT%/}
S="$R$FLOTILLA_STATE_DIR"
RT="$R$FLOTILLA_RUNTIMES_DIR"
TX="$S/txn/$FLOTILLA_TXN"
TO=${FLOTILLA_COMMAND_TIMEOUT:-300}
MODE=${FLOTILLA_MODE:-apply}
TAB='	'
NL='
'
J="$TX/journal"

# One short write; launch.sh reads it only after this script has exited.
result() { printf '%s\n' "$*" > "$TX/result"; }
step() { printf '%s\n' "$*" >> "$TX/steps"; }
note() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "${2:-}" "${3:-}" "${4:-}" "${5:-}" >> "$J"; }
# Which steps really ran (not flushed: after a crash it may miss the last steps, and the
# rollback then re-runs a hook too many, never one too few for a restored file or link).
did() { printf '%s\t%s\n' "$1" "$2" >> "$TX/done"; }
# Sets LP to the first directory of host path $1 (below the root) that is a symbolic link, and
# succeeds, if there is one: a local user who owns a directory on a managed path could swap it
# for a link to /root/.ssh. Built-ins only (no fork per file).
link_in_parents() {
  lp_rest=${1#/}; lp_cur=$R; LP=
  while [ "${lp_rest#*/}" != "$lp_rest" ]; do
    lp_cur="$lp_cur/${lp_rest%%/*}"; lp_rest=${lp_rest#*/}
    if [ -L "$lp_cur" ]; then LP=${lp_cur#"$R"}; return 0; fi
  done
  return 1
}
ran() { # kind name: did the step run?
  [ -f "$TX/done" ] || return 1
  while IFS= read -r l; do [ "$l" = "$1$TAB$2" ] && return 0; done < "$TX/done"
  return 1
}

# Writes $1 (a bundle file) to state.json atomically; $2.. are more files to flush in the
# same `sync` call (one fork instead of one per file).
put_state() {
  src=$1; shift
  cp "$src" "$S/state.json.tmp-$FLOTILLA_TXN" &&
    { sync "$@" "$S/state.json.tmp-$FLOTILLA_TXN" 2>/dev/null || sync; } &&
    mv -f "$S/state.json.tmp-$FLOTILLA_TXN" "$S/state.json"
}

# Runs a command file with the hook environment, bounded by the command timeout.
run_cmd() { # cmdfile cwd [runtime version previous]
  ( cd "$2" 2>/dev/null || cd /
    FLOTILLA_RUNTIME=${3:-} FLOTILLA_VERSION=${4:-} FLOTILLA_PREVIOUS_VERSION=${5:-} \
    FLOTILLA_VERSION_DIR=${4:+$RT/$3/$4} FLOTILLA_ROOT=$R \
      exec timeout "$TO" sh "$1" < /dev/null 9>&- ) >> "$TX/log" 2>&1
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
  # Reversed with the shell (journals are a few lines): no `tac` fork.
  rev=""
  while IFS= read -r l; do rev="$l
$rev"; done < "$J"
  # What to re-run, one line each, deduplicated with `case` (no `sort -u` fork).
  rerun="$NL"
  while IFS="$TAB" read -r kind a b c e; do
    case $kind in
      link)
        set_link "$a" "$b" || ok=1
        if [ "$b" != - ] && ran link "$a"; then rerun="${rerun}activate$TAB$a$TAB$b$TAB$c$NL"; fi ;;
      install) rm -rf "$RT/$a/$b" || ok=1 ;;
      rtdir) rmdir "$RT/$a" 2>/dev/null ;;
      file)
        if [ "$c" = absent ]; then rm -f "$R$b" || ok=1
        else
          cp -p "$TX/undo/$a" "$R$b.flotilla-undo" &&
            { [ -z "$e" ] || chmod "$e" "$R$b.flotilla-undo"; } &&
            mv -f "$R$b.flotilla-undo" "$R$b" || ok=1
        fi
        if [ -f "$TX/onchange-for/$a" ] && ran file "$a"; then
          read -r k < "$TX/onchange-for/$a"
          case $rerun in *"${NL}onchange$TAB$k$NL"*) ;; *) rerun="${rerun}onchange$TAB$k$NL" ;; esac
        fi ;;
    esac
  done <<EOF
$rev
EOF
  # Hooks again for what was restored: each distinct on_change once, then activate hooks.
  while IFS="$TAB" read -r kind a b c; do
    [ "$kind" = onchange ] && [ -f "$TX/cmds/onchange-$a" ] && run_cmd "$TX/cmds/onchange-$a" / || true
  done <<EOF
$rerun
EOF
  while IFS="$TAB" read -r kind a b c; do
    [ "$kind" = activate ] && [ -f "$TX/cmds/activate-$a" ] && run_cmd "$TX/cmds/activate-$a" "$RT/$a/$b" "$a" "$b" "$c" || true
  done <<EOF
$rerun
EOF
  if [ -f "$TX/state.before" ]; then put_state "$TX/state.before" || ok=1
  else rm -f "$S/state.json" || ok=1; fi
  return $ok
}

fail() { # step message
  step "failed: $*"
  if rollback; then result "rolled-back $*"; else result "broken $*; rollback failed, see $TX/log"; fi
  exit 0
}

# Keeps the active version, the previous one unless it is "-", and the newest others up to
# `keep` versions in all (never fewer than active + previous); removes the rest.
prune() { # runtime active previous|- keep
  n=$(( $4 - 1 )); [ "$3" = - ] || n=$((n - 1))
  # Nothing to remove (the usual case) is found with a glob, without the `ls` fork: the
  # runtime holds no more entries than `current`, active, previous and n others.
  rt=$1 act=$2 prev=$3
  allowed=$n; [ "$allowed" -ge 0 ] || allowed=0
  allowed=$((allowed + 1)) # active
  [ "$prev" = - ] || allowed=$((allowed + 1))
  [ -L "$RT/$rt/current" ] && allowed=$((allowed + 1))
  set -- "$RT/$rt"/*
  [ "$#" -gt "$allowed" ] || return 0
  set -- "$rt" "$act" "$prev"
  for v in $(ls -1t "$RT/$1" 2>/dev/null); do
    case $v in current|.*|*[!A-Za-z0-9._+-]*) continue ;; esac
    [ -d "$RT/$1/$v" ] || continue
    if [ "$v" = "$2" ] || [ "$v" = "$3" ]; then continue; fi
    if [ "$n" -gt 0 ]; then n=$((n - 1)); continue; fi
    step "prune $1 $v"
    rm -rf "$RT/$1/$v" || errors="$errors; cannot prune $1 $v"
  done
}

# Housekeeping after a commit (DESIGN §4): journals of the last 5 transactions stay (and any
# without a result yet: one in flight); artifacts stay while their version is unpacked here.
housekeep() {
  k=0
  set -- "$S"/txn/*
  [ "$#" -gt 5 ] || set -- # five or fewer journals: no `ls` fork
  [ "$#" = 0 ] ||
  for t in $(ls -1t "$S/txn"); do
    k=$((k + 1))
    [ "$k" -le 5 ] || [ "$t" = "$FLOTILLA_TXN" ] && continue
    case $t in *[!A-Za-z0-9-]*) continue ;; esac
    [ -f "$S/txn/$t/result" ] || continue
    old="$old $S/txn/$t"
  done
  for a in "$S"/staging/*.tar.gz; do
    [ -f "$a" ] || continue
    r=""; v=""
    [ -f "${a%.tar.gz}.for" ] && IFS="$TAB" read -r r v < "${a%.tar.gz}.for"
    [ -n "$r" ] && [ -d "$RT/$r/$v" ] && continue
    old="$old $a ${a%.tar.gz}.for"
  done
  # One `rm` for everything (paths are Flotilla's own: digests, transaction ids).
  # shellcheck disable=SC2086
  [ -z "$old" ] || rm -rf $old || errors="$errors; cannot prune old journals or artifacts"
}

# Compare-and-swap for recover, health and finish: act only while state.json is byte for byte
# what this transaction wrote ($@: "pending", "final"); otherwise a later transaction (or a
# hand edit, or an earlier rollback) owns the host now, and nothing is touched.
fence() {
  [ -f "$J" ] || { result "stale transaction $FLOTILLA_TXN has no journal on this host; nothing was touched"; exit 0; }
  [ -f "$S/state.json" ] || { result "stale state.json is gone since transaction $FLOTILLA_TXN (rolled back or removed); nothing was touched"; exit 0; }
  for w in "$@"; do
    cmp -s "$S/state.json" "$TX/state.$w.json" && return 0
  done
  if cmp -s "$S/state.json" "$TX/state.pending.json"; then
    result "stale transaction $FLOTILLA_TXN never committed (state.json is still its pending record); recover it instead"
  else
    result "stale state.json was written by a later transaction (or this one was already rolled back) since transaction $FLOTILLA_TXN; nothing was touched"
  fi
  exit 0
}

# launch.sh takes the host lock before anything arrives (uploads included) and hands it down
# on fd 9; taken here only when run some other way.
if [ "${FLOTILLA_LOCKED:-0}" != 1 ]; then
  exec 9>>"$S/lock"
  if ! flock -n 9; then result "locked another transaction holds $FLOTILLA_STATE_DIR/lock"; exit 0; fi
fi

if [ "$MODE" = recover ]; then
  # Also used to roll back a committed transaction when its rollout halts: the journal holds
  # everything needed to return to the state from before it.
  fence pending final
  step "rolling back to the state before this transaction"
  if rollback; then result ok; else result "broken rollback failed, see $TX/log"; fi
  exit 0
fi

if [ "$MODE" = health ]; then
  # A bake's re-check: the transaction's health checks again, changing nothing.
  fence final
  while IFS="$TAB" read -r op a b c d e f; do
    case $op in
      health)
        step "re-check health $a $b"
        ( cd "$RT/$a/$b" && FLOTILLA_RUNTIME=$a FLOTILLA_VERSION=$b FLOTILLA_VERSION_DIR="$RT/$a/$b" \
            FLOTILLA_ROOT=$R exec timeout "$c" sh "$TX/cmds/health-$a" 9>&- ) >> "$TX/log" 2>&1 < /dev/null ||
          { result "unhealthy health check of $a $b failed after the bake (see $TX/log)"; exit 0; } ;;
      health-env)
        step "re-check health_command"
        run_cmd "$TX/cmds/health-env" / || { result "unhealthy health_command failed after the bake (see $TX/log)"; exit 0; } ;;
    esac
  done < "$TX/ops"
  result ok
  exit 0
fi

if [ "$MODE" = finish ]; then
  # The rollout completed: nothing will roll this transaction back any more, so each of its
  # runtimes goes down to exactly keep_versions (the previous version is no longer special).
  fence final
  errors=""; old=""
  while IFS="$TAB" read -r op a b c d e f; do
    [ "$op" = prune ] && prune "$a" "$b" - "${FLOTILLA_KEEP_VERSIONS:-$d}"
  done < "$TX/ops"
  housekeep
  if [ -n "$errors" ]; then result "committed-with-errors ${errors#; }"; else result ok; fi
  exit 0
fi

# Leftovers of an interrupted unpack or link switch: under the lock nothing else writes them.
for inc in "$RT"/*/.incoming-* "$RT"/*/.current-*; do
  [ -e "$inc" ] || [ -L "$inc" ] || continue
  rm -rf "$inc"
done

# Preconditions, under the lock: the host is still what the plan was made against.
while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    pre-state)
      if [ "$a" = - ]; then [ ! -e "$S/state.json" ] || { result "stale state.json appeared"; exit 0; }
      else
        have=$(sha256sum < "$S/state.json" 2>/dev/null)
        [ "${have%% *}" = "$a" ] || { result "stale state.json changed since the plan"; exit 0; }
      fi ;;
    pre-link)
      if [ -L "$RT/$a/current" ]; then have=$(readlink "$RT/$a/current"); else have=-; fi
      [ "$have" = "$b" ] || { result "stale runtime $a is now at $have"; exit 0; } ;;
    pre-file)
      if link_in_parents "$a"; then
        result "rolled-back file $a: its parent directory $LP is a symlink; Flotilla never follows one (replace the link with a directory, or drop the file)"
        exit 0
      fi
      if [ -f "$R$a" ] && [ ! -L "$R$a" ]; then have=$(sha256sum < "$R$a"); have=${have%% *}; else have=-; fi
      [ "$have" = "$b" ] || { result "stale file $a changed since the plan"; exit 0; } ;;
  esac
done < "$TX/ops"

# Every undo record, written before anything changes and flushed to disk with `pending`: the
# state to return to, copies of the files that will be replaced, the links that will move,
# the directories that will appear. Undoing a step that never ran is harmless, so a rollback
# replays all of it. Copies of sensitive files are root's only (0600, in a 0700 directory);
# the journal keeps their mode so that the restore puts it back.
: > "$J"; : > "$TX/done"
[ -d "$TX/undo" ] || mkdir -m 700 "$TX/undo" || exit 1
flush="$J $TX/undo $TX"
if [ -f "$S/state.json" ]; then
  cp -p "$S/state.json" "$TX/state.before" || fail "pending: cannot copy state.json"
  flush="$flush $TX/state.before"
fi
while IFS="$TAB" read -r op a b c d e f g; do
  case $op in
    install)
      [ -d "$RT/$a/$b" ] && continue
      [ -d "$RT/$a" ] || note rtdir "$a"
      note install "$a" "$b" ;;
    file)
      if link_in_parents "$b"; then
        fail "file $b: its parent directory $LP is a symlink; Flotilla never follows one (replace the link with a directory, or drop the file)"
      fi
      # Only regular files are read or replaced: reading a FIFO or a device would block (with
      # the host lock held) or read without end, and a link would be followed.
      if [ -L "$R$b" ] || { [ -e "$R$b" ] && [ ! -f "$R$b" ]; }; then
        fail "file $b: a symlink, directory, FIFO or device is at this path; Flotilla manages regular files only (move it away, or drop the file from the manifests)"
      fi
      if [ -e "$R$b" ]; then
        cp -p "$R$b" "$TX/undo/$a" || fail "file $b: cannot back it up"
        if [ "${g:-}" = sensitive ]; then
          m=$(stat -c %a "$TX/undo/$a") && chmod 600 "$TX/undo/$a" || fail "file $b: cannot protect its backup"
          note file "$a" "$b" present "$m"
        else
          note file "$a" "$b" present
        fi
        flush="$flush $TX/undo/$a"
      else
        note file "$a" "$b" absent
      fi ;;
    link) note link "$a" "$c" "$b" ;;
  esac
done < "$TX/ops"
# `pending`, before anything changes, in the same flush as the journal.
# shellcheck disable=SC2086
put_state "$TX/state.pending.json" $flush || fail "pending: cannot write state.json"

sums=""
written=""
while IFS="$TAB" read -r op a b c d e f g; do
  case $op in
    install) # runtime version sha256
      [ -d "$RT/$a/$b" ] && continue
      step "install $a $b"
      part="$S/staging/$c.$FLOTILLA_TXN.part"; art="$S/staging/$c.tar.gz"
      if [ -f "$part" ]; then
        # Every artifact of this transaction in one sha256sum (names are digest.txn.part).
        if [ -z "$sums" ]; then sums=$(sha256sum "$S"/staging/*."$FLOTILLA_TXN".part) || sums=" "; fi
        have=-
        while read -r h n; do [ "$n" = "$part" ] && have=$h; done <<EOF
$sums
EOF
        [ "$have" = "$c" ] || fail "install $a $b: uploaded artifact has sha256 $have, expected $c"
        mv -f "$part" "$art" || fail "install $a $b: cannot move the artifact into place"
      fi
      [ -f "$art" ] || fail "install $a $b: artifact $c was not uploaded"
      [ -d "$RT/$a" ] || mkdir -p "$RT/$a" || fail "install $a $b: cannot create $RT/$a"
      inc="$RT/$a/.incoming-$FLOTILLA_TXN"
      mkdir "$inc" || fail "install $a $b: cannot create $inc"
      tar --no-same-owner --no-same-permissions -xzf "$art" -C "$inc" >> "$TX/log" 2>&1 ||
        { rm -rf "$inc"; fail "install $a $b: unpacking failed (see $TX/log)"; }
      mv -T "$inc" "$RT/$a/$b" || { rm -rf "$inc"; fail "install $a $b: cannot rename into place"; }
      # Which version this artifact is, for housekeeping.
      printf '%s\t%s\n' "$a" "$b" > "$S/staging/$c.for" ;;
    file) # n path mode owner group took_over_backup_id [sensitive]
      step "file $b"
      target="$R$b"
      [ -d "${target%/*}/" ] || mkdir -p "${target%/*}/" || fail "file $b: cannot create its directory"
      if [ -e "$target" ] && [ "$f" != - ] && [ ! -e "$S/backup/$f" ]; then
        mkdir -p "$S/backup" && cp -p "$target" "$S/backup/$f" || fail "file $b: cannot keep the original in backup/"
      fi
      did file "$a"
      tmp="$target.flotilla-$FLOTILLA_TXN"
      # Private until its mode is set; the mode last, since chown clears setuid/setgid bits.
      (umask 077 && cp "$TX/files/$a" "$tmp") || { rm -f "$tmp"; fail "file $b: cannot write it"; }
      if [ "$d" != - ] || [ "$e" != - ]; then
        own=""; [ "$d" != - ] && own=$d; [ "$e" != - ] && own="$own:$e"
        chown "$own" "$tmp" >> "$TX/log" 2>&1 || { rm -f "$tmp"; fail "file $b: chown $own failed"; }
      fi
      chmod "$c" "$tmp" || { rm -f "$tmp"; fail "file $b: cannot set mode $c"; }
      # Flushed once, with the commit: until then a crash leaves `pending`, and the recovery
      # restores the journal's copy, which is on disk.
      mv -f "$tmp" "$target" || { rm -f "$tmp"; fail "file $b: cannot rename into place"; }
      written="$written$target
" ;;
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
          FLOTILLA_ROOT=$R exec timeout "$c" sh "$TX/cmds/health-$a" 9>&- ) >> "$TX/log" 2>&1 < /dev/null; do
        n=$((n + 1)); [ "$n" -gt "$d" ] && fail "health check of $a $b failed after $n attempt(s) (see $TX/log)"
        sleep "$e"
      done ;;
    health-env)
      step "environment health_command"
      run_cmd "$TX/cmds/health-env" / || fail "health_command failed (see $TX/log)" ;;
    commit)
      step "commit"
      # The written files reach the disk in the same `sync` as the new state.json, before it
      # is renamed into place: a committed state never names a file that is not on disk.
      set --
      while IFS= read -r w; do [ -n "$w" ] && set -- "$@" "$w"; done <<EOF
$written
EOF
      put_state "$TX/state.final.json" "$@" || fail "commit: cannot write state.json"
      break ;;
  esac
done < "$TX/ops"

# After the commit: deletions and pruning. The new state is in place; failures are reported.
errors=""
old=""
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
      if link_in_parents "$a"; then
        errors="$errors; not removing $a: its parent directory $LP is a symlink"
      elif [ "$b" != - ] && [ -f "$S/backup/$b" ]; then
        cp -p "$S/backup/$b" "$R$a.flotilla-restore" && mv -f "$R$a.flotilla-restore" "$R$a" && rm -f "$S/backup/$b" ||
          errors="$errors; cannot restore the original of $a"
      else
        rm -f "$R$a" || errors="$errors; cannot remove $a"
      fi ;;
    prune) # runtime active previous|- keep: the previous version stays until `finish`
      prune "$a" "$b" "$c" "$d" ;;
  esac
done < "$TX/ops"
# Uploads happen under the lock (launch.sh), so any other .part is an interrupted one.
for p in "$S"/staging/*.part; do [ -e "$p" ] && old="$old $p"; done
housekeep
if [ -n "$errors" ]; then result "committed-with-errors ${errors#; }"; else result ok; fi
