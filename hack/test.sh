#!/usr/bin/env bash
# The test command (README, CI): gofmt, go vet, then all tiers with -v so
# every skip and its reason is visible; the skips are listed again at the
# end. Privileged tests need root and skip without it.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$bad" ]]; then
	echo "gofmt needed on:"; echo "$bad"; exit 1
fi
go vet ./... || exit 1
if [[ $(id -u) -ne 0 ]]; then
	echo "NOTE: not root: the privileged tier (network namespaces) will skip"
fi
go test -count=1 -v -timeout 20m ./... 2>&1 | tee "$log" | grep -Ev '^(=== (RUN|PAUSE|CONT)|\s*$)'
rc=${PIPESTATUS[0]}
echo
echo "== skipped tests and reasons"
# go test -v prints a test's skip reason on the line before its SKIP line.
skips=$(grep -E -B1 -- '--- SKIP' "$log" | grep -Ev '^--$' | paste - - | sed -E 's/^\s*(.*)\t\s*--- SKIP: ([^ ]+).*/\2: \1/')
echo "${skips:-(none)}"
pass=$(grep -cE -- '^\s*--- PASS' "$log")
fail=$(grep -cE -- '^\s*--- FAIL' "$log")
skip=$(grep -cE -- '^\s*--- SKIP' "$log")
echo "tests: $pass passed, $fail failed, $skip skipped"
exit "$rc"
