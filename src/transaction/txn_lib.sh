# Flotilla's host transaction (DESIGN §6.1), part 1 of 2: settings and functions. The
# controller appends txn_main.sh (the flow) and ships the two as one constant script, txn.sh,
# in the transaction bundle; it runs detached from the connection (setsid), so it finishes or
# rolls back by itself even if the controller goes away. Inputs: the bundle directory ($TX:
# ops, files/, cmds/, undo/, state.pending.json, state.final.json, the copies
# state.pending.put and state.final.put that are renamed into place, and state.before when
# the host had a state.json) and the environment (FLOTILLA_ROOT, FLOTILLA_STATE_DIR,
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
# Every process start counts: one costs about 1.5 ms of host CPU here, and 50 hosts share the
# machine in the benchmark. Builtins where they do; what the controller already has (the
# state.json it read, the states to write, file modes) comes in the bundle rather than being
# copied or set here. A fresh install of one runtime starts 24 processes in all, launch.sh
# included (34 before this was counted; see the commit log).
#
# Every command that can block runs under the command timeout (T: `timeout` is one more
# process start, paid only where a command reads or flushes something a host user or a
# hostile artifact could have made slow or special: sha256sum of a managed file, tar, find,
# sync, the backup copies; and chown, whose name lookups (NSS: LDAP, sssd) can hang). Nothing
# here opens a FIFO or device for reading: paths are checked just before, sha256sum gets names
# (never this shell's redirected stdin, which would block the shell itself), and copies of
# what is at a managed path use `cp -PR`, which recreates a link, FIFO or device instead of
# following or opening it. Nothing changes the owner or mode of a name in a directory a user
# may own (chmod and chown follow a link swapped in there): they are set on root-only copies,
# or by cp on the file it just created. Commands that touch only Flotilla's own root-only
# files (the bundle, state_dir) run bare.
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

# Renames $1 (a file of this transaction's directory, which is in state_dir: same file
# system) to state.json, atomically, after flushing it; $2.. are more files to flush in the same
# `sync` call (one process start instead of one per file). The controller sends each state to
# write twice (state.X.json stays for the fences' comparisons, state.X.put is renamed): no
# copy here.
put_state() {
  { T sync -- "$@" 2>/dev/null || { [ $? != 124 ] && T sync; }; } &&
    mv -T -f "$1" "$S/state.json"
}

# Runs a command file with the hook environment, bounded by the command timeout; its output
# goes to $OUT (the log, whose last lines the controller shows when something fails). $1 names
# the command for -v.
OUT="$TX/log"
run_cmd() { # label cmdfile cwd [runtime version previous]
  cap "$1"
  ( cd "$3" 2>/dev/null || cd /
    FLOTILLA_RUNTIME=${4:-} FLOTILLA_VERSION=${5:-} FLOTILLA_PREVIOUS_VERSION=${6:-} \
    FLOTILLA_VERSION_DIR=${5:+$RT/$4/$5} FLOTILLA_ROOT=$R \
      exec timeout "$TO" sh "$2" < /dev/null 9>&- ) >> "$CAP" 2>&1
  uncap
}
# -v (FLOTILLA_OUTPUT=1): `cap LABEL` sends the next command's output (to CAP) into a file of
# its own first, out/N, named in `outputs`: launch.sh sends the end of each with the result.
# `uncap` then appends it to the log (one `cat` per command, only with -v) and keeps the
# command's status. Never for output that has a file of its own (a sensitive file's on_change).
CAP=$OUT; NOUT=0
cap() {
  CAP=$OUT
  [ "${FLOTILLA_OUTPUT:-}" = 1 ] && [ "$OUT" = "$TX/log" ] || return 0
  NOUT=$((NOUT + 1))
  : > "$TX/out/$NOUT" && printf '%s\t%s\n' "$NOUT" "$1" >> "$TX/outputs" && CAP="$TX/out/$NOUT"
  :
}
uncap() {
  uc=$?
  [ "$CAP" = "$OUT" ] || cat -- "$CAP" >> "$OUT"
  CAP=$OUT
  return $uc
}
# An on_change command; one that a sensitive file triggers (cmds/onchange-K.sensitive) writes
# to a root-only file of its own, never to the log: its output may hold the secret, and the
# log's tail (and with -v each command's output) reaches the controller's terminal and audit
# log.
on_change() { # k label
  if [ -f "$TX/cmds/onchange-$1.sensitive" ]; then
    OUT="$TX/onchange-$1.out"
    printf 'on_change %s: output not shown: sensitive (root can read %s on the host)\n' "$1" "$OUT" >> "$TX/log"
  fi
  run_cmd "$2" "$TX/cmds/onchange-$1" /
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
    [ "$kind" = onchange ] && [ -f "$TX/cmds/onchange-$a" ] && on_change "$a" "on_change (rollback)" || true
  done <<EOF
$rerun
EOF
  while IFS="$TAB" read -r kind a b c; do
    [ "$kind" = activate ] && [ -f "$TX/cmds/activate-$a" ] &&
      run_cmd "activate hook of $a $b (rollback)" "$TX/cmds/activate-$a" "$RT/$a/$b" "$a" "$b" "$c" || true
  done <<EOF
$rerun
EOF
  # state.before is renamed back (consumed): once it is in place, the fences make any further
  # recover of this transaction stale, and while the rename has not happened it is still here.
  if [ -f "$TX/state.before" ]; then put_state "$TX/state.before" || ok=1
  else rm -f "$S/state.json" || ok=1; fi
  return $ok
}

