# shellcheck shell=bash
# Shared names and helpers of the local lab (hack/lab/up.sh, down.sh,
# check.sh and the kubectl/cnitool wrappers). See docs/lab.md.
#
# Everything the lab makes is one of:
#   - a network namespace whose name starts with "wrenlab-" (never linked
#     to the root namespace: veths are created with both ends already in
#     lab namespaces, and no address or route is added in the root one);
#   - a process started by up.sh, its pid in $LAB_STATE/pids/*.pid;
#   - a file under $LAB_STATE.
# Addresses: underlay 198.18.0.0/15 (benchmark range), pods 10.244.0.0/16,
# services 10.96.0.0/16 (never routed), all inside those namespaces only.

# shellcheck disable=SC2034 # used by the scripts that source this file
{
LAB_STATE=/var/run/wren-lab
LAB_PREFIX=wrenlab-
LAB_KUBECONFIG=$LAB_STATE/kubeconfig
LAB_API_IP=198.18.0.2
LAB_NODES=(1 2 3)
LAB_PODS_PER_NODE=2
LAB_HEALTH=127.0.0.1:9099
}

# lab_mode prints the lab's mode: the one recorded by up.sh, else
# $LAB_MODE, else bgp.
#   bgp   three nodes on one subnet, pool without encapsulation, BGP full mesh
#   vxlan nodes 1-2 and node 3 on two subnets joined by the router, VXLAN pool
#   tor   the vxlan topology without encapsulation: BIRD 2 on the router is
#         the top-of-rack, peering by eBGP with every node; no node mesh
lab_mode() {
	if [[ -r $LAB_STATE/mode ]]; then cat "$LAB_STATE/mode"; else echo "${LAB_MODE:-bgp}"; fi
}

# node_ip N prints node N's underlay address (no prefix length);
# node_gw N its default gateway (the router on its switch); node_sw N
# its switch namespace. In bgp mode every node is on sw1.
node_remote() { [[ $1 == 3 && $(lab_mode) != bgp ]]; }
node_ip() { if node_remote "$1"; then echo "198.18.1.1$1"; else echo "198.18.0.1$1"; fi; }
node_gw() { if node_remote "$1"; then echo 198.18.1.1; else echo 198.18.0.1; fi; }
# node_as N: in tor mode every node has its own AS (64512+N), as in
# Calico's AS-per-node top-of-rack design, so that a route the TOR passes
# from one node to another does not carry the receiver's own AS (eBGP
# loop prevention would drop it); otherwise all nodes share 64512.
node_as() { if [[ $(lab_mode) == tor ]]; then echo $((64512 + $1)); else echo 64512; fi; }
node_sw() { if node_remote "$1"; then echo ${LAB_PREFIX}sw2; else echo ${LAB_PREFIX}sw1; fi; }

log() { printf '%s lab: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $EUID -eq 0 ]] || die "run as root (network namespaces): sudo make ${1:-lab}"; }

# lab_lock makes up.sh and down.sh exclusive (a lock on this file, held
# on fd 9 until the script exits; start_bg closes fd 9 for the daemons).
lab_lock() {
	exec 9<"${BASH_SOURCE[0]}"
	flock -n 9 || die "another make lab or make lab-down is running"
}

# lab_namespaces lists the existing network namespaces named wrenlab-*.
lab_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^${LAB_PREFIX}" || true; }

# lab_assets prints the directory with kube-apiserver, kubectl and etcd
# recorded by up.sh.
lab_assets() {
	[[ -r $LAB_STATE/assets ]] || die "no lab is up ($LAB_STATE/assets missing): run make lab"
	cat "$LAB_STATE/assets"
}

# pid_is_lab PID reports whether PID is alive and still one of the lab's
# processes: its command line names the state dir (etcd's data dir, the
# apiserver's certificates, the agents' kubeconfig). This guards against
# killing an unrelated process that reused a recorded pid.
pid_is_lab() {
	local pid=$1
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$LAB_STATE/"
}

# start_bg NAME NETNS CMD... runs CMD inside NETNS in its own session
# (so a Ctrl-C of make does not reach it), logging to logs/NAME.log and
# recording its pid in pids/NAME.pid. The pid is written by the shell
# that then execs "ip netns exec", which execs CMD: it is CMD's pid.
start_bg() {
	local name=$1 ns=$2
	shift 2
	local pidfile=$LAB_STATE/pids/$name.pid
	rm -f "$pidfile"
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
		"$pidfile" ip netns exec "$ns" "$@" \
		</dev/null >>"$LAB_STATE/logs/$name.log" 2>&1 9<&- &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	die "$name did not start (no $pidfile); see $LAB_STATE/logs/$name.log"
}

# wait_until DEADLINE_SECONDS WHAT CMD... polls CMD every 0.5 s until it
# succeeds, printing progress every 5 s; fails after the deadline. If
# WAIT_PID is set and that process dies, it fails at once.
wait_until() {
	local deadline=$1 what=$2
	shift 2
	local start=$SECONDS next=5
	until "$@" >/dev/null 2>&1; do
		if [[ -n ${WAIT_PID:-} ]] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
			log "$what: the process exited"
			return 1
		fi
		if ((SECONDS - start >= deadline)); then
			log "$what: not after ${deadline}s"
			return 1
		fi
		if ((SECONDS - start >= next)); then
			log "$what: still waiting ($((SECONDS - start))s of ${deadline}s)"
			next=$((next + 5))
		fi
		sleep 0.5
	done
}

# in_cni_cache CMD... runs CMD in a private mount namespace where
# $LAB_STATE/cni-varlib is bind-mounted over /var/lib, so cnitool's result
# cache (/var/lib/cni/results, which libcni hard-codes) lands in the state
# dir instead of the root filesystem. Nothing else reads /var/lib there.
in_cni_cache() {
	mkdir -p "$LAB_STATE/cni-varlib/cni"
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --propagation private -- \
		bash -c 'mount --bind "$0" /var/lib && exec "$@"' "$LAB_STATE/cni-varlib" "$@"
}

# cnitool_path prints the cnitool binary (hack/deps.sh installs it).
cnitool_path() {
	local c
	c="$(go env GOPATH 2>/dev/null)/bin/cnitool"
	[[ -x $c ]] || c=$(command -v cnitool || true)
	[[ -n $c && -x $c ]] || die "cnitool not found: run hack/deps.sh (go install github.com/containernetworking/cni/cnitool@v1.2.3)"
	echo "$c"
}

# lab_cnitool N CMD POD runs "cnitool CMD k8s-pod-network" for pod POD
# (web-N-M, namespace default) inside node N's namespace with that node's
# conflist (agent_socket = $LAB_STATE/node-N/wren.sock).
lab_cnitool() {
	local n=$1 cmd=$2 pod=$3 repo cnitool
	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	cnitool=$(cnitool_path)
	in_cni_cache ip netns exec "${LAB_PREFIX}node-$n" env \
		CNI_PATH="$repo/bin" NETCONFPATH="$LAB_STATE/node-$n/net.d" \
		CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" \
		"$cnitool" "$cmd" k8s-pod-network "/var/run/netns/${LAB_PREFIX}pod-${pod#web-}"
}
