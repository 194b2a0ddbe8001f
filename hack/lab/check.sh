#!/usr/bin/env bash
# Prints the lab's ping matrix (every pod to every other pod), each node's
# routes and the kubectl line. Exits 1 if any ping fails. make lab runs
# it at the end; run it again any time: hack/lab/check.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
need_root lab
[[ -s $LAB_STATE/pods.tsv ]] || die "no pods recorded in $LAB_STATE/pods.tsv: run make lab"
assets=$(lab_assets)

names=() nodes=() ips=()
while IFS=$'\t' read -r name node ip; do
	names+=("$name") nodes+=("$node") ips+=("$ip")
done <"$LAB_STATE/pods.tsv"

printf '\nPods:\n'
for i in "${!names[@]}"; do
	printf '  %-8s node-%s  %s\n' "${names[$i]}" "${nodes[$i]}" "${ips[$i]}"
done

# One ping per ordered pair (ping -c1 -W1 from the source pod's namespace).
printf '\nPing matrix (row pings column; ✓ reply, ✗ none, · self):\n%-9s' ""
for j in "${!names[@]}"; do printf '%-9s' "${names[$j]}"; done
printf '\n'
fails=0 total=0
for i in "${!names[@]}"; do
	printf '%-9s' "${names[$i]}"
	for j in "${!names[@]}"; do
		if ((i == j)); then
			mark="·"
		elif ip netns exec "${LAB_PREFIX}pod-${names[$i]#web-}" ping -c1 -W1 -q "${ips[$j]}" >/dev/null 2>&1; then
			mark="✓"
			total=$((total + 1))
		else
			mark="✗"
			total=$((total + 1)) fails=$((fails + 1))
		fi
		printf '%s        ' "$mark" # the marks are one column wide but multi-byte
	done
	printf '\n'
done
printf '%d of %d pings answered\n' "$((total - fails))" "$total"

for n in "${LAB_NODES[@]}"; do
	printf '\nip -n %snode-%s route\n' "$LAB_PREFIX" "$n"
	ip -n "${LAB_PREFIX}node-$n" route | sed 's/^/  /'
done

if [[ $(lab_mode) == tor ]]; then
	printf '\nip netns exec %srouter birdc show protocols; birdc show route\n' "$LAB_PREFIX"
	ip netns exec "${LAB_PREFIX}router" birdc -s "$LAB_STATE/bird.ctl" show protocols | sed 's/^/  /'
	ip netns exec "${LAB_PREFIX}router" birdc -s "$LAB_STATE/bird.ctl" show route | sed 's/^/  /'
fi

printf '\nThe API server is reachable only inside the lab namespaces:\n'
printf '  ip netns exec %sapi %s/kubectl --kubeconfig %s get nodes\n' "$LAB_PREFIX" "$assets" "$LAB_KUBECONFIG"
printf '  (or: hack/lab/kubectl get nodes)\nRemove the lab: make lab-down\n'
if ((fails)); then
	printf '\nlab: %d pings failed (agent logs: %s/logs/agent-node-*.log)\n' "$fails" "$LAB_STATE" >&2
	exit 1
fi
