#!/usr/bin/env bash
# make lab: a three-node Wren cluster in network namespaces (docs/lab.md).
#
#   1. build wren-cni and wren-agent; kube-apiserver, kubectl and etcd
#      come from hack/kube/build.sh's cache
#   2. namespaces: two switches, a router, the API server, three nodes
#   3. PKI and kubeconfig under /var/run/wren-lab
#   4. etcd + kube-apiserver in wrenlab-api; CRDs, Nodes, an IPPool
#   5. wren-agent in every node namespace
#   6. two pods per node through wren-cni (driven by cnitool)
#   7. ping matrix and routes (hack/lab/check.sh)
#
# Re-running it on a complete, healthy lab only re-runs the check. On a
# partial lab it refuses and asks for make lab-down. A failure leaves
# what is up in place for debugging (logs under /var/run/wren-lab/logs).
# Environment: LAB_MODE=bgp (default) | vxlan | tor (see lib.sh and
# docs/lab.md); LAB_VXLAN_MODE=CrossSubnet (default) | Always sets the
# pool's vxlanMode in vxlan mode; LAB_AGENTS=0 stops after the control
# plane and the cluster objects (to run agents by hand).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

vxlan_mode=${LAB_VXLAN_MODE:-CrossSubnet}
case $vxlan_mode in Always | CrossSubnet) ;; *) die "LAB_VXLAN_MODE must be Always or CrossSubnet, not $vxlan_mode" ;; esac
mode=${LAB_MODE:-bgp}
case $mode in bgp | vxlan | tor) ;; *) die "LAB_MODE (make lab MODE=...) must be bgp, vxlan or tor, not $mode" ;; esac
[[ $mode == vxlan ]] || vxlan_mode=Never

need_root lab
lab_lock

# --- 0. existing lab? ----------------------------------------------------

