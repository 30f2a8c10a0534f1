# Flotilla's probe: reports what a host has, for any transport. Constant text: every input
# comes from the environment (FLOTILLA_ROOT, FLOTILLA_RUNTIMES_DIR, FLOTILLA_STATE_DIR,
# FLOTILLA_PROBE_FULL, FLOTILLA_PROBE_DF) or stdin (one request per line: "S <path>" to stat
# a file, "C <path>" to stat it and send its content, "I <clock> <sha256> <key> <path>" to
# stat it with what an earlier probe saw of it). Every record is
# "<tag> <fields> <length>\n<payload>\n" so that nothing a host returns can be mistaken for
# structure.
export LC_ALL=C
set -u
rec() { printf '%s %s\n' "$1" "${#2}"; printf '%s\n' "$2"; }
# What cannot change while a shell lives: the tools the transactions need.
tools() {
  for t in tar sha256sum flock mv stat timeout setsid cmp find; do
    command -v "$t" >/dev/null 2>&1 || rec missing "$t"
  done
  # One fork, not the three of `mv --help | grep` (forks are most of a probe's host CPU).
  case $(mv --help 2>/dev/null) in *--no-target-directory*) ;; *) rec missing "mv -T" ;; esac
  # Whether launch.sh can make the pipe an upload arrives on 1 MiB (F_SETPIPE_SZ, Linux;
  # perl is the one common tool that makes the call): builtins only. Not checked: a
  # pipe-max-size lowered below 1 MiB (it does not bind root, who runs the transaction), and
  # a sudo that logs I/O (its own pipe sits in between); there the host's pipe stays as it
  # was, and only the upload's pacing differs.
  if [ -e /proc/sys/fs/pipe-max-size ] && command -v perl >/dev/null 2>&1; then rec pipes perl; fi
}
# A resident shell (one that serves every probe of a connection) runs this once with
# FLOTILLA_PRIME=1 and hands its output to each probe as $flotilla_once: the boot time (for
# the clock below) and the user the probe runs as, then the tools records. `mv --help` and
# reading /proc/stat are then paid once per connection, not once per drift check.
if [ "${FLOTILLA_PRIME:-0}" = 1 ]; then
  bt=- me=-
  { while IFS=' ' read -r k v _; do [ "$k" = btime ] && { bt=$v; break; }; done < /proc/stat; } 2>/dev/null
  { while read -r k _ v _; do [ "$k" = Uid: ] && { me=$v; break; }; done < /proc/self/status; } 2>/dev/null
  echo "$bt $me"
  tools
  exit 0
fi
R=${FLOTILLA_ROOT%/}
me=0
# stat's format for a file and its directories: the numbers, then the owner's and the group's
# names on lines of their own.
STAT3='%a %u %s %d:%i:%.9Z %g
%U
%G'
echo "flotilla-probe 1"
if [ "${FLOTILLA_PROBE_FULL:-0}" = 1 ]; then
  # The host's clock. Under a resident shell without a process start: the boot time plus this
  # probe's own start (clock ticks since boot, USER_HZ = 100 on Linux, from /proc/self/stat;
  # the probe runs in a subshell forked for this request). A `date` was about a tenth of a
  # warm drift check's host CPU (200 hosts, measured). Only a skew beyond two minutes is
  # reported, so a 10 ms tick does not matter. Otherwise, and whenever that fails, `date`.
  now=
  if [ -n "${flotilla_once+x}" ]; then
    first=${flotilla_once%%"
"*}
    facts=${flotilla_once#"$first"}; facts=${facts#"
"}
    bt=${first%% *}; me=${first#* }
    case $me in '' | *[!0-9]*) me=0 ;; esac
    if { read -r self < /proc/self/stat; } 2>/dev/null; then
      set -f
      set -- ${self##*") "}
      set +f
      tk=${20:-x}
      case $tk:$bt in
        *[!0-9:]* | :* | *: | ?????????????*:* | *:?????????????*) ;;
        *) now=$((bt + tk / 100)) ;;
      esac
    fi
  fi
  rec clock "${now:-$(date +%s)}"
  if [ -n "${flotilla_once+x}" ]; then
    [ -z "$facts" ] || printf '%s\n' "$facts"
  else
    tools
  fi
  st="$R$FLOTILLA_STATE_DIR/state.json"
  if [ -f "$st" ]; then
    sz=$(wc -c < "$st")
    if [ "$sz" -gt 16777216 ]; then rec state-too-large "$sz"
    else printf 'state %s\n' "$sz"; cat "$st"; printf '\n'; fi
  fi
  rt="$R$FLOTILLA_RUNTIMES_DIR"
  # Free space where runtimes unpack and where uploads and the state live, each measured on the
  # nearest directory that exists (where it will be created): one `df` for both, its lines sent
  # as they are (the controller parses them, and tells one shared filesystem from two). The
  # one process start costs about 0.8 ms of host CPU per full probe (measured: 2 x 300 local
  # probes of a host with one runtime, user+sys 4.4 ms each without it, 5.2 ms with it);
  # built-ins find the directories. A link planted on these paths could only make the numbers wrong, which
  # makes a warning wrong, never a write go elsewhere.
  fd1=$rt; while [ -n "$fd1" ] && [ ! -d "$fd1" ]; do fd1=${fd1%/*}; done
  fd2="$R$FLOTILLA_STATE_DIR"; while [ -n "$fd2" ] && [ ! -d "$fd2" ]; do fd2=${fd2%/*}; done
  # Only when the controller needs it (runtimes to install, or a disk limit).
  [ "${FLOTILLA_PROBE_DF:-1}" = 1 ] && rec df "$(df -Pk "${fd1:-/}" "${fd2:-/}" 2>/dev/null)"
  # CPU load and memory in use, for `host_limits` (DESIGN §6.4; disk comes from `df` above):
  # built-ins reading /proc and /sys, no process start. Fields a host lacks are sent as "-",
  # and anything but digits ends the count: the values are the host's, hence untrusted.
  l1=-; n=0; mt=-; ma=-
  { read -r l1 _ < /proc/loadavg; } 2>/dev/null
  if { read -r on < /sys/devices/system/cpu/online; } 2>/dev/null; then
    IFS=,
    for r in $on; do
      case $r in
        ''|*[!0-9-]*|*-*-*|-*|*-) n=0; break ;;
        *-*) n=$((n + ${r#*-} - ${r%-*} + 1)) ;;
        *) n=$((n + 1)) ;;
      esac
    done
    unset IFS
  fi
  if [ -r /proc/meminfo ]; then
    while read -r k v _; do
      case $k in MemTotal:) mt=$v ;; MemAvailable:) ma=$v; break ;; esac
    done < /proc/meminfo
  fi
  rec usage "$l1 $n $mt $ma"
  if [ -d "$rt" ]; then
    for rd in "$rt"/*; do
      [ -d "$rd" ] || continue
      rec runtime "${rd##*/}"
      if [ -L "$rd/current" ]; then rec current "$(readlink "$rd/current")"; fi
      for vd in "$rd"/*; do
        [ -d "$vd" ] && [ ! -L "$vd" ] && rec version "${vd##*/}"
      done
    done
  fi
