#!/usr/bin/env bash
# Builds the wren-agent of one git revision (default HEAD) from a clean
# export of that revision, not from the working tree, and prints the
# binary's path: for benchmarks that must name the agent they measured
# while the working tree holds other people's uncommitted changes.
#
#   WREN_FEED_AGENT=$(hack/bench/agent-at.sh) go test ./test/bench -run '^$' -bench BGPFeed -benchtime 1x -timeout 60m
#
# The binary's --version prints the revision. Binaries are kept in
# ${WREN_CACHE:-/var/cache/wren}/agents/wren-agent-<revision>.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=$(git rev-parse --short=12 "${1:-HEAD}^{commit}")
out="${WREN_CACHE:-/var/cache/wren}/agents/wren-agent-$rev"
if [[ ! -x "$out" ]]; then
	src=$(mktemp -d)
	trap 'rm -rf "$src"' EXIT
	git archive "$rev" | tar -x -C "$src"
	mkdir -p "$(dirname "$out")"
	(cd "$src" && go build -ldflags "-X main.version=$rev" -o "$out.tmp" ./cmd/agent)
	mv "$out.tmp" "$out"
fi
echo "$out"
