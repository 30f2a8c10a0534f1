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
#
# Every command that can block runs under the command timeout (T: `timeout` is one more
# process start, about 1.5 ms, paid only where a command reads or flushes something a host
# user or a hostile artifact could have made slow or special: sha256sum, tar, find, sync, the
# backup copies). Nothing here opens a FIFO or device for reading: paths are checked just
# before, sha256sum gets names (never this shell's redirected stdin, which would block the
# shell itself), and copies of what is at a managed path use `cp -PR`, which recreates a
# link, FIFO or device instead of following or opening it. Commands that touch only
# Flotilla's own root-only files (the bundle, state_dir) run bare.
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
T() { timeout "$TO" "$@"; }
# W: why a bounded command failed, for messages ($1: its exit status).
why() { W=""; [ "$1" = 124 ] && W=" (did not finish within command_timeout, ${TO}s)"; :; }
# SUM: the sha256 of $1 in $sums (one sha256sum run over every file the preconditions and
# installs need), or "-".
sum_of() {
  SUM=-
  while read -r h n; do [ "$n" = "$1" ] && SUM=${h#\\}; done <<EOF
$sums
EOF
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
    { T sync -- "$@" "$S/state.json.tmp-$FLOTILLA_TXN" 2>/dev/null ||
      { [ $? != 124 ] && T sync; }; } &&
    mv -f "$S/state.json.tmp-$FLOTILLA_TXN" "$S/state.json"
}

# Runs a command file with the hook environment, bounded by the command timeout; its output
# goes to $OUT (the log, whose last lines the controller shows when something fails).
OUT="$TX/log"
run_cmd() { # cmdfile cwd [runtime version previous]
  ( cd "$2" 2>/dev/null || cd /
    FLOTILLA_RUNTIME=${3:-} FLOTILLA_VERSION=${4:-} FLOTILLA_PREVIOUS_VERSION=${5:-} \
    FLOTILLA_VERSION_DIR=${4:+$RT/$3/$4} FLOTILLA_ROOT=$R \
      exec timeout "$TO" sh "$1" < /dev/null 9>&- ) >> "$OUT" 2>&1
}
# An on_change command; one that a sensitive file triggers (cmds/onchange-K.sensitive) writes
# to a root-only file of its own, never to the log: its output may hold the secret, and the
# log's tail reaches the controller's terminal and audit log.
on_change() { # k
  if [ -f "$TX/cmds/onchange-$1.sensitive" ]; then
    OUT="$TX/onchange-$1.out"
    printf 'on_change %s: output not shown: sensitive (root can read %s on the host)\n' "$1" "$OUT" >> "$TX/log"
  fi
  run_cmd "$TX/cmds/onchange-$1" /
  oc=$?; OUT="$TX/log"; return $oc
}

set_link() { # runtime version|-
  if [ "$2" = - ]; then rm -f "$RT/$1/current"; return; fi
  ln -sfn "$2" "$RT/$1/.current-$FLOTILLA_TXN" && mv -T -f "$RT/$1/.current-$FLOTILLA_TXN" "$RT/$1/current"
}

# Replays the journal backwards; then re-runs on_change and activate hooks for what was
# restored, and puts back the state.json from before the transaction.
RBE=""
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
      file) # n path absent|present|link [mode]
        # A local user may have swapped a parent directory for a link since the apply: checked
        # again right before each write, and nothing is written through one. The copy's mode
        # is put back in the root-only undo/ (never on a path a user could swap), the copy is
        # made with --remove-destination (a fresh O_EXCL file: a planted link or FIFO at the
        # temporary name is replaced, not followed or opened) and renamed with mv -T (a
        # link or directory at the target is replaced, never entered). -P: a link taken over
        # is restored as the link it was.
        if link_in_parents "$b"; then
          ok=1; RBE="$RBE; not restoring $b: its parent directory $LP is a symlink (replace it with a directory, then recover again)"
        elif [ "$c" = absent ]; then rm -f "$R$b" || ok=1
        elif { [ -z "$e" ] || chmod "$e" "$TX/undo/$a"; } &&
            T cp -PpT --remove-destination "$TX/undo/$a" "$R$b.flotilla-undo" >> "$TX/log" 2>&1; then
          if link_in_parents "$b"; then
            ok=1; RBE="$RBE; not restoring $b: its parent directory $LP became a symlink"
          else
            mv -T -f "$R$b.flotilla-undo" "$R$b" || ok=1
          fi
        else ok=1; RBE="$RBE; cannot restore $b"
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
    [ "$kind" = onchange ] && [ -f "$TX/cmds/onchange-$a" ] && on_change "$a" || true
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
  if rollback; then result "rolled-back $*"; else result "broken $*; rollback failed${RBE:-, see $TX/log}"; fi
  exit 0
}

