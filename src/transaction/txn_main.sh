# Flotilla's host transaction, part 2 of 2: the flow (txn_lib.sh, which the controller puts
# first, explains the whole).

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
        cap "health check of $a $b (re-check)"
        ( cd "$RT/$a/$b" && FLOTILLA_RUNTIME=$a FLOTILLA_VERSION=$b FLOTILLA_VERSION_DIR="$RT/$a/$b" \
            FLOTILLA_PREVIOUS_VERSION=${f#-} FLOTILLA_ROOT=$R exec timeout "$c" sh "$TX/cmds/health-$a" 9>&- ) \
            >> "$CAP" 2>&1 < /dev/null
        uncap || { result "unhealthy health check of $a $b failed after the bake (see $TX/log)"; exit 0; } ;;
      health-env)
        step "re-check health_command"
        run_cmd "health_command (re-check)" "$TX/cmds/health-env" / || { result "unhealthy health_command failed after the bake (see $TX/log)"; exit 0; } ;;
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
# An unpack happens before `pending` is written (below), so a runtime directory it created
# may be left empty: removed with its leftover (rmdir leaves a directory that holds anything).
for inc in "$RT"/*/.incoming-* "$RT"/*/.current-*; do
  [ -e "$inc" ] || [ -L "$inc" ] || continue
  rm -rf "$inc"
  case $inc in */.incoming-*) rmdir "${inc%/*}" 2>/dev/null ;; esac
done

# One sha256sum for everything the transaction checks: state.json, each managed file that is
# a regular file now, the artifact of each version to install (staging/<sha256>.tar.gz,
# uploaded with this transaction: checked here whenever it is used, never trusted for its
# name). Under the command timeout when it reads a managed file; state_dir's files alone are
# Flotilla's own (root-only staging/, the uploads this transaction just wrote): run bare.
set --
[ -f "$S/state.json" ] && set -- "$S/state.json"
bound=""
while IFS="$TAB" read -r op a b c d e f; do
  case $op in
    pre-file) ! link_in_parents "$a" && [ -f "$R$a" ] && [ ! -L "$R$a" ] && { set -- "$@" "$R$a"; bound=T; } ;;
    install) [ ! -d "$RT/$a/$b" ] && [ -f "$S/staging/$c.tar.gz" ] && [ ! -L "$S/staging/$c.tar.gz" ] && set -- "$@" "$S/staging/$c.tar.gz" ;;
  esac
