package agent

// Addresses: pools 10.244.7.0/25 (VXLAN) and 10.244.9.0/24 (IPIP
// CrossSubnet, disabled); nodes by name only.

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// TestBlocksView: blocks join the pool that contains them; a pool counts
// its blocks' allocations; an address used by a node other than its
// block's is borrowed (one that names no node is not, as pkg/desired
// routes it); the pod comes from the allocation, else from a pod handle,
// and a node's tunnel address has none.
func TestBlocksView(t *testing.T) {
	ip, pfx := netip.MustParseAddr, netip.MustParsePrefix
	pools := []model.Pool{
		{Name: "default", CIDR: pfx("10.244.7.0/25"), BlockSize: 26, VXLAN: model.EncapAlways, IPIP: model.EncapNever, NATOutgoing: true},
		{Name: "old", CIDR: pfx("10.244.9.0/24"), VXLAN: model.EncapNever, IPIP: model.EncapCrossSubnet, Disabled: true},
	}
	blocks := []ipam.Block{
		{CIDR: pfx("10.244.7.0/26"), Affinity: "node-a", State: ipam.StateConfirmed, Allocations: []ipam.Allocation{
			{IP: ip("10.244.7.0"), Handle: ipam.NodeHandle("node-a", ipam.NodeAddrVXLAN), Node: "node-a"},
			{IP: ip("10.244.7.1"), Handle: ipam.NodeHandle("node-c", ipam.NodeAddrVXLAN), Node: "node-c"},
			{IP: ip("10.244.7.3"), Handle: ipam.PodHandle("default", "node-c-web", "ctr1"), Namespace: "default", Pod: "node-c-web", ContainerID: "ctr1", Node: "node-c"},
			// Written by a client that filled in only the handle.
			{IP: ip("10.244.7.4"), Handle: ipam.PodHandle("kube-system", "dns", "ctr2")},
		}},
		{CIDR: pfx("10.244.9.64/26"), Affinity: "node-b", State: ipam.StatePending},
		{CIDR: pfx("10.244.8.0/26"), Affinity: "", State: ipam.StateConfirmed, Allocations: []ipam.Allocation{
			{IP: ip("10.244.8.1"), Handle: ipam.PodHandle("default", "left", "ctr3"), Namespace: "default", Pod: "left", Node: "node-b"},
		}},
	}
	want := BlocksView{
		Pools: []PoolView{
			{Name: "default", CIDR: pfx("10.244.7.0/25"), Mode: "vxlan", NATOutgoing: true, BlockSize: 26, Size: 128, Blocks: 1, Used: 4, Free: 123},
			{Name: "old", CIDR: pfx("10.244.9.0/24"), Mode: "ipip-cross-subnet", Disabled: true, BlockSize: 26, Size: 256, Blocks: 1, Used: 0, Free: 192},
		},
		Blocks: []BlockView{
			{CIDR: pfx("10.244.7.0/26"), Pool: "default", Node: "node-a", State: "confirmed", Used: 4, Free: 59, Allocations: []AllocationView{
				{IP: ip("10.244.7.0"), Handle: "node/node-a/vxlan", Node: "node-a"},
				{IP: ip("10.244.7.1"), Handle: "node/node-c/vxlan", Node: "node-c", Borrowed: true},
				{IP: ip("10.244.7.3"), Handle: "default/node-c-web/ctr1", Pod: "default/node-c-web", Node: "node-c", Borrowed: true},
				{IP: ip("10.244.7.4"), Handle: "kube-system/dns/ctr2", Pod: "kube-system/dns"},
			}},
			{CIDR: pfx("10.244.9.64/26"), Pool: "old", Node: "node-b", State: "pending", Used: 0, Free: 64},
			{CIDR: pfx("10.244.8.0/26"), State: "confirmed", Used: 1, Free: 63, Allocations: []AllocationView{
				{IP: ip("10.244.8.1"), Handle: "default/left/ctr3", Pod: "default/left", Node: "node-b", Borrowed: true},
			}},
		},
	}
	// Reserved: 10.244.7.0/30 (.0, .1 and .3 allocated before; .2 not
	// free), again .2 alone (counted once), and 10.244.9.128/26 of "old".
	res := []ipam.Reservation{{Name: "r1", CIDR: pfx("10.244.7.0/30")}, {Name: "r2", CIDR: pfx("10.244.7.2/32")}, {Name: "r3", CIDR: pfx("10.244.9.128/26")}}
	got := blocksView(pools, blocks, res)
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("blocksView (-want +got):\n%s", d)
	}
	for _, p := range []struct {
		p    model.Pool
		mode string
	}{
		{model.Pool{VXLAN: model.EncapNever, IPIP: model.EncapNever}, "bgp"},
		{model.Pool{}, "bgp"},
		{model.Pool{VXLAN: model.EncapCrossSubnet, IPIP: model.EncapNever}, "vxlan-cross-subnet"},
		{model.Pool{VXLAN: model.EncapNever, IPIP: model.EncapAlways}, "ipip"},
	} {
		if got := poolMode(p.p); got != p.mode {
			t.Errorf("poolMode(vxlan %q, ipip %q) = %q, want %q", p.p.VXLAN, p.p.IPIP, got, p.mode)
		}
	}
}