# Keeps the active version, the previous one unless it is "-", and the most recently
# installed others up to `keep` versions in all (never fewer than active + previous); removes
# the rest. Install order is Flotilla's own record: the sequence number each install writes
# into its artifact's staging/<sha256>.for. Never directory mtimes: a tarball sets those (its
# "./" entry becomes the version directory). Versions without a record (installed by an older
# Flotilla) count as the oldest. Built-ins only, apart from the `rm`.
prune() { # runtime active previous|- keep
  pr_n=$(( $4 - 1 )); [ "$3" = - ] || pr_n=$((pr_n - 1))
  # Nothing to remove (the usual case) is found with a glob: the runtime holds no more
  # entries than `current`, active, previous and n others.
  pr_rt=$1 pr_act=$2 pr_prev=$3
  pr_allowed=$pr_n; [ "$pr_allowed" -ge 0 ] || pr_allowed=0
  pr_allowed=$((pr_allowed + 1)) # active
  [ "$pr_prev" = - ] || pr_allowed=$((pr_allowed + 1))
  [ -L "$RT/$pr_rt/current" ] && pr_allowed=$((pr_allowed + 1))
  set -- "$RT/$pr_rt"/*
  [ "$#" -gt "$pr_allowed" ] || return 0
  pr_order=""
  for fo in "$S"/staging/*.for; do
    [ -f "$fo" ] || continue
    r=""; v=""; s=""
    IFS="$TAB" read -r r v s < "$fo"
    [ "$r" = "$pr_rt" ] || continue
    case $s in ''|*[!0-9]*) s=0 ;; esac
    pr_order="$pr_order$s $v$NL"
  done
  pr_cands=""
  for d in "$RT/$pr_rt"/*; do
    v=${d##*/}
    case $v in current|.*|*[!A-Za-z0-9._+-]*) continue ;; esac
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    [ "$v" = "$pr_act" ] || [ "$v" = "$pr_prev" ] || pr_cands="$pr_cands $v"
  done
  pr_keep=" "
  while [ "$pr_n" -gt 0 ]; do
    pr_best=""; pr_bs=-1
    for v in $pr_cands; do
      case $pr_keep in *" $v "*) continue ;; esac
      pr_s=0
      while read -r s w; do [ "$w" = "$v" ] && [ "$s" -gt "$pr_s" ] && pr_s=$s; done <<EOF
$pr_order
EOF
      [ "$pr_s" -ge "$pr_bs" ] && { pr_best=$v; pr_bs=$pr_s; }
    done
    [ -n "$pr_best" ] || break
    pr_keep="$pr_keep$pr_best "; pr_n=$((pr_n - 1))
  done
  for v in $pr_cands; do
    case $pr_keep in *" $v "*) continue ;; esac
    step "prune $pr_rt $v"
    rm -rf "$RT/$pr_rt/$v" || errors="$errors; cannot prune $pr_rt $v"
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
    r=""; v=""; s=""
    [ -f "${a%.tar.gz}.for" ] && IFS="$TAB" read -r r v s < "${a%.tar.gz}.for"
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
  if rollback; then result ok; else result "broken rollback failed${RBE:-, see $TX/log}"; fi
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

# One sha256sum for everything the transaction checks: state.json, each managed file that is
# a regular file now, each artifact uploaded for this transaction (names are digest.txn.part).
set --
[ -f "$S/state.json" ] && set -- "$S/state.json"
while IFS="$TAB" read -r op a b c d e f; do
  [ "$op" = pre-file ] && ! link_in_parents "$a" && [ -f "$R$a" ] && [ ! -L "$R$a" ] && set -- "$@" "$R$a"
