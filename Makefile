# Wren — see README.md. Targets that touch the kernel need root; they only
# ever create network namespaces named wrent-* (tests) and never change
# the root namespace.

GO      ?= go
BIN     := bin
RTPROTO := /etc/iproute2/rt_protos.d/wren.conf

.PHONY: all build deps install-rtproto test test-unit vet fmt bench clean clean-netns

all: build

build:
	$(GO) build -o $(BIN)/wren-cni ./cmd/cni
	@if [ -d cmd/agent ]; then $(GO) build -o $(BIN)/wren-agent ./cmd/agent; fi

# deps installs what the tests need on a fresh Debian machine (root).
deps: install-rtproto
	hack/deps.sh

# install-rtproto makes "ip route" print "proto wren" for Wren's routes.
install-rtproto:
	install -D -m 0644 deploy/iproute2/wren.conf $(RTPROTO)

# test is the command CI runs: format, vet, then every tier (the
# privileged tier runs as root and prints every skip with its reason).
test:
	hack/test.sh

# test-unit runs only the tiers that need no root.
test-unit:
	$(GO) test -count=1 -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# bench prints route-programming rates (root; see docs/benchmarks.md).
bench:
	$(GO) test ./pkg/routes -run '^$$' -bench . -benchtime 3x

# clean-netns deletes namespaces leaked by an interrupted test run: only
# names starting with wrent-, which the test helpers use.
clean-netns:
	for ns in $$(ip netns list | awk '{print $$1}' | grep '^wrent-'); do ip netns del $$ns; done

clean:
	rm -rf $(BIN)
