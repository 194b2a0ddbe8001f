# Wren — see README.md. Targets that touch the kernel need root; they only
# ever create network namespaces named wrent-* (tests) or wrenlab-* (the
# lab) and never change the root namespace.

GO      ?= go
BIN     := bin
RTPROTO := /etc/iproute2/rt_protos.d/wren.conf

.PHONY: all build deps install-rtproto test test-unit vet fmt bench clean clean-netns generate kube

all: build

build:
	$(GO) build -o $(BIN)/wren-cni ./cmd/cni
	$(GO) build -o $(BIN)/wren-agent ./cmd/agent
	$(GO) build -o $(BIN)/wrenctl ./cmd/wrenctl

# deps installs what the tests need on a fresh Debian machine (root).
deps: install-rtproto
	hack/deps.sh
	hack/kube/build.sh

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

# generate rewrites deepcopy code and the CRD manifests from the Go types
# (the generated files are committed; CI does not regenerate).
generate:
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./pkg/cluster/v1alpha1/... crd paths=./pkg/cluster/v1alpha1/... output:crd:dir=./deploy/crds
	hack/gen-proto.sh

# image writes the Wren, pause and workload images as OCI archives under
# bin/images (no container engine; see docs/deploy.md).
.PHONY: image
image:
	$(GO) run ./hack/image --out $(BIN)/images

# kube builds (once, cached) kube-apiserver and kubectl and installs etcd
# for the datastore tests and the lab.
kube:
	hack/kube/build.sh

# lab brings up a real three-node Kubernetes cluster in network namespaces
# named wrenlab-* (control plane; kubelet + containerd per node; Wren by
# kubectl apply -k; root; state in /var/tmp/wren-lab; see docs/lab.md).
# lab-down removes it. It runs deps first, so it is the whole set-up of a
# fresh machine. MODE=bgp (default) | vxlan | tor: see docs/lab.md.
.PHONY: lab lab-down lab-check
MODE ?= bgp
lab: deps
	$(GO) run ./hack/lab up --mode $(MODE)

lab-check:
	$(GO) run ./hack/lab check

lab-down:
	$(GO) run ./hack/lab down

fmt:
	gofmt -w $$(git ls-files '*.go')

# bench prints route-programming rates (root; see docs/benchmarks.md).
bench:
	$(GO) test ./pkg/routes -run '^$$' -bench . -benchtime 3x

# clean-netns removes what an interrupted test run leaked: the real-cluster
# labs of test/cluster (state in /var/tmp/wrent-*, with their processes,
# mounts and cgroups) and the namespaces named wrent-*.
clean-netns:
	for d in /var/tmp/wrent-*; do [ -f $$d/prefix ] && $(GO) run ./hack/lab down --state $$d; done; true
	for ns in $$(ip netns list | awk '{print $$1}' | grep '^wrent-'); do ip netns del $$ns; done

clean:
	rm -rf $(BIN)