done < "$TX/ops"
for p in "$S"/staging/*."$FLOTILLA_TXN".part; do [ -f "$p" ] && set -- "$@" "$p"; done
sums=""
if [ "$#" -gt 0 ]; then
  sums=$(T sha256sum -- "$@" 2>> "$TX/log") || {
    why $?; [ -z "$W" ] || { result "error computing sha256 digests on the host$W; nothing was touched"; exit 0; }
  }
fi

# Preconditions, under the lock: the host is still what the plan was made against.
while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    pre-state)
      if [ "$a" = - ]; then [ ! -e "$S/state.json" ] && [ ! -L "$S/state.json" ] || { result "stale state.json appeared"; exit 0; }
      else
        sum_of "$S/state.json"
        [ "$SUM" = "$a" ] || { result "stale state.json changed since the plan"; exit 0; }
      fi ;;
    pre-link)
      if [ -L "$RT/$a/current" ]; then have=$(readlink "$RT/$a/current"); else have=-; fi
      [ "$have" = "$b" ] || { result "stale runtime $a is now at $have"; exit 0; } ;;
    pre-file) # path sha256|- [link: the plan saw a symlink there]
      if link_in_parents "$a"; then
        result "rolled-back file $a: its parent directory $LP is a symlink; Flotilla never follows one (replace the link with a directory, or drop the file)"
        exit 0
      fi
      if [ "${c:-}" = link ]; then
        [ -L "$R$a" ] || { result "stale file $a changed since the plan (it was a symlink)"; exit 0; }
      else
        SUM=-; [ -f "$R$a" ] && [ ! -L "$R$a" ] && sum_of "$R$a"
        [ "$SUM" = "$b" ] || { result "stale file $a changed since the plan"; exit 0; }
      fi ;;
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
      # Regular files are replaced, a symlink is taken over as the link it is (its target
      # text kept, never followed); anything else is refused unread: a FIFO or a device
      # would block (with the host lock held) or read without end.
      if [ ! -L "$R$b" ] && [ -e "$R$b" ] && [ ! -f "$R$b" ]; then
        fail "file $b: a directory, FIFO or device is at this path; Flotilla manages regular files only, and takes over symlinks (move it away, or drop the file from the manifests)"
      fi
      if [ -e "$R$b" ] || [ -L "$R$b" ]; then
        # -P copies a link as a link, -R recreates a FIFO or device swapped in since the check
        # instead of opening it; what was copied is judged on the copy, in the root-only undo/.
        T cp -PpRT -- "$R$b" "$TX/undo/$a" >> "$TX/log" 2>&1 || { why $?; fail "file $b: cannot back it up$W"; }
        if [ ! -L "$TX/undo/$a" ] && [ ! -f "$TX/undo/$a" ]; then
          rm -rf "$TX/undo/$a"
          fail "file $b: a directory, FIFO or device is at this path; Flotilla manages regular files only, and takes over symlinks (move it away, or drop the file from the manifests)"
        fi
        # A file taken over keeps its original in backup/ (DESIGN §4), as it is (a link
        # stays a link), copied from the journal's copy rather than read again; an original
        # kept by an earlier transaction stays.
        if [ "$f" != - ]; then
          bk="$S/backup/$f"
          if [ ! -L "$bk" ] && [ -e "$bk" ] && [ ! -f "$bk" ]; then
            fail "file $b: $FLOTILLA_STATE_DIR/backup/$f is not a regular file or link (a FIFO, device or directory); Flotilla never opens one (remove it)"
          fi
          if [ ! -L "$bk" ] && [ ! -e "$bk" ]; then
            { [ -d "$S/backup" ] || mkdir -p "$S/backup"; } &&
              T cp -PpT --remove-destination "$TX/undo/$a" "$bk" >> "$TX/log" 2>&1 ||
              { why $?; fail "file $b: cannot keep the original in backup/$W"; }
            # A link is flushed with its directory: `sync` would open (follow) the link.
            if [ -L "$bk" ]; then flush="$flush $S/backup"; else flush="$flush $bk"; fi
          fi
        fi
        if [ -L "$TX/undo/$a" ]; then
          note file "$a" "$b" link
        elif [ "${g:-}" = sensitive ]; then
          m=$(stat -c %a "$TX/undo/$a") && chmod 600 "$TX/undo/$a" || fail "file $b: cannot protect its backup"
          note file "$a" "$b" present "$m"
        else
          note file "$a" "$b" present
        fi
        [ -L "$TX/undo/$a" ] || flush="$flush $TX/undo/$a" # a link: with $TX/undo
      else
        note file "$a" "$b" absent
      fi ;;
    link) note link "$a" "$c" "$b" ;;
  esac
done < "$TX/ops"
# `pending`, before anything changes, in the same flush as the journal.
# shellcheck disable=SC2086
put_state "$TX/state.pending.json" $flush || fail "pending: cannot write state.json"

# lex_out LINK TARGET: succeeds if TARGET (of the link at LINK, relative to the version
# directory) is absolute or climbs out of the version directory, read as text.
lex_out() {
  case $2 in /*) return 0 ;; esac
  lx_d=0; lx_p=$1
  while [ "${lx_p#*/}" != "$lx_p" ]; do lx_d=$((lx_d + 1)); lx_p=${lx_p#*/}; done
  lx_t=$2/
  while [ -n "$lx_t" ]; do
    lx_c=${lx_t%%/*}; lx_t=${lx_t#*/}
    case $lx_c in
      '' | .) ;;
      ..) lx_d=$((lx_d - 1)); [ "$lx_d" -ge 0 ] || return 0 ;;
      *) lx_d=$((lx_d + 1)) ;;
    esac
  done
  return 1
}