fi
# Sets LP to the first directory of host path $1 (below the root) that is a symbolic link: a
# local user could swap a directory they own for a link to /root. Built-ins only.
link_in_parents() {
  lp_rest=${1#/}; lp_cur=$R; LP=
  while [ "${lp_rest#*/}" != "$lp_rest" ]; do
    lp_cur="$lp_cur/${lp_rest%%/*}"; lp_rest=${lp_rest#*/}
    if [ -L "$lp_cur" ]; then LP=${lp_cur#"$R"}; return 0; fi
  done
  return 1
}
# A regular file is hashed through a plain `sha256sum < file` (the redirect opens it) only
# when no one but root can replace its name between the `[ -f ]` and that open: every
# directory from the root down to the file is owned by root and not writable by group or
# others (an ACL granting write shows in the group bits). Anywhere else (a user's home) a FIFO
# swapped in at that instant would block the open, and with it the probe, until the
# controller gives up; so the file is read by `dd` with O_NONBLOCK and O_NOFOLLOW (a FIFO
# opens at once and has nothing to read, a link is refused), never past the size just
# stat'ed, and what was read counts only if the name still leads to the same file (device,
# inode, ctime to the nanosecond, mode, owner, size: renaming a file away and back changes
# its ctime). One `stat` gives the file's fields and its directories' owners: the hot path of
# a no-op plan, an unchanged file in a root-only directory, still starts two processes (stat,
# sha256sum); a file in a user's directory four (stat, dd, sha256sum, stat again). Measured
# (300 local probes each, loaded machine): five files in root-only directories 8.5-9.3 ms of
# host CPU per probe before and after; one file in a user's directory 2.3-2.5 ms before,
# 4.2-4.3 ms after. A `timeout` around every sha256sum would cost the hot path a process per
# file and still wait.
# Device nodes cannot be planted by a user (mknod needs root); at most a user hard-links one
# they may already read and write, and dd reads no more of it than the size stat'ed.
while IFS= read -r line; do
  op=${line%% *}; rest=${line#* }; hc=; hs=; hk=
  # "I <clock> <sha256> <key> <path>": the controller's memory of this file from an earlier
  # probe (see below).
  if [ "$op" = I ]; then
    hc=${rest%% *}; rest=${rest#* }; hs=${rest%% *}; rest=${rest#* }; hk=${rest%% *}; rest=${rest#* }
  fi
  p=$R$rest
  if link_in_parents "$rest"; then rec file-other "a file under $LP, which is a symlink"
  elif [ -L "$p" ]; then rec file-other "symlink"
  elif [ -f "$p" ]; then
    set -- "$p"; d=${p%/*}
    while [ "${#d}" -gt "${#R}" ]; do set -- "$@" "$d"; d=${d%/*}; done
    # The numbers on one line, then each name on a line of its own: a name with a space (an
    # AD group such as "domain users", or a user such as "jane doe") shifts nothing, neither
    # the uid the checks below rely on nor the other name. A name is printed as it is, so one
    # with a newline (a directory service allows it) adds lines: every path must then give
    # exactly three, numbers where numbers belong, or nothing here is trusted (fail closed: the
    # file is reported, not read). `-c` with a newline in the format, not `--printf`, which
    # BusyBox lacks.
    st=$(stat -c "$STAT3" -- "$@" 2>/dev/null) || st=""
    meta=""; id=""; key=""; open=1; mine=0; n=0
    if [ -n "$st" ]; then
      open=0; mine=1
      while read -r m uid s fid gid; do
        IFS= read -r un && IFS= read -r gn || { n=-1; break; }
        case $m.$uid.$s.$gid in *[!0-9.]* | .* | *. | *..*) n=-1; break ;; esac
        case $fid in *[!0-9:.]* | :* | *: | *::*) n=-1; break ;; esac
        n=$((n + 1))
        # `mine`: no one but root and the user this probe runs as can write the file or
        # any directory above it (the skip below relies on it).
        case $uid in 0 | "${me:-0}") ;; *) mine=0 ;; esac
        case $m in *[2367]? | *[2367]) mine=0 ;; esac
        if [ -z "$id" ]; then
          # The record puts the owner before the group, split at the first space: an owner
          # name with one (which Flotilla could not have set) is reported unknown, as is the
          # name `stat` prints for an id without one.
          case $un in *[[:space:]]* | UNKNOWN) un="?" ;; esac
          case $gn in UNKNOWN) gn="?" ;; esac
          meta="$m $un $gn $s"; id="$m $uid $s $fid $gid"; key="$fid:$s:$uid:$m"
          continue
        fi
        [ "$uid" = 0 ] || open=1
        case $m in *[2367]? | *[2367]) open=1 ;; esac
      done <<EOF
$st
EOF
    fi
    if [ -z "$st" ]; then rec file-other "file that changed while it was read"; continue
    elif [ "$n" != "$#" ]; then rec file-other "file whose owner or group name cannot be read (a name with a newline?)"; continue
    fi
    sz=${meta##* }
    # Git's index, for drift checks: a file whose identity (device, inode, ctime to the
    # nanosecond, size, owner, mode) is the one an earlier probe hashed is not read again, if
    # its ctime was at least two seconds older than that probe (a write in the same clock tick
    # as that probe could leave the ctime as it was; this is Git's "racily clean" rule). Any
    # write, chmod, chown or rename changes the ctime, which no one but root can set back;
    # a write through a shared mapping may not (filesystems update ctime on the first write
    # to a page only), so the rule holds only for files no one but root and the probe's own
    # user can write (`mine`, and the controller hashes every file at least hourly anyway).
    # Saves a warm drift check the `sha256sum` (and `dd` and second `stat`) of every
    # unchanged file.
    sum=
    if [ "$mine" = 1 ] && [ -n "$hk" ] && [ "$hk" = "$key" ] && [ "${#hs}" = 64 ]; then
      cs=${key#*:*:}; cs=${cs%%.*}
      case $cs.$hc.$hs in
        *[!0-9a-f.]* | .* | *..*) ;;
        *) case $cs$hc in
             *[!0-9]*) ;;
             *) [ "${#cs}" -le 12 ] && [ "${#hc}" -le 12 ] && [ "$((cs + 2))" -le "$hc" ] && sum="$hs" ;;
           esac ;;
      esac
    fi
    if [ -n "$sum" ]; then :
    elif [ "$open" = 0 ]; then
      sum=$(sha256sum < "$p" 2>/dev/null) || sum="unreadable"
    else
      case $sz in
        '' | *[!0-9]*) sum="unreadable" ;;
        *)
          sum=$(dd if="$p" iflag=nonblock,nofollow,count_bytes count="$sz" bs=64K status=none 2>/dev/null | sha256sum)
          [ "$(stat -c '%a %u %s %d:%i:%.9Z %g' -- "$p" 2>/dev/null)" = "$id" ] || sum="" ;;
      esac
    fi
    if [ -z "$sum" ]; then rec file-other "file that changed while it was read"; continue; fi
    rec file "${sum%% *} $meta"
    [ -z "$key" ] || rec key "$key"
    # Content, when asked for (a changed managed file: not the hot path), is exactly the size
    # reported, read as above and padded with zeros if it came up short; the controller keeps
    # it only if its sha256 is the one just reported.
    if [ "$op" = C ]; then
      case $sz in
        '' | *[!0-9]*) ;;
        *)
          if [ "$sz" -le 262144 ]; then
            printf 'content %s\n' "$sz"
            { dd if="$p" iflag=nonblock,nofollow,count_bytes count="$sz" bs=64K status=none 2>/dev/null
              head -c "$sz" /dev/zero; } | head -c "$sz"
            printf '\n'
          fi ;;
      esac
    fi
  elif [ -e "$p" ]; then rec file-other "not a regular file"
  else rec file-missing ""
  fi
done
echo "flotilla-probe end"
