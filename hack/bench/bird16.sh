#!/usr/bin/env bash
# Unpacks BIRD 1.6 (Debian package "bird", the daemon Calico runs) into
# ${WREN_CACHE:-/var/cache/wren}/bird-1.6 for the BGP feed benchmark
# (test/bench/bgpfeed_*_test.go, docs/benchmarks.md).
#
# "bird" (1.6) and "bird2" conflict as Debian packages and the tests need
# bird2 installed, so 1.6 is never installed: "apt-get download" fetches
# the .deb and "dpkg-deb -x" unpacks it; nothing runs its maintainer
# scripts and nothing starts in the root namespace. The daemon links only
# against libc, so the unpacked binary runs as it is.
#
# Idempotent: does nothing when the binary is already there and answers
# --version with 1.6.x. Needs root (the cache directory) and apt.
set -euo pipefail
dest="${WREN_CACHE:-/var/cache/wren}/bird-1.6"
bird="$dest/usr/sbin/bird"
version() { "$bird" --version 2>&1 | sed -n 's/^BIRD version \(1\.6\.[0-9.]*\).*/\1/p'; }
if [[ -x "$bird" && -n "$(version)" ]]; then
	echo "bird16: BIRD $(version) already at $bird"
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download needs the package lists; refresh them only if the first
# try fails (a fresh machine has none, an old one may name a superseded
# version).
if ! apt-get download bird >/dev/null 2>&1; then
	echo "bird16: apt-get download failed; running apt-get update first"
	apt-get update -qq
	apt-get download bird
fi
deb=$(ls bird_*.deb)
mkdir -p "$dest.new"
dpkg-deb -x "$deb" "$dest.new"
rm -rf "$dest"
mv "$dest.new" "$dest"
cp "$deb" "$dest/"
if [[ -z "$(version)" ]]; then
	echo "bird16: $bird from $deb does not report version 1.6.x: $("$bird" --version 2>&1)" >&2
	exit 1
fi
echo "bird16: BIRD $(version) unpacked from $deb into $dest"
