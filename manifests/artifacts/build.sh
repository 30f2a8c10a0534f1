#!/usr/bin/env bash
# Rebuilds the demo artifacts (artifacts/<runtime>-<version>.tar.gz) deterministically and signs
# them with a fresh demo key pair made in a temporary directory. The secret key is deleted on
# exit and never committed: the key is for the demo only. The script prints the sha256 values
# to paste into runtimes/*.toml and the public key to paste into flotilla.toml [trust] keys.
#
# The tarballs are byte-for-byte reproducible (sorted names, owner 0:0, fixed mtime, fixed
# modes, gzip -n), so their sha256 values do not change between runs; the signatures and the
# key do. Needs bash, GNU tar, gzip, sha256sum and minisign (Debian: apt-get install minisign).
set -euo pipefail
umask 022
cd "$(dirname "$0")"
export LC_ALL=C TZ=UTC
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
minisign -G -W -p "$work/demo.pub" -s "$work/demo.sec" >/dev/null

build() { # runtime version script-body
  local name=$1 version=$2 body=$3 dir="$work/$1-$2"
  mkdir -p "$dir/bin"
  printf '%s\n' "$version" > "$dir/VERSION"
  printf '#!/bin/sh\n# %s %s (Flotilla demo runtime)\nif [ "${1:-}" = --version ]; then echo "%s %s"; exit 0; fi\n%s\n' \
    "$name" "$version" "$name" "$version" "$body" > "$dir/bin/$name"
  chmod 0755 "$dir/bin" "$dir/bin/$name"
  chmod 0644 "$dir/VERSION"
  # Entries are relative (VERSION, bin/, bin/NAME): no absolute names, no `..`, no setuid.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00:00Z' \
    --format=gnu -C "$dir" -cf - VERSION bin | gzip -n > "$name-$version.tar.gz"
  rm -f "$name-$version.tar.gz.minisig"
  minisign -S -s "$work/demo.sec" -m "$name-$version.tar.gz" -t "flotilla demo: $name $version" >/dev/null
  minisign -V -q -p "$work/demo.pub" -m "$name-$version.tar.gz"
  echo "$name $version sha256 = \"$(sha256sum "$name-$version.tar.gz" | cut -d' ' -f1)\""
}

build greeter 1.0.0 'echo "Hello from $(hostname)"'
build greeter 1.1.0 'echo "Hello, ${1:-world}, from $(hostname)"'
build clock 0.1.0 'date -u +%H:%M'
build clock 0.2.0 'date -u +%Y-%m-%dT%H:%M:%SZ'
echo "public key (flotilla.toml [trust] keys): \"$(tail -n 1 "$work/demo.pub")\""