fail() { # step message
  step "failed: $*"
  if rollback; then
    # What an interrupted upload left, and this one's artifacts no installed version needs,
    # do not survive a transaction that rolled back either (DESIGN §4).
    old=""; housekeep
    result "rolled-back $*"
  else result "broken $*; rollback failed${RBE:-, see $TX/log}"; fi
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
  # A journal without a result was cut off: an upload interrupted before txn.sh ran, or a run
  # killed before it wrote `pending`, which changed nothing. Removed whatever their number
  # (DESIGN §4), except one whose `pending` or committed state is what state.json holds (killed
  # after writing it: its recovery or a later rollback needs the journal). Under the lock no
  # other transaction is under way.
  for t in "$S"/txn/*; do
    [ -d "$t" ] || continue
    [ "${t##*/}" = "$FLOTILLA_TXN" ] || [ -f "$t/result" ] && continue
    case ${t##*/} in *[!A-Za-z0-9-]*) continue ;; esac
    cmp -s "$S/state.json" "$t/state.pending.json" 2>/dev/null && continue
    cmp -s "$S/state.json" "$t/state.final.json" 2>/dev/null && continue
    old="$old $t"
  done
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
    # A record that is not a regular file (a FIFO planted there) is left for the operator, as
    # the transaction's own check reports it.
    old="$old $a"; [ -f "${a%.tar.gz}.for" ] && old="$old ${a%.tar.gz}.for"
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

# check_unpacked FILE..: the unpacked version in $inc holds no device, FIFO or socket, no
# setuid/setgid or hard-linked file, and no symlink that is absolute or leaves the version
# directory (as text, and resolved: a link may climb out through another link); flushes every
# file and directory of it to disk on the way, together with FILE.. (the journal and
# `pending`: one `sync` for both). Sets BAD to the first offence. One `find` (plus its `sync`,
# and a `realpath` only when there are links): the controller inspected the tarball already;
# this is for a host whose `tar` differs.
check_unpacked() {
  BAD=""
  cd -P "$inc" || { BAD="cannot enter $inc"; return; }
  ck_base=$PWD; cd /
  ck_out=$(T find "$inc" \( -type b -o -type c -o -type p -o -type s \) -printf 'S %P\n' \
    -o -type l -printf 'L %P\n' -printf 'T %l\n' -exec realpath -m -- {} + \
    -o -type f \( -perm /6000 -o -links +1 \) -printf 'F %P\n' \
    -o \( -type f -o -type d \) -exec sync -- "$@" {} + 2>> "$TX/log")
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