# check_unpacked RUNTIME VERSION: the unpacked version in $inc holds no device, FIFO or
# socket, no setuid/setgid or hard-linked file, and no symlink that is absolute or leaves the
# version directory (as text, and resolved: a link may climb out through another link);
# flushes every file and directory of it to disk on the way. Sets BAD to the first offence.
# One `find` (plus a `sync` for the files, and a `realpath` only when there are links): the
# controller inspected the tarball already; this is for a host whose `tar` differs.
check_unpacked() {
  BAD=""
  cd -P "$inc" || { BAD="cannot enter $inc"; return; }
  ck_base=$PWD; cd /
  ck_out=$(T find "$inc" \( -type b -o -type c -o -type p -o -type s \) -printf 'S %P\n' \
    -o -type l -printf 'L %P\n' -printf 'T %l\n' -exec realpath -m -- {} + \
    -o -type f \( -perm /6000 -o -links +1 \) -printf 'F %P\n' \
    -o \( -type f -o -type d \) -exec sync -- {} + 2>> "$TX/log")
  ck_rc=$?
  ck_k=0; ck_l=""
  set --
  while IFS= read -r l; do
    case $l in
      "S "*) BAD="${l#S } (a device, FIFO or socket)" ;;
      "F "*) BAD="${l#F } (a setuid/setgid or hard-linked file)" ;;
      "L "*) ck_l=${l#L }; set -- "$@" "$ck_l" ;;
      "T "*) lex_out "$ck_l" "${l#T }" && BAD="$ck_l (a symlink to ${l#T }, outside the version directory)" ;;
      /*)
        ck_k=$((ck_k + 1))
        case $l in
          "$ck_base" | "$ck_base"/*) ;;
          *) eval "ck_e=\${$ck_k:-?}"; BAD="$ck_e (a symlink that resolves outside the version directory)" ;;
        esac ;;
      '') ;;
      *) BAD="an entry whose name or link target holds a newline" ;;
    esac
    [ -z "$BAD" ] || return 0
  done <<CK
$ck_out
CK
  if [ "$ck_rc" != 0 ]; then why $ck_rc; BAD="cannot check or flush the unpacked files$W (see $TX/log)"; fi
}

written=""
while IFS="$TAB" read -r op a b c d e f g; do
  case $op in
    install) # runtime version sha256
      [ -d "$RT/$a/$b" ] && continue
      step "install $a $b"
      part="$S/staging/$c.$FLOTILLA_TXN.part"; art="$S/staging/$c.tar.gz"
      # staging/ is root's; anything but a regular file there is tampering, never opened.
      for x in "$art" "$S/staging/$c.for"; do
        if [ -L "$x" ] || { [ -e "$x" ] && [ ! -f "$x" ]; }; then
          fail "install $a $b: $FLOTILLA_STATE_DIR/staging/${x##*/} is not a regular file (a FIFO, device, directory or link); Flotilla never opens one (remove it)"
        fi
      done
      if [ -f "$part" ]; then
        sum_of "$part"
        [ "$SUM" = "$c" ] || fail "install $a $b: uploaded artifact has sha256 $SUM, expected $c"
        mv -f "$part" "$art" || fail "install $a $b: cannot move the artifact into place"
      fi
      [ -f "$art" ] || fail "install $a $b: artifact $c was not uploaded"
      [ -d "$RT/$a" ] || mkdir -p "$RT/$a" || fail "install $a $b: cannot create $RT/$a"
      inc="$RT/$a/.incoming-$FLOTILLA_TXN"
      mkdir "$inc" || fail "install $a $b: cannot create $inc"
      T tar --no-same-owner --no-same-permissions -xzf "$art" -C "$inc" >> "$TX/log" 2>&1 ||
        { why $?; rm -rf "$inc"; fail "install $a $b: unpacking failed$W (see $TX/log)"; }
      check_unpacked
      if [ -n "$BAD" ]; then
        rm -rf "$inc"
        fail "install $a $b: refused, the unpacked artifact holds $BAD; the controller's inspection does not accept this, so this host's tar unpacked something else (check the artifact and the host's tar)"
      fi
      # The unpacked files and directories are on disk (check_unpacked flushed them) before
      # the commit's state.json names this version; the rename into place is flushed with it.
      step "unpacked and flushed $a $b"
      mv -T "$inc" "$RT/$a/$b" || { rm -rf "$inc"; fail "install $a $b: cannot rename into place"; }
      written="$written$RT/$a
