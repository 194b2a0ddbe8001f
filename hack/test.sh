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
# The debug API's request handlers under the fuzzer for a bounded time:
# malformed requests must get an error, never a crash.
echo "fuzz: FuzzRequests (pkg/debugserver) for 20s"
go test -run '^$' -fuzz '^FuzzRequests$' -fuzztime 20s ./pkg/debugserver || exit 1
if [[ $(id -u) -ne 0 ]]; then
	echo "NOTE: not root: the privileged tier (network namespaces) will skip"
fi
# The real-cluster tier (test/cluster: a Kubernetes cluster in namespaces,
# brought up once per mode) runs after the others, alone, so its 10 ms
# pings do not compete with the privileged netns tests for the CPU.
filter() { grep -Ev '^(=== (RUN|PAUSE|CONT|NAME)|\s*$)'; }
go test -count=1 -v -timeout 35m $(go list ./... | grep -v '/test/cluster$') 2>&1 | tee "$log" | filter
rc=${PIPESTATUS[0]}
go test -count=1 -v -timeout 30m ./test/cluster 2>&1 | tee -a "$log" | filter
rc2=${PIPESTATUS[0]}
((rc == 0)) && rc=$rc2
echo
echo "== skipped tests and reasons"
# go test -v prints a test's skip reason on the line before its SKIP line.
skips=$(grep -E -B1 -- '--- SKIP' "$log" | grep -Ev '^--$' | paste - - | sed -E 's/^\s*(.*)\t\s*--- SKIP: ([^ ]+).*/\2: \1/')
echo "${skips:-(none)}"
# Each failed test's own log lines (file.go:NN: ...), the last 40, so a
# failure's reason is not buried under the agent logs a test dumps.
if grep -qE -- '^--- FAIL' "$log"; then
	echo
	echo "== failed tests and their last log lines"
	awk '
		/^=== RUN   [^\/]+$/ { cur = $3; n = 0; delete buf; next }
		/^ +[A-Za-z0-9_.-]+\.go:[0-9]+: / || /^panic: / { buf[++n] = $0; next }
		/^--- FAIL: / {
			print $0
			for (i = (n > 40 ? n - 39 : 1); i <= n; i++) print buf[i]
		}' "$log"
fi
pass=$(grep -cE -- '^\s*--- PASS' "$log")
fail=$(grep -cE -- '^\s*--- FAIL' "$log")
skip=$(grep -cE -- '^\s*--- SKIP' "$log")
echo "tests: $pass passed, $fail failed, $skip skipped"
exit "$rc"
