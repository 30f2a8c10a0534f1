# Shared by the SSH benchmarks (sourced, not run): N real sshd hosts on 127.0.0.10.., one
# process per address (one sshd binds at most 16 addresses), a client key, a known_hosts file
# and hosts/all.toml for a fleet in "$lab/fleet". Sets: lab, base; defines hosts, cleanup.
# Needs openssh-server and root.
start_lab() { # N
  N=$1
  lab=$(mktemp -d /tmp/flb-XXXX)
  [ -n "${KEEP:-}" ] && echo "lab: $lab" || trap cleanup EXIT
  mkdir -p /run/sshd "$lab/fleet"/{environments,hosts,runtimes,artifacts}
  ssh-keygen -q -t ed25519 -N '' -f "$lab/client"
  # sshd reads the authorized key as the user logging in, who may not be root.
  chmod 755 "$lab"; chmod 644 "$lab/client.pub"
  base=$((20000 + $$ % 20000))
  : > "$lab/known_hosts"
  for i in $(seq 0 $((N - 1))); do
    # 127.0.0.10-249, then 127.0.1.10-249, ...: the whole 127/8 is loopback.
    local a=127.0.$((i / 240)).$((10 + i % 240)) p=$((base + i))
    ssh-keygen -q -t ed25519 -N '' -f "$lab/host-$i"
    cat > "$lab/sshd-$i.conf" <<CONF
HostKey $lab/host-$i
PidFile $lab/sshd-$i.pid
UsePAM no
StrictModes no
AuthorizedKeysFile $lab/client.pub
PermitRootLogin prohibit-password
ListenAddress $a:$p
MaxStartups 200
MaxSessions 20
LogLevel ERROR
# This machine's root .bashrc starts pyenv on every ssh command (0.1-1.2 s); real hosts do
# not, and SHLVL=1 skips it. It applies to every side equally.
SetEnv SHLVL=1
CONF
    /usr/sbin/sshd -f "$lab/sshd-$i.conf"
    echo "[$a]:$p $(cut -d' ' -f1,2 "$lab/host-$i.pub")" >> "$lab/known_hosts"
    mkdir -p "$lab/roots/h$i" "$lab/raw/h$i"
    printf '[[host]]\nname = "h%03d"\nenvironment = "bench"\naddress = "%s"\nport = %d\nroot = "%s/roots/h%d"\n\n' \
      "$i" "$a" "$p" "$lab" "$i" >> "$lab/fleet/hosts/all.toml"
  done
  sleep 1
}
cleanup() { for p in "$lab"/sshd-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$lab"; }
# "ADDRESS PORT INDEX" per host.
hosts() { for i in $(seq 0 $((N - 1))); do echo "127.0.$((i / 240)).$((10 + i % 240)) $((base + i)) $i"; done; }
