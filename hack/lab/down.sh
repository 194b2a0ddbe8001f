#!/usr/bin/env bash
# make lab-down: removes exactly what make lab made, and nothing else:
#   1. the processes whose pids are in /var/run/wren-lab/pids (agents,
#      then kube-apiserver, then etcd), each only if its command line
#      still names /var/run/wren-lab (a reused pid is left alone);
#   2. every network namespace whose name starts with wrenlab-;
#   3. /var/run/wren-lab.
# Safe to run twice, and on a half-built lab.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
need_root lab-down
lab_lock
if [[ ! -e $LAB_STATE && -z $(lab_namespaces) ]]; then
	log "no lab to remove"
	exit 0
fi

pids=() names=()
if [[ -d $LAB_STATE/pids ]]; then
	for f in "$LAB_STATE"/pids/agent-*.pid "$LAB_STATE"/pids/kube-apiserver.pid "$LAB_STATE"/pids/etcd.pid "$LAB_STATE"/pids/*.pid; do
		[[ -e $f ]] || continue
		name=$(basename "$f" .pid)
		[[ " ${names[*]} " == *" $name "* ]] && continue
		names+=("$name")
		pid=$(cat "$f")
		if pid_is_lab "$pid"; then
			log "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			# Clients before servers: let the agents go before the API does.
			if [[ $name == agent-* || $name == kube-apiserver ]]; then
				for ((i = 0; i < 100; i++)); do pid_is_lab "$pid" || break; sleep 0.1; done
			fi
		fi
	done
fi
for pid in "${pids[@]}"; do
	for ((i = 0; i < 100; i++)); do pid_is_lab "$pid" || break; sleep 0.1; done
	if pid_is_lab "$pid"; then
		log "pid $pid did not exit on SIGTERM within 10s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
done

for ns in $(lab_namespaces); do
	ip netns del "$ns"
done
[[ -z $(lab_namespaces) ]] || die "namespaces left: $(lab_namespaces | tr '\n' ' ')"
rm -rf "$LAB_STATE"
log "lab removed (${#pids[@]} processes, namespaces ${LAB_PREFIX}*, $LAB_STATE)"
