package cluster

// checkIPAM's rules on hand-made facts, including reads that race with
// pods coming and going (the API tier is ipamcheck_api_test.go).
//
// Test addresses: pods 10.244.8.0/24.

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/wren-net/wren/pkg/ipam"
)

func TestCheckIPAMRules(t *testing.T) {
	a := netip.MustParseAddr
	pa := func(ip, pod string) ipam.Allocation {
		return ipam.Allocation{IP: a(ip), Handle: ipam.PodHandle("default", pod, "c-"+pod), Namespace: "default", Pod: pod, Node: "node-a"}
	}
	pod := func(name string, phase corev1.PodPhase, ips ...string) podFact {
		p := podFact{key: "default/" + name, node: "node-a", phase: phase}
		for _, ip := range ips {
			p.ips = append(p.ips, a(ip))
		}
		return p
	}
	pods := func(ps ...podFact) map[string]podFact {
		m := map[string]podFact{}
		for _, p := range ps {
			m[p.key] = p
		}
		return m
	}
	pool := []poolFact{{name: "pool-8", cidr: netip.MustParsePrefix("10.244.8.0/24")}}
	block := func(als ...ipam.Allocation) []ipam.Block {
		return []ipam.Block{{CIDR: netip.MustParsePrefix("10.244.8.0/26"), Affinity: "node-a", Allocations: als}}
	}
	nodes := map[string]bool{"node-a": true}

	for _, tc := range []struct {
		name string
		f    ipamFacts
		// findings as "leaked IP: reason" / "missing IP pod: reason"
		want []string
	}{
		{
			name: "handle without namespace and pod fields",
			f: ipamFacts{blocks: block(ipam.Allocation{IP: a("10.244.8.1"), Handle: "default/old-1/c1"}),
				pods: pods(), podsBefore: pods()},
			want: []string{"leaked 10.244.8.1: pod default/old-1 does not exist"},
		},
		{
			name: "unknown handle",
			f:    ipamFacts{blocks: block(ipam.Allocation{IP: a("10.244.8.1"), Handle: "something"}), pods: pods(), podsBefore: pods()},
			want: []string{`leaked 10.244.8.1: handle "something" names no pod or node`},
		},
		{
			name: "allocation of a hostNetwork pod",
			f: func() ipamFacts {
				p := pod("h", corev1.PodRunning, "198.18.0.11")
				p.hostNetwork = true
				return ipamFacts{blocks: block(pa("10.244.8.1", "h")), pods: pods(p), podsBefore: pods(p)}
			}(),
			want: []string{"leaked 10.244.8.1: pod default/h uses the host network"},
		},
		{
			name: "failed pod",
			f: ipamFacts{blocks: block(pa("10.244.8.1", "j")), pods: pods(pod("j", corev1.PodFailed, "10.244.8.1")),
				podsBefore: pods(pod("j", corev1.PodFailed, "10.244.8.1"))},
			want: []string{"leaked 10.244.8.1: pod default/j has finished (Failed)"},
		},
		{
			// The pod's status still shows the address its previous
			// sandbox had (released already): the new allocation is in
			// use, and the stale address is missing until the kubelet
			// updates the status.
			name: "status older than a new sandbox",
			f: ipamFacts{blocks: block(pa("10.244.8.2", "web")), pods: pods(pod("web", corev1.PodRunning, "10.244.8.1")),
				podsBefore: pods(pod("web", corev1.PodRunning, "10.244.8.1"))},
			want: []string{"missing 10.244.8.1 default/web: no allocation"},
		},
		{
			// A pod created after the pod list whose allocation was in
			// the blocks: the list read after the blocks has it.
			name: "pod created while reading",
			f:    ipamFacts{blocks: block(pa("10.244.8.1", "new")), pods: pods(pod("new", corev1.PodPending)), podsBefore: pods()},
		},
		{
			// A pod deleted (and its address released) after the pod
			// list: not missing.
			name: "pod deleted while reading",
			f:    ipamFacts{blocks: block(), pods: pods(), podsBefore: pods(pod("old", corev1.PodRunning, "10.244.8.1"))},
		},
		{
			name: "pod address given to a node",
			f: ipamFacts{blocks: block(ipam.Allocation{IP: a("10.244.8.1"), Handle: ipam.NodeHandle("node-a", ipam.NodeAddrVXLAN), Node: "node-a"}),
				pods: pods(pod("p", corev1.PodRunning, "10.244.8.1")), podsBefore: pods(pod("p", corev1.PodRunning, "10.244.8.1"))},
			want: []string{"missing 10.244.8.1 default/p: allocated to node node-a (handle node/node-a/vxlan)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.pools, tc.f.nodes = pool, nodes
			r := checkIPAM(tc.f)
			var got []string
			for _, l := range r.Leaked {
				got = append(got, "leaked "+l.IP.String()+": "+l.Reason)
			}
			for _, m := range r.Missing {
				got = append(got, "missing "+m.IP.String()+" "+m.Pod+": "+m.Reason)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if r.Summary.Problems != len(tc.want)+len(r.OrphanBlocks) {
				t.Errorf("problems %d, want %d", r.Summary.Problems, len(tc.want))
			}
		})
	}
}
