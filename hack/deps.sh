#!/usr/bin/env bash
# Installs the system packages Wren's tests and lab use on a fresh Debian machine.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v sysctl >/dev/null || need+=(procps)
command -v bridge >/dev/null || need+=(iproute2)
# nft: the natOutgoing tests read and break table ip wren with it (the
# agent itself speaks nftables netlink and needs no CLI).
command -v nft >/dev/null || need+=(nftables)
# The lab: certificates, /readyz probes, CNI results.
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
# The reference ptp + host-local plugins of the CNI benchmark and its
# TestCNIAddDel smoke test.
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
# BIRD 2: a real BGP peer, run inside test namespaces by test/netns/bird.go
# (the tests fail under CI=true without it).
command -v bird >/dev/null && command -v birdc >/dev/null || need+=(bird2)
# The lab and the real-cluster tests: containerd and runc on every node,
# busybox-static for the workload image (internal/image).
command -v containerd >/dev/null && command -v ctr >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
if ((${#need[@]})); then
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
	# The packages enable services in the root namespace (bird with kernel
	# export all, containerd); the tests and the lab start their own inside
	# namespaces, so keep them off.
	if [[ -d /run/systemd/system ]]; then
		[[ " ${need[*]} " == *" bird2 "* ]] && { systemctl disable --now bird.service >/dev/null 2>&1 || true; }
		[[ " ${need[*]} " == *" containerd "* ]] && { systemctl disable --now containerd.service >/dev/null 2>&1 || true; }
	fi
fi
# cnitool drives wren-cni in the tests (the test fails under CI=true
# without it).
gobin="$(go env GOPATH)/bin"
if [[ ! -x "$gobin/cnitool" ]]; then
	echo "deps: installing cnitool"
	GOBIN="$gobin" go install github.com/containernetworking/cni/cnitool@v1.2.3
fi
# The stock gobgp CLI of the GoBGP release the agent embeds, for the test
# of the agent's opt-in GoBGP API (--gobgp-api).
gobgp_v=$(cd "$(dirname "$0")/.." && go list -m -f '{{.Version}}' github.com/osrg/gobgp/v4)
if [[ "$("$gobin/gobgp" --version 2>/dev/null)" != "gobgp version ${gobgp_v#v}" ]]; then
	echo "deps: installing the gobgp CLI $gobgp_v"
	GOBIN="$gobin" go install "github.com/osrg/gobgp/v4/cmd/gobgp@$gobgp_v"
fi
# BIRD 1.6 (Calico's daemon), unpacked beside bird2 for the side-by-side
# BGP feed benchmark and its smoke test (which fails under CI=true
# without it).
"$(dirname "$0")/bench/bird16.sh"
echo "deps: ok ($(ip -V), $(ping -V 2>&1 | head -1))"
