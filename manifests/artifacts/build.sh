#!/usr/bin/env bash
# Rebuilds the demo artifacts deterministically and signs them with a fresh demo key.
# The secret key is never kept: rebuilding prints a new public key and new sha256 values to
# paste into flotilla.toml and runtimes/*.toml. The key is for the demo only.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
minisign -G -W -p "$work/demo.pub" -s "$work/demo.sec" >/dev/null

build() { # runtime version script-body
  local name=$1 version=$2 body=$3 dir="$work/$1-$2"
  mkdir -p "$dir/bin"
  printf '%s\n' "$version" > "$dir/VERSION"
  printf '#!/bin/sh\n# %s %s (Flotilla demo runtime)\nif [ "${1:-}" = --version ]; then echo "%s %s"; exit 0; fi\n%s\n' \
    "$name" "$version" "$name" "$version" "$body" > "$dir/bin/$name"
  chmod 0755 "$dir/bin/$name"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' \
    -C "$dir" -cf - VERSION bin | gzip -n > "$name-$version.tar.gz"
  rm -f "$name-$version.tar.gz.minisig"
  minisign -S -s "$work/demo.sec" -m "$name-$version.tar.gz" -t "flotilla demo: $name $version" >/dev/null
  echo "$name $version sha256 = $(sha256sum "$name-$version.tar.gz" | cut -d' ' -f1)"
}

build greeter 1.0.0 'echo "Hello from $(hostname)"'
build greeter 1.1.0 'echo "Hello, ${1:-world}, from $(hostname)"'
build clock 0.1.0 'date -u +%H:%M'
build clock 0.2.0 'date -u +%Y-%m-%dT%H:%M:%SZ'
echo "public key: $(tail -n 1 "$work/demo.pub")"