if [[ -f $LAB_STATE/stage && $(cat "$LAB_STATE/stage") == complete ]]; then
	dead=()
	for f in "$LAB_STATE"/pids/*.pid; do
		[[ -e $f ]] || continue
		pid_is_lab "$(cat "$f")" || dead+=("$(basename "$f" .pid)")
	done
	((${#dead[@]} == 0)) || die "the lab is up but these processes are gone: ${dead[*]} (logs in $LAB_STATE/logs). Run make lab-down, then make lab"
	log "the lab is already up; checking it (make lab-down removes it)"
	exec "$here/check.sh"
fi
mapfile -t existing < <(lab_namespaces)
if [[ -e $LAB_STATE || ${#existing[@]} -gt 0 ]]; then
	what=""
	[[ -e $LAB_STATE ]] && what="$LAB_STATE ($(cat "$LAB_STATE/stage" 2>/dev/null || echo incomplete))"
	((${#existing[@]})) && what+="${what:+, }namespaces ${existing[*]}"
	die "a lab is partly up: $what. Run make lab-down, then make lab"
fi

t0=$SECONDS
tstep=$SECONDS
step() {
	log "--- $* (previous step $((SECONDS - tstep))s, total $((SECONDS - t0))s)"
	tstep=$SECONDS
}

# From here on a failure leaves a partial lab: say how to remove it.
partial=0
on_exit() {
	local rc=$?
	if ((rc != 0 && partial)); then
		printf '\nlab: make lab did not finish (exit %d). What is up stays up for debugging:\n' "$rc" >&2
		printf '  logs: %s/logs/*.log\n  remove it with: make lab-down\n' "$LAB_STATE" >&2
	fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- 1. build --------------------------------------------------------------

step "1/7 build"
for tool in ip bridge ping openssl; do
	command -v "$tool" >/dev/null || die "$tool is missing: run make deps (apt-get install iproute2 iputils-ping openssl)"
done
apt_need=()
command -v curl >/dev/null || apt_need+=(curl)
command -v jq >/dev/null || apt_need+=(jq)
if ((${#apt_need[@]})); then
	log "installing ${apt_need[*]} with apt-get (probes of /readyz, CNI results)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${apt_need[@]}" >/dev/null
fi
make -C "$repo" --no-print-directory build
assets=$("$repo/hack/kube/build.sh" | tail -n 1)
for b in kube-apiserver kubectl etcd; do
	[[ -x $assets/$b ]] || die "$assets/$b missing: run make kube"
done
have_agent=0
[[ -x $repo/bin/wren-agent ]] && have_agent=1
want_agents=${LAB_AGENTS:-1}
if ((have_agent && want_agents)); then
	log "cnitool: $(cnitool_path)"
fi

kubectl() { ip netns exec "${LAB_PREFIX}api" "$assets/kubectl" --kubeconfig "$LAB_KUBECONFIG" "$@"; }

# --- 2. topology -------------------------------------------------------------

step "2/7 namespaces and underlay"
partial=1
(umask 077 && mkdir -p "$LAB_STATE")
mkdir -p "$LAB_STATE"/{pki,logs,pids,etcd}
echo "$mode" >"$LAB_STATE/mode"
echo topology >"$LAB_STATE/stage"
echo "$assets" >"$LAB_STATE/assets"

for ns in sw1 sw2 router api node-1 node-2 node-3; do
	ip netns add "$LAB_PREFIX$ns"
	ip -n "$LAB_PREFIX$ns" link set lo up
done
for sw in sw1 sw2; do
	ip -n "$LAB_PREFIX$sw" link add br0 type bridge
	ip -n "$LAB_PREFIX$sw" link set br0 up
done

# plug NS IFNAME SWITCH PORT ADDR: a veth whose ends are created directly
# in the switch namespace (PORT, enslaved to br0) and in NS (IFNAME), so
# no end ever exists in the root namespace.
plug() {
	local ns=$1 ifname=$2 sw=$3 port=$4 addr=$5
	ip -n "$sw" link add "$port" mtu 1500 type veth peer name "$ifname" netns "$ns"
	ip -n "$sw" link set "$port" master br0 up
	ip -n "$ns" link set "$ifname" mtu 1500 up
	ip -n "$ns" addr add "$addr" dev "$ifname"
}
plug "${LAB_PREFIX}router" eth0 "${LAB_PREFIX}sw1" router 198.18.0.1/24
plug "${LAB_PREFIX}router" eth1 "${LAB_PREFIX}sw2" router 198.18.1.1/24
ip netns exec "${LAB_PREFIX}router" sysctl -qw net.ipv4.ip_forward=1
plug "${LAB_PREFIX}api" eth0 "${LAB_PREFIX}sw1" api "$LAB_API_IP/24"
ip -n "${LAB_PREFIX}api" route add default via 198.18.0.1
for n in "${LAB_NODES[@]}"; do
	plug "${LAB_PREFIX}node-$n" eth0 "$(node_sw "$n")" "node-$n" "$(node_ip "$n")/24"
	# The default route also makes the node answer proxy ARP for the pods'
	# gateway 169.254.1.1 (docs/dataplane.md).
	ip -n "${LAB_PREFIX}node-$n" route add default via "$(node_gw "$n")"
done

# --- 3. PKI and kubeconfig ------------------------------------------------

step "3/7 certificates and kubeconfig"
pki=$LAB_STATE/pki
(
	cd "$pki"
	umask 077
	cat >openssl.cnf <<-'EOF'
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		[ca]
		basicConstraints = critical, CA:TRUE
		keyUsage = critical, keyCertSign, cRLSign
		subjectKeyIdentifier = hash
		[server]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = serverAuth
		subjectAltName = IP:198.18.0.2, IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
		[client]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = clientAuth
	EOF
	key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
	key ca.key
	openssl req -x509 -new -config openssl.cnf -extensions ca -key ca.key -subj /CN=wrenlab-ca -days 365 -out ca.crt
	# cert NAME SUBJECT SECTION: a key and a certificate signed by the CA.
	cert() {
		key "$1.key"
		openssl req -new -config openssl.cnf -key "$1.key" -subj "$2" -out "$1.csr"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -CAserial ca.srl \
			-days 365 -extfile openssl.cnf -extensions "$3" -out "$1.crt" 2>/dev/null
	}
	cert apiserver /CN=kube-apiserver server
	cert admin "/O=system:masters/CN=wrenlab-admin" client
	key sa.key
	openssl pkey -in sa.key -pubout -out sa.pub
)
b64() { base64 -w0 <"$1"; }
(
	umask 077
	cat >"$LAB_KUBECONFIG" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: wrenlab
		  cluster:
		    server: https://$LAB_API_IP:6443
		    certificate-authority-data: $(b64 "$pki/ca.crt")
		users:
		- name: wrenlab-admin
		  user:
		    client-certificate-data: $(b64 "$pki/admin.crt")
		    client-key-data: $(b64 "$pki/admin.key")
		contexts:
		- name: wrenlab
		  context: {cluster: wrenlab, user: wrenlab-admin}
		current-context: wrenlab
	EOF
)

# --- 4. control plane and cluster objects ------------------------------------

step "4/7 etcd and kube-apiserver in ${LAB_PREFIX}api"
echo control-plane >"$LAB_STATE/stage"
start_bg etcd "${LAB_PREFIX}api" "$assets/etcd" \
	--name wrenlab --data-dir "$LAB_STATE/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster wrenlab=http://127.0.0.1:2380
WAIT_PID=$(cat "$LAB_STATE/pids/etcd.pid") wait_until 30 "etcd health" \
	ip netns exec "${LAB_PREFIX}api" curl -fsS --max-time 2 http://127.0.0.1:2379/health ||
	die "etcd did not become healthy; see $LAB_STATE/logs/etcd.log"

# --bind-address 0.0.0.0: inside wrenlab-api that is 198.18.0.2 and
# 127.0.0.1 (the namespace has no other address).
start_bg kube-apiserver "${LAB_PREFIX}api" "$assets/kube-apiserver" \
	--etcd-servers http://127.0.0.1:2379 \
	--bind-address 0.0.0.0 --advertise-address "$LAB_API_IP" --secure-port 6443 \
	--cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--service-account-issuer https://kubernetes.default.svc \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-cluster-ip-range 10.96.0.0/16 \
	--authorization-mode Node,RBAC
WAIT_PID=$(cat "$LAB_STATE/pids/kube-apiserver.pid") wait_until 90 "kube-apiserver /readyz" \
	ip netns exec "${LAB_PREFIX}api" curl -fsS --max-time 3 --cacert "$pki/ca.crt" \
	--cert "$pki/admin.crt" --key "$pki/admin.key" "https://$LAB_API_IP:6443/readyz" ||
	die "kube-apiserver is not ready; see $LAB_STATE/logs/kube-apiserver.log"
log "kube-apiserver ready at https://$LAB_API_IP:6443"

step "4/7 CRDs, Nodes, IPPool"
have_crds=0
if compgen -G "$repo/deploy/crds/*.yaml" >/dev/null; then
	kubectl apply --server-side -f "$repo/deploy/crds/" >/dev/null
	kubectl wait --for condition=Established --timeout 60s -f "$repo/deploy/crds/" >/dev/null
	have_crds=1
	log "CRDs installed: $(kubectl get crd -o name | tr '\n' ' ')"
else
	log "SKIPPED: no CRDs in deploy/crds yet (no IPPool either)"
fi
for n in "${LAB_NODES[@]}"; do
	kubectl apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: Node
		metadata:
		  name: node-$n
		  annotations:
		    wren.network/as-number: "$(node_as "$n")"
		  labels:
		    kubernetes.io/hostname: node-$n
		    kubernetes.io/os: linux
		    rack: $(if node_remote "$n"; then echo r2; else echo r1; fi)
	EOF
	kubectl patch node "node-$n" --subresource status --type merge -p \
		"{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$(node_ip "$n")\"},{\"type\":\"Hostname\",\"address\":\"node-$n\"}]}}" >/dev/null
done
log "nodes: $(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.addresses[0].address} {end}')"
if ((have_crds)); then
	kubectl apply -f - >/dev/null <<-EOF
		apiVersion: wren.network/v1alpha1
		kind: IPPool
		metadata:
		  name: default
		spec:
		  cidr: 10.244.0.0/16
		  blockSize: 26
		  vxlanMode: $vxlan_mode
		  ipipMode: Never
		  natOutgoing: false
	EOF
	log "IPPool default: 10.244.0.0/16, blockSize 26, vxlanMode $vxlan_mode"
	if [[ $mode == tor ]]; then
		# Top-of-rack peering as operators run it: no node mesh, every
		# node peers by eBGP with the router of its rack (BIRD, AS 65001).
		kubectl apply -f - >/dev/null <<-EOF
			apiVersion: wren.network/v1alpha1
			kind: BGPConfiguration
			metadata:
			  name: default
			spec:
			  nodeToNodeMeshEnabled: false
			---
			apiVersion: wren.network/v1alpha1
			kind: BGPPeer
			metadata:
			  name: tor-r1
			spec:
			  nodeSelector: rack == 'r1'
			  peerIP: 198.18.0.1
			  asNumber: 65001
			---
			apiVersion: wren.network/v1alpha1
			kind: BGPPeer
			metadata:
			  name: tor-r2
			spec:
			  nodeSelector: rack == 'r2'
			  peerIP: 198.18.1.1
			  asNumber: 65001
		EOF
		log "BGPConfiguration: node mesh off; BGPPeers tor-r1 (198.18.0.1) and tor-r2 (198.18.1.1), AS 65001; node-N in AS 6451(2+N)"
	fi
fi
# No kube-controller-manager runs, so nothing creates the default service
# account that pod admission looks up.
kubectl apply -f - >/dev/null <<-'EOF'
	apiVersion: v1
	kind: ServiceAccount
	metadata:
	  name: default
	  namespace: default
EOF
echo cluster >"$LAB_STATE/stage"

kubectl_line="ip netns exec ${LAB_PREFIX}api $assets/kubectl --kubeconfig $LAB_KUBECONFIG get nodes"
if ((!want_agents || !have_agent || !have_crds)); then
	rc=0
	if ((!want_agents)); then
		log "LAB_AGENTS=0: stopping after the control plane and the cluster objects"
	elif ((!have_agent)); then
		log "wren-agent not built yet (no $repo/bin/wren-agent): stopping after the control plane"
		rc=2
	else
		log "no CRDs in deploy/crds: stopping before the agents"
		rc=2
	fi
	printf '\nThe API server and the node namespaces are up; agents, pods and the ping matrix are not.\n'
	printf 'Use the API:\n  %s\n  (or: hack/lab/kubectl get nodes)\n' "$kubectl_line"
	printf 'For the whole lab: make lab-down && make lab\n'
	partial=0
	exit "$rc"
fi

# --- 5. agents -----------------------------------------------------------------

if [[ $mode == tor ]]; then
	command -v bird >/dev/null || die "bird is missing: run make deps (apt-get install bird2)"
	{
		echo "# BIRD 2 as the lab's top-of-rack router (make lab MODE=tor)."
		echo "router id 198.18.0.1;"
		echo "log stderr all;"
		echo "protocol device {}"
		echo "# Routes learned from the nodes go into the router namespace's kernel,"
		echo "# so it forwards pod traffic between the racks."
		echo "protocol kernel { ipv4 { import none; export all; }; }"
		for n in "${LAB_NODES[@]}"; do
			echo "protocol bgp node$n {"
			echo "  local $(node_gw "$n") as 65001;"
			echo "  neighbor $(node_ip "$n") as $(node_as "$n");"
			echo "  connect delay time 1; connect retry time 1; error wait time 1, 5;"
			echo "  ipv4 { import all; export all; };"
			echo "}"
		done
	} >"$LAB_STATE/bird.conf"
	start_bg bird "${LAB_PREFIX}router" bird -f -c "$LAB_STATE/bird.conf" -s "$LAB_STATE/bird.ctl" -P "$LAB_STATE/bird.pid"
	WAIT_PID=$(cat "$LAB_STATE/pids/bird.pid") wait_until 20 "BIRD on the router" \
		ip netns exec "${LAB_PREFIX}router" birdc -s "$LAB_STATE/bird.ctl" show status ||
		die "BIRD did not start; see $LAB_STATE/logs/bird.log"
	log "BIRD 2 on wrenlab-router (AS 65001) peers with node-1..node-${#LAB_NODES[@]}"
fi

step "5/7 wren-agent on node-1..node-${#LAB_NODES[@]}"
for n in "${LAB_NODES[@]}"; do
	mkdir -p "$LAB_STATE/node-$n/net.d"
	jq --arg s "$LAB_STATE/node-$n/wren.sock" \
		'(.plugins[] | select(.type == "wren-cni") | .agent_socket) = $s' \
		"$repo/deploy/cni/10-wren.conflist" >"$LAB_STATE/node-$n/net.d/10-wren.conflist"
	start_bg "agent-node-$n" "${LAB_PREFIX}node-$n" "$repo/bin/wren-agent" \
		--node-name "node-$n" --kubeconfig "$LAB_KUBECONFIG" \
		--node-ip-method interface=eth0 \
		--socket "$LAB_STATE/node-$n/wren.sock" --health-addr "$LAB_HEALTH"
done
for n in "${LAB_NODES[@]}"; do
	WAIT_PID=$(cat "$LAB_STATE/pids/agent-node-$n.pid") wait_until 60 "agent node-$n /readyz" \
		ip netns exec "${LAB_PREFIX}node-$n" curl -fsS --max-time 2 "http://$LAB_HEALTH/readyz" || {
		ip netns exec "${LAB_PREFIX}node-$n" curl -sS --max-time 2 "http://$LAB_HEALTH/readyz" >&2 || true
		die "wren-agent on node-$n is not ready; see $LAB_STATE/logs/agent-node-$n.log"
	}
	log "agent node-$n ready"
done
echo agents >"$LAB_STATE/stage"

# --- 6. pods ---------------------------------------------------------------------

step "6/7 pods: $LAB_PODS_PER_NODE per node through wren-cni"
mkdir -p "$LAB_STATE/pods"
: >"$LAB_STATE/pods.tsv"
for n in "${LAB_NODES[@]}"; do
	for ((m = 1; m <= LAB_PODS_PER_NODE; m++)); do
		# Nothing runs these pods (no kubelet): the objects exist so that the
		# agent's IPAM garbage collector keeps their addresses.
		kubectl apply -f - >/dev/null <<-EOF
			apiVersion: v1
			kind: Pod
			metadata:
			  name: web-$n-$m
			  namespace: default
			  labels: {app: web}
			spec:
			  nodeName: node-$n
			  automountServiceAccountToken: false
			  containers:
			  - name: web
			    image: registry.invalid/pause
		EOF
	done
done
for n in "${LAB_NODES[@]}"; do
	for ((m = 1; m <= LAB_PODS_PER_NODE; m++)); do
		pod=web-$n-$m
		ip netns add "${LAB_PREFIX}pod-$n-$m"
		ip -n "${LAB_PREFIX}pod-$n-$m" link set lo up
		start=$(date +%s%N)
		if ! lab_cnitool "$n" add "$pod" >"$LAB_STATE/pods/$pod.json" 2>"$LAB_STATE/pods/$pod.err"; then
			cat "$LAB_STATE/pods/$pod.json" "$LAB_STATE/pods/$pod.err" >&2
			die "cnitool add for $pod on node-$n failed; see $LAB_STATE/logs/agent-node-$n.log"
		fi
		ms=$((($(date +%s%N) - start) / 1000000))
		addr=$(jq -r '.ips[0].address // empty' "$LAB_STATE/pods/$pod.json")
		[[ -n $addr ]] || die "cnitool add for $pod returned no address: $(cat "$LAB_STATE/pods/$pod.json")"
		printf '%s\t%s\t%s\n' "$pod" "$n" "${addr%/*}" >>"$LAB_STATE/pods.tsv"
		log "$pod on node-$n: ${addr%/*} (CNI ADD ${ms} ms)"
	done
done
echo complete >"$LAB_STATE/stage"
partial=0

# --- 7. check ----------------------------------------------------------------------

step "7/7 check"
# all_pods_reachable: one ping per ordered pod pair, stopping at the first
# failure. BGP needs a moment after the last pod to carry its block
# everywhere (sessions up, then one UPDATE).
all_pods_reachable() {
	local src dst
	while IFS=$'\t' read -r src _ _; do
		while IFS=$'\t' read -r dst _ ip; do
			[[ $src == "$dst" ]] && continue
			ip netns exec "${LAB_PREFIX}pod-${src#web-}" ping -c1 -W1 -q "$ip" >/dev/null 2>&1 || return 1
		done <"$LAB_STATE/pods.tsv"
	done <"$LAB_STATE/pods.tsv"
}
wait_until 30 "every pod reaching every other pod" all_pods_reachable || log "not every pod is reachable yet; the check shows which"
log "lab up in $((SECONDS - t0))s"
exec "$here/check.sh"