"
      # Which version this artifact is, for housekeeping, and its install sequence number
      # (one more than any recorded), for pruning.
      sq=0
      for fo in "$S"/staging/*.for; do
        [ -f "$fo" ] || continue
        s=""; IFS="$TAB" read -r r v s < "$fo"
        case $s in '' | *[!0-9]*) ;; *) [ "$s" -le "$sq" ] || sq=$s ;; esac
      done
      printf '%s\t%s\t%s\n' "$a" "$b" $((sq + 1)) > "$S/staging/$c.for" ;;
    file) # n path mode owner group took_over_backup_id [sensitive]
      step "file $b"
      target="$R$b"
      # Checked again right before writing: a parent may have become a link since.
      if link_in_parents "$b"; then
        fail "file $b: its parent directory $LP is a symlink; Flotilla never follows one (replace the link with a directory, or drop the file)"
      fi
      [ -d "${target%/*}/" ] || mkdir -p "${target%/*}/" || fail "file $b: cannot create its directory"
      did file "$a"
      tmp="$target.flotilla-$FLOTILLA_TXN"
      # Private until its mode is set; the mode last, since chown clears setuid/setgid bits.
      # --remove-destination makes cp create a fresh file (O_EXCL): a link or FIFO planted at
      # the temporary name (the id is in state.json) is replaced, not written through. Its
      # source is the bundle's own copy, so it cannot block: no timeout needed.
      umask 077
      cp -T --remove-destination "$TX/files/$a" "$tmp" || { umask 022; rm -f "$tmp"; fail "file $b: cannot write it"; }
      umask 022
      if [ "$d" != - ] || [ "$e" != - ]; then
        own=""; [ "$d" != - ] && own=$d; [ "$e" != - ] && own="$own:$e"
        chown -h "$own" "$tmp" >> "$TX/log" 2>&1 || { rm -f "$tmp"; fail "file $b: chown $own failed"; }
      fi
      chmod "$c" "$tmp" || { rm -f "$tmp"; fail "file $b: cannot set mode $c"; }
      if link_in_parents "$b"; then
        fail "file $b: its parent directory $LP became a symlink; Flotilla never follows one (replace the link with a directory, or drop the file)"
      fi
      # Flushed once, with the commit: until then a crash leaves `pending`, and the recovery
      # restores the journal's copy, which is on disk. mv -T: a directory (or a link to one)
      # at the target is replaced or refused, never entered.
      mv -T -f "$tmp" "$target" || { rm -f "$tmp"; fail "file $b: cannot rename into place"; }
      written="$written$target
" ;;
    link) # runtime version previous|-
      step "switch $a to $b"
      did link "$a"
      set_link "$a" "$b" || fail "switch $a: cannot move the current link" ;;
    onchange) # n path
      step "on_change for $b"
      on_change "$a" || {
        oc=$?
        if [ -f "$TX/cmds/onchange-$a.sensitive" ]; then fail "on_change of $b failed (exit $oc; output not shown: sensitive)"; fi
        fail "on_change of $b failed (exit $oc, see $TX/log)"
      } ;;
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
      # The written files and the runtime directories that received a version reach the disk
      # in the same `sync` as the new state.json, before it is renamed into place: a committed
      # state never names a file or version that is not on disk.
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
      # A file Flotilla took over gets its original back (a link as the link it was), not
      # deleted (DESIGN §4). Parents checked right before each write; written as in rollback.
      step "remove $a"
      bk="$S/backup/$b"
      if link_in_parents "$a"; then
        errors="$errors; not removing $a: its parent directory $LP is a symlink"
      elif [ "$b" != - ] && [ ! -L "$bk" ] && [ -e "$bk" ] && [ ! -f "$bk" ]; then
        errors="$errors; not restoring the original of $a: $FLOTILLA_STATE_DIR/backup/$b is not a regular file or link (left $a as it is)"
      elif [ "$b" != - ] && { [ -L "$bk" ] || [ -f "$bk" ]; }; then
        if ! T cp -PpT --remove-destination "$bk" "$R$a.flotilla-restore" >> "$TX/log" 2>&1; then
          errors="$errors; cannot restore the original of $a"
        elif link_in_parents "$a"; then
          errors="$errors; not restoring $a: its parent directory $LP became a symlink"
        else
          mv -T -f "$R$a.flotilla-restore" "$R$a" && rm -f "$bk" || errors="$errors; cannot restore the original of $a"
        fi
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