done < "$TX/ops"
sums=""
if [ "$#" -gt 0 ]; then
  sums=$($bound sha256sum -- "$@" 2>> "$TX/log") || {
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
  # The controller sends the bytes of state.json it read as state.before, and pre-state proved
  # them unchanged; copied here only when a bundle lacks it.
  [ -f "$TX/state.before" ] || cp -p "$S/state.json" "$TX/state.before" || fail "pending: cannot copy state.json"
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
          # backup/ is its owner's alone: an original keeps its own mode there (a restore puts
          # it back as it was), so a world-readable secret must not be readable through it
          # (DESIGN §4). The chmod also closes a backup/ made by an older Flotilla; it runs only
          # when a file is taken over.
          if [ ! -L "$bk" ] && [ ! -e "$bk" ]; then
            { [ -d "$S/backup" ] || mkdir -m 700 "$S/backup"; } && chmod 700 "$S/backup" &&
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

# A failed unpack (runtime $a, version $b, tar's status $1 and messages $tm, $inc the partial
# version): names the cause and leaves nothing behind. GNU tar reports a write that ran out of
# room as "Wrote only N of M bytes", without errno, so the free space left where it unpacked
# decides whether to say "No space left on device" (one `df`, on this failure path only).
# Removed before anything is written (the log may sit on the full filesystem): every partial
# version of this transaction, and its uploads of versions not on the host (nothing will use
# them; an artifact whose recorded version is installed stays, as in housekeep). One `rm`.
unpack_failed() {
  why "$1"
  uf_cause=""
  case $tm in
    *"No space left on device"*) uf_cause="No space left on device" ;;
    *)
      uf_avail=""; uf_prev=""
      # shellcheck disable=SC2046
      set -- $(df -Pk "$inc" 2>/dev/null)
      for uf_f; do case $uf_f in *%) uf_avail=$uf_prev ;; esac; uf_prev=$uf_f; done
      case $uf_avail in '' | *[!0-9]*) ;; *) [ "$uf_avail" -ge 1024 ] || uf_cause="No space left on device" ;; esac ;;
  esac
  set -- "$RT"/*/.incoming-"$FLOTILLA_TXN"
  while IFS="$TAB" read -r uf_op uf_a uf_b uf_c uf_rest; do
    [ "$uf_op" = install ] && [ ! -d "$RT/$uf_a/$uf_b" ] || continue
    r=""; v=""
    [ -f "$S/staging/$uf_c.for" ] && IFS="$TAB" read -r r v uf_rest < "$S/staging/$uf_c.for"
    [ -n "$r" ] && [ -d "$RT/$r/$v" ] && continue
    set -- "$@" "$S/staging/$uf_c.tar.gz" "$S/staging/$uf_c.for"
  done < "$TX/ops"
  rm -rf -- "$@"
  [ -z "$tm" ] || printf '%s\n' "$tm" >> "$TX/log"
  # tar's first message is the one that names what failed (the last is its summary).
  uf_first=""
  while IFS= read -r l; do
    case $l in '' | *"Exiting with failure status"*) ;; *) uf_first=$l; break ;; esac
  done <<EOF
$tm
EOF
  [ "${#uf_first}" -le 300 ] || uf_first="tar's message is too long to show here"
  if [ -n "$uf_cause" ]; then
    fail "install $a $b: unpacking failed$W: $uf_cause in $FLOTILLA_RUNTIMES_DIR${uf_first:+ ($uf_first)}; the partial version and the upload were removed: free space there, or make the artifact smaller (see $TX/log)"
  fi
  fail "install $a $b: unpacking failed$W${uf_first:+: $uf_first} (see $TX/log)"
}

# Installs are unpacked and checked before `pending` is written: into .incoming-<txn> beside
# the versions, which nothing reads and the next transaction removes if this one is cut off.
# The `find` that checks and flushes an unpacked version flushes the journal and `pending`
# too (one `sync` and one `timeout` fewer); `pending` is then renamed into place before the
# version is (the first change). A failure here rolls back like any other: the journal is
# complete, and undoing steps that never ran is harmless.
unpacked=0
while IFS="$TAB" read -r op a b c d e f g; do
  [ "$op" = install ] || continue
  [ -d "$RT/$a/$b" ] && continue
  step "install $a $b"
  art="$S/staging/$c.tar.gz"
  # staging/ is root's; anything but a regular file there is tampering, never opened.
  for x in "$art" "$S/staging/$c.for"; do
    if [ -L "$x" ] || { [ -e "$x" ] && [ ! -f "$x" ]; }; then
      fail "install $a $b: $FLOTILLA_STATE_DIR/staging/${x##*/} is not a regular file (a FIFO, device, directory or link); Flotilla never opens one (remove it)"
    fi
  done
  [ -f "$art" ] || fail "install $a $b: artifact $c was not uploaded"
  # Uploaded under its final name (no rename): a cut-off upload leaves a file that fails here.
  sum_of "$art"
  [ "$SUM" = "$c" ] || fail "install $a $b: uploaded artifact has sha256 $SUM, expected $c"
  inc="$RT/$a/.incoming-$FLOTILLA_TXN"
  # One mkdir: -p only when the runtime's directory is new (journaled as rtdir).
  if [ -d "$RT/$a" ]; then mkdir "$inc"; else mkdir -p "$inc"; fi || fail "install $a $b: cannot create $inc"
  # tar's messages are held in memory, not appended to the log: an unpack fails mostly
  # because the disk is full, and then the log (in state_dir, often the same filesystem)
  # cannot take them and the cause is lost. The command substitution's child becomes
  # `timeout` (exec): as many process starts as `T tar ... >> log` (counted with strace).
  tm=$(timeout "$TO" tar --no-same-owner --no-same-permissions -xzf "$art" -C "$inc" 2>&1) ||
    unpack_failed $?
  [ -z "$tm" ] || printf '%s\n' "$tm" >> "$TX/log"
  # shellcheck disable=SC2086
  check_unpacked $flush "$TX/state.pending.put"
  if [ -n "$BAD" ]; then
    rm -rf "$inc"
    fail "install $a $b: refused, the unpacked artifact holds $BAD; the controller's inspection does not accept this, so this host's tar unpacked something else (check the artifact and the host's tar)"
  fi
  # The unpacked files and directories are on disk (check_unpacked flushed them) before
  # the commit's state.json names this version; the rename into place is flushed with it.
  step "unpacked and flushed $a $b"
  unpacked=1
done < "$TX/ops"
# `pending`, before anything changes, in the same flush as the journal (a check_unpacked's,
# or its own).
if [ "$unpacked" = 1 ]; then mv -T -f "$TX/state.pending.put" "$S/state.json" || fail "pending: cannot write state.json"
else
  # shellcheck disable=SC2086
  put_state "$TX/state.pending.put" $flush || fail "pending: cannot write state.json"
fi

