#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
# and kubectl from the Go module proxy and installs etcd from Debian, into
# a cache outside the work tree that tests (envtest BinaryAssetsDirectory /
# KUBEBUILDER_ASSETS) and the lab use:
#
#   ${WREN_CACHE:-/var/cache/wren}/k8s-<version>/{kube-apiserver,kube-controller-manager,
#                                                kube-scheduler,kubelet,kubectl,etcd}
#
# The tools module (hack/kube/tools) pins k8s.io/kubernetes and replaces
# its k8s.io/* staging modules with the matching published v0.x versions,
# which is what lets the main repo build outside its own tree. A cached
# build is reused; about 9 minutes on a 2-core VM otherwise. Prints the
# asset directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(grep -oE 'k8s.io/kubernetes v[0-9][^ ]*' "$here/tools/go.mod" | head -1 | cut -d' ' -f2)
[[ -n "$version" ]] || { echo "kube: cannot read the k8s.io/kubernetes version from $here/tools/go.mod" >&2; exit 1; }
dir="${WREN_CACHE:-/var/cache/wren}/k8s-${version}"
mkdir -p "$dir"

if ! command -v etcd >/dev/null; then
	echo "kube: installing etcd-server from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq etcd-server >/dev/null
fi
ln -sf "$(command -v etcd)" "$dir/etcd"

bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# The stamp names the binary set, so a cache built before a binary joined
# the set is rebuilt.
stamp="$dir/.built-$version-$(echo "${bins[*]}" | sha256sum | cut -c1-12)"
cached() {
	[[ -f $stamp ]] || return 1
	local b
	for b in "${bins[@]}"; do [[ -x $dir/$b ]] || return 1; done
}
if cached; then
	echo "kube: using cached $dir" >&2
else
	echo "kube: building ${bins[*]} $version into $dir (about 9 minutes)..." >&2
	start=$(date +%s)
	minor=$(echo "$version" | cut -d. -f2)
	ldflags="-s -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version"
	(cd "$here/tools" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" \
		-o "$dir/" "${bins[@]/#/k8s.io/kubernetes/cmd/}") >&2
	touch "$stamp"
	echo "kube: built in $(( $(date +%s) - start ))s" >&2
fi
"$dir/kube-apiserver" --version >&2
echo "$dir"
