// Test addresses: nodes 198.18.0.0/15, pools inside 10.244.0.0/16.
package desired

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/tunnel"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func nodeN(name, ip, vx string) model.Node {
	n := model.Node{Name: name, IP: pfx(ip)}
	if vx != "" {
		n.VXLANTunnelIP, n.VTEPMAC = addr(vx), tunnel.VTEPMAC(name)
	}
	return n
}

func blk(cidr, node, state string, allocs ...ipam.Allocation) ipam.Block {
	return ipam.Block{CIDR: pfx(cidr), Affinity: node, State: state, Allocations: allocs}
}

func routesText(rs []model.Route) string {
	var lines []string
	for _, r := range rs {
		lines = append(lines, r.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestBuild(t *testing.T) {
	a := nodeN("node-a", "198.18.0.11/24", "10.244.1.0")
	b := nodeN("node-b", "198.18.0.12/24", "10.244.2.0")
	c := nodeN("node-c", "198.18.1.13/24", "10.244.3.0")
	web := model.Workload{Namespace: "default", Name: "web", HostIface: "cali1111111111a", IP: addr("10.244.1.5")}
	blocks := []ipam.Block{
		blk("10.244.1.0/26", "node-a", ipam.StateConfirmed, ipam.Allocation{IP: addr("10.244.1.5"), Node: "node-a"},
			ipam.Allocation{IP: addr("10.244.1.40"), Node: "node-c"}), // borrowed by c
		blk("10.244.2.0/26", "node-b", ipam.StateConfirmed),
		blk("10.244.3.0/26", "node-c", ipam.StateConfirmed),
		blk("10.244.4.0/26", "node-b", ipam.StatePending), // unconfirmed: not routed
	}
	tests := []struct {
		name    string
		mode    model.Pool
		want    string
		podMTU  int
		vteps   int
		tunnels bool
	}{
		{"vxlan always", model.Pool{VXLAN: model.EncapAlways, IPIP: model.EncapNever}, strings.Join([]string{
			"10.244.1.40/32 via 10.244.3.0 dev vxlan.calico onlink mtu 1450",
			"10.244.1.5/32 dev cali1111111111a scope link",
			"10.244.2.0/26 via 10.244.2.0 dev vxlan.calico onlink mtu 1450",
			"10.244.3.0/26 via 10.244.3.0 dev vxlan.calico onlink mtu 1450",
			"blackhole 10.244.1.0/26",
		}, "\n"), 1450, 2, true},
		{"vxlan cross subnet", model.Pool{VXLAN: model.EncapCrossSubnet, IPIP: model.EncapNever}, strings.Join([]string{
			"10.244.1.40/32 via 10.244.3.0 dev vxlan.calico onlink mtu 1450",
			"10.244.1.5/32 dev cali1111111111a scope link",
			"10.244.2.0/26 via 198.18.0.12 dev eth0 onlink",
			"10.244.3.0/26 via 10.244.3.0 dev vxlan.calico onlink mtu 1450",
			"blackhole 10.244.1.0/26",
		}, "\n"), 1450, 2, true},
		{"ipip cross subnet", model.Pool{VXLAN: model.EncapNever, IPIP: model.EncapCrossSubnet}, strings.Join([]string{
			"10.244.1.40/32 via 198.18.1.13 dev tunl0 onlink mtu 1480",
			"10.244.1.5/32 dev cali1111111111a scope link",
			"10.244.2.0/26 via 198.18.0.12 dev eth0",
			"10.244.3.0/26 via 198.18.1.13 dev tunl0 onlink mtu 1480",
			"blackhole 10.244.1.0/26",
		}, "\n"), 1480, 0, false},
		{"no encap", model.Pool{VXLAN: model.EncapNever, IPIP: model.EncapNever}, strings.Join([]string{
			"10.244.1.40/32 via 198.18.1.13 dev eth0",
			"10.244.1.5/32 dev cali1111111111a scope link",
			"10.244.2.0/26 via 198.18.0.12 dev eth0",
			"10.244.3.0/26 via 198.18.1.13 dev eth0",
			"blackhole 10.244.1.0/26",
		}, "\n"), 1500, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := tt.mode
			pool.Name, pool.CIDR = "default", pfx("10.244.0.0/16")
			self := a
			self.IPIPTunnelIP = addr("10.244.1.1")
			d, errs := Build(Inputs{Self: self, Nodes: []model.Node{a, b, c}, Pools: []model.Pool{pool}, Blocks: blocks,
				Workloads: []model.Workload{web}, HostMTU: 1500, Uplink: "eth0"})
			if len(errs) != 0 {
				t.Fatal(errs)
			}
			if diff := cmp.Diff(tt.want, routesText(d.Routes)); diff != "" {
				t.Errorf("routes (-want +got)\n%s", diff)
			}
			if d.PodMTU != tt.podMTU || len(d.Tunnels.VTEPs) != tt.vteps || (d.Tunnels.VXLAN != nil) != tt.tunnels {
				t.Errorf("podMTU %d vteps %d vxlan %v", d.PodMTU, len(d.Tunnels.VTEPs), d.Tunnels.VXLAN)
			}
			if tt.tunnels && (d.Tunnels.VXLAN.Address != addr("10.244.1.0") || d.Tunnels.VXLAN.MTU != 1450 || d.Tunnels.VXLAN.Parent != "eth0") {
				t.Errorf("vxlan %+v", d.Tunnels.VXLAN)
			}
		})
	}
}

// TestBuildGaps: objects that cannot be routed yet are named; the rest
// is built.
func TestBuildGaps(t *testing.T) {
	a := nodeN("node-a", "198.18.0.11/24", "10.244.1.0")
	noVX := nodeN("node-b", "198.18.0.12/24", "") // not yet published
	d, errs := Build(Inputs{Self: a, Nodes: []model.Node{a, noVX},
		Pools: []model.Pool{{Name: "p", CIDR: pfx("10.244.0.0/16"), VXLAN: model.EncapAlways}},
		Blocks: []ipam.Block{
			blk("10.244.1.0/26", "node-a", ipam.StateConfirmed),
			blk("10.244.2.0/26", "node-b", ipam.StateConfirmed),
			blk("10.99.0.0/26", "node-b", ipam.StateConfirmed),
			blk("10.244.5.0/26", "node-gone", ipam.StateConfirmed),
			blk("10.244.6.7/32", "node-a", ipam.StateConfirmed),
		}, HostMTU: 1500, Uplink: "eth0"})
	text := ""
	for _, e := range errs {
		text += e.Error() + "\n"
	}
	for _, want := range []string{
		"block 10.244.2.0/26 of node node-b: node has no VXLAN tunnel address yet",
		"block 10.99.0.0/26: inside no IPPool",
		`block 10.244.5.0/26: its node "node-gone" is unknown`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("errors lack %q:\n%s", want, text)
		}
	}
	if got := routesText(d.Routes); got != "blackhole 10.244.1.0/26" {
		t.Errorf("routes %q; want only the own blackhole (none for the /32 block)", got)
	}
}

// TestBuildBGP: with the speaker running, remote blocks and borrowed
// addresses of non-VXLAN pools come from learned paths, shaped by the
// pool's mode towards the next hop's node; VXLAN pools keep coming from
// the IPAMBlocks; what the node advertises is its confirmed blocks
// (unless disableBGPExport), its borrowed pods' /32s and service ranges.
func TestBuildBGP(t *testing.T) {
	a := nodeN("node-a", "198.18.0.11/24", "")
	b := nodeN("node-b", "198.18.0.12/24", "")
	c := nodeN("node-c", "198.18.1.13/24", "10.244.9.0")
	borrowed := model.Workload{Namespace: "default", Name: "guest", HostIface: "cali2222222222b", IP: addr("10.244.2.7")}
	web := model.Workload{Namespace: "default", Name: "web", HostIface: "cali1111111111a", IP: addr("10.244.1.5")}
	pools := []model.Pool{
		{Name: "plain", CIDR: pfx("10.244.0.0/20"), VXLAN: model.EncapNever, IPIP: model.EncapNever},
		{Name: "vx", CIDR: pfx("10.244.16.0/20"), VXLAN: model.EncapAlways, IPIP: model.EncapNever},
		{Name: "quiet", CIDR: pfx("10.244.32.0/20"), VXLAN: model.EncapNever, IPIP: model.EncapNever, DisableBGPExport: true},
	}
	blocks := []ipam.Block{
		blk("10.244.1.0/26", "node-a", ipam.StateConfirmed, ipam.Allocation{IP: addr("10.244.1.5"), Node: "node-a"}),
		blk("10.244.32.0/26", "node-a", ipam.StateConfirmed),
		blk("10.244.2.0/26", "node-b", ipam.StateConfirmed, ipam.Allocation{IP: addr("10.244.2.7"), Node: "node-a"}),
		blk("10.244.3.0/26", "node-c", ipam.StateConfirmed), // learned below
		blk("10.244.4.0/26", "node-b", ipam.StateConfirmed), // not learned: no route
		blk("10.244.16.0/26", "node-c", ipam.StateConfirmed),
	}
	in := Inputs{Self: a, Nodes: []model.Node{a, b, c}, Pools: pools, Blocks: blocks, Workloads: []model.Workload{web, borrowed},
		HostMTU: 1500, Uplink: "eth0", BGP: true, ServiceCIDRs: []netip.Prefix{pfx("10.96.0.0/12")},
		Learned: []model.LearnedRoute{
			{Prefix: pfx("10.244.2.0/26"), NextHop: addr("198.18.0.12")},
			{Prefix: pfx("10.244.3.0/26"), NextHop: addr("198.18.1.13")},
			{Prefix: pfx("10.244.5.0/26"), NextHop: addr("198.18.0.1")},   // from a router, not a node
			{Prefix: pfx("10.244.1.0/26"), NextHop: addr("198.18.0.12")},  // our own block
			{Prefix: pfx("10.244.2.7/32"), NextHop: addr("198.18.0.12")},  // our own pod
			{Prefix: pfx("10.244.16.0/26"), NextHop: addr("198.18.1.13")}, // VXLAN pool: from the API
			{Prefix: pfx("192.168.0.0/24"), NextHop: addr("198.18.0.12")}, // outside every pool
		}}
	d, errs := Build(in)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := strings.Join([]string{
		"10.244.1.5/32 dev cali1111111111a scope link",
		"10.244.16.0/26 via 10.244.9.0 dev vxlan.calico onlink mtu 1450",
		"10.244.2.0/26 via 198.18.0.12 dev eth0",
		"10.244.2.7/32 dev cali2222222222b scope link",
		"10.244.3.0/26 via 198.18.1.13 dev eth0",
		"10.244.5.0/26 via 198.18.0.1 dev eth0",
		"blackhole 10.244.1.0/26",
		"blackhole 10.244.32.0/26",
	}, "\n")
	if diff := cmp.Diff(want, routesText(d.Routes)); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	var adv []string
	for _, p := range d.Advertise {
		adv = append(adv, p.String())
	}
	if got, want := strings.Join(adv, " "), "10.96.0.0/12 10.244.1.0/26 10.244.2.7/32"; got != want {
		t.Errorf("advertised %q, want %q", got, want)
	}
}

// TestWhyNot: the reason the debug API gives for each learned route Wren
// does not install, and none for one it does.
func TestWhyNot(t *testing.T) {
	a := nodeN("node-a", "198.18.0.11/24", "")
	pools := []model.Pool{
		{Name: "plain", CIDR: pfx("10.244.0.0/20"), VXLAN: model.EncapNever, IPIP: model.EncapNever},
		{Name: "vx", CIDR: pfx("10.244.16.0/20"), VXLAN: model.EncapAlways, IPIP: model.EncapNever},
		{Name: "off", CIDR: pfx("10.244.48.0/20"), VXLAN: model.EncapNever, IPIP: model.EncapNever, Disabled: true},
	}
	in := Inputs{Self: a, Nodes: []model.Node{a}, Pools: pools, HostMTU: 1500, Uplink: "eth0", BGP: true,
		Blocks:    []ipam.Block{blk("10.244.1.0/26", "node-a", ipam.StateConfirmed)},
		Workloads: []model.Workload{{Namespace: "default", Name: "guest", HostIface: "cali2222222222b", IP: addr("10.244.2.7")}}}
	s := NewLearnedShaper(in)
	for p, want := range map[string]string{
		"10.244.2.0/26":  "",
		"192.168.0.0/24": "outside every IPPool",
		"10.244.16.0/26": "its IPPool vx uses VXLAN: its routes come from the IPAM blocks, not from BGP",
		"10.244.48.0/26": "its IPPool off is disabled",
		"10.244.2.7/32":  "a pod on this node holds this address",
		"10.244.1.0/26":  "superseded by a local block",
		"10.244.1.8/29":  "superseded by a local block",
	} {
		if got := s.WhyNot(pfx(p)); got != want {
			t.Errorf("WhyNot(%s) = %q, want %q", p, got, want)
		}
		if s.Handles(pfx(p)) != (want == "") {
			t.Errorf("Handles(%s) disagrees with WhyNot %q", p, want)
		}
	}
}

// TestNAT: every pool, disabled or not, is a pool whose destinations are
// never masqueraded; only natOutgoing pools (disabled ones too) are
// masqueraded sources; Build carries the result.
func TestNAT(t *testing.T) {
	pools := []model.Pool{
		{Name: "b", CIDR: pfx("10.244.16.0/20"), NATOutgoing: true, Disabled: true},
		{Name: "a", CIDR: pfx("10.244.0.0/20"), NATOutgoing: true},
		{Name: "c", CIDR: pfx("10.244.32.0/20")},
		{Name: "d", CIDR: pfx("10.244.48.0/20"), Disabled: true},
	}
	want := model.NAT{
		Masquerade: []netip.Prefix{pfx("10.244.0.0/20"), pfx("10.244.16.0/20")},
		Pools:      []netip.Prefix{pfx("10.244.0.0/20"), pfx("10.244.16.0/20"), pfx("10.244.32.0/20"), pfx("10.244.48.0/20")},
	}
	if diff := cmp.Diff(want, NAT(pools), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("NAT (-want +got)\n%s", diff)
	}
	d, _ := Build(Inputs{Self: nodeN("n1", "198.18.0.11/24", ""), Pools: pools, HostMTU: 1500, Uplink: "eth0"})
	if diff := cmp.Diff(want, d.NAT, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Build's NAT (-want +got)\n%s", diff)
	}
	if n := NAT(pools[2:]); len(n.Masquerade) != 0 || len(n.Pools) != 2 {
		t.Errorf("no natOutgoing pool: %+v; want no Masquerade and both pools", n)
	}
}