written=""
while IFS="$TAB" read -r op a b c d e f g; do
  case $op in
    install) # runtime version sha256: unpacked, checked and flushed above
      [ -d "$RT/$a/$b" ] && continue
      inc="$RT/$a/.incoming-$FLOTILLA_TXN"
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
      tmp="$target.flotilla-$FLOTILLA_TXN"
      # Owner and mode are given to the bundle's copy first, in the root-only transaction
      # directory, where no one else can swap the name (it already has the mode: launch.sh
      # unpacks the bundle with -p). cp then creates the temporary file fresh
      # (--remove-destination: it removes whatever is at the name, then opens with O_EXCL, so
      # a link or FIFO planted at the temporary name, whose id is in state.json, is replaced,
      # never written through), and sets its owner,
      # then its mode, on the descriptor it opened (fchown, fchmod: seen with strace;
      # --preserve=mode alone when the file has no owner or group, so a setgid directory's
      # group stays). A chmod or chown by name in the file's directory, which a local user may
      # own, would follow a link that user swapped in at the temporary name (to /etc/shadow,
      # say) after the copy; so would `set -C` with dash, whose noclobber opens an existing
      # link to a FIFO or device for writing (tried). A file with an owner starts as many
      # processes as before (timeout, chown, cp, mv instead of cp, chown, chmod, mv): chmod
      # runs only to put back setuid/setgid bits, which chown clears.
      if [ "$d" != - ] || [ "$e" != - ]; then
        own=""; [ "$d" != - ] && own=$d; [ "$e" != - ] && own="$own:$e"
        # Bounded: chown looks the names up (NSS: LDAP, sssd), and a lookup can hang.
        T chown "$own" "$TX/files/$a" >> "$TX/log" 2>&1 || { why $?; fail "file $b: chown $own failed$W"; }
        case $c in [2-7]???) chmod "$c" "$TX/files/$a" || fail "file $b: cannot set mode $c" ;; esac
        keep=mode,ownership
      else
        keep=mode
      fi
      did file "$a"
      # Its source is the bundle's own copy and it creates its target: it cannot block, no
      # timeout needed.
      umask 077
      cp -T --preserve=$keep --remove-destination "$TX/files/$a" "$tmp" ||
        { umask 022; rm -f "$tmp"; fail "file $b: cannot write it"; }
      umask 022
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
      on_change "$a" "on_change $b" || {
        oc=$?
        if [ -f "$TX/cmds/onchange-$a.sensitive" ]; then fail "on_change of $b failed (exit $oc; output not shown: sensitive)"; fi
        fail "on_change of $b failed (exit $oc, see $TX/log)"
      } ;;
    activate) # runtime version previous
      [ -f "$TX/cmds/activate-$a" ] || continue
      step "activate $a $b"
      run_cmd "activate hook of $a $b" "$TX/cmds/activate-$a" "$RT/$a/$b" "$a" "$b" "$c" || fail "activate hook of $a $b failed (see $TX/log)" ;;
    health) # runtime version timeout retries interval previous|-
      step "health $a $b"
      n=0
      # -v: every attempt's output, in one file.
      cap "health check of $a $b"
      until ( cd "$RT/$a/$b" && FLOTILLA_RUNTIME=$a FLOTILLA_VERSION=$b FLOTILLA_VERSION_DIR="$RT/$a/$b" \
          FLOTILLA_PREVIOUS_VERSION=${f#-} FLOTILLA_ROOT=$R exec timeout "$c" sh "$TX/cmds/health-$a" 9>&- ) \
          >> "$CAP" 2>&1 < /dev/null; do
        n=$((n + 1)); [ "$n" -gt "$d" ] && { uncap; fail "health check of $a $b failed after $n attempt(s) (see $TX/log)"; }
        sleep "$e"
      done
      uncap ;;
    health-env)
      step "environment health_command"
      run_cmd "health_command" "$TX/cmds/health-env" / || fail "health_command failed (see $TX/log)" ;;
    commit)
      step "commit"
      # The written files and the runtime directories that received a version reach the disk
      # in the same `sync` as the new state.json, before it is renamed into place: a committed
      # state never names a file or version that is not on disk.
      set --
      while IFS= read -r w; do [ -n "$w" ] && set -- "$@" "$w"; done <<EOF
$written
EOF
      put_state "$TX/state.final.put" "$@" || fail "commit: cannot write state.json"
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
    remove-runtime) # runtime version|-
      step "remove $a"
      if [ -f "$TX/cmds/remove-$a" ]; then run_cmd "remove hook of $a" "$TX/cmds/remove-$a" "$RT/$a" "$a" "${b#-}" || errors="$errors; remove hook of $a failed"; fi
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
# Uploads by an older Flotilla went to staging/*.part first; under the lock (launch.sh) any
# left is an interrupted one.
for p in "$S"/staging/*.part; do [ -e "$p" ] && old="$old $p"; done
housekeep
if [ -n "$errors" ]; then result "committed-with-errors ${errors#; }"; else result ok; fi
