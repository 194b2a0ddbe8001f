//go:build linux

package nstest_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
	"golang.org/x/sys/unix"
)

// wantRoute is a route's netlink attributes as SPEC.md prescribes.
type wantRoute struct {
	typ, scope int
	onlink     bool
	gw         string // "" for none
	dev        string // "" for none
	mtu        int
}

func (w wantRoute) String() string {
	return fmt.Sprintf("type=%d scope=%d onlink=%v gw=%q dev=%q mtu=%d", w.typ, w.scope, w.onlink, w.gw, w.dev, w.mtu)
}

// expectedRoutes derives the node's own routes from the topology,
// independently of plan().
func expectedRoutes(n *node, m mode, all []*node) map[netip.Prefix]wantRoute {
	want := map[netip.Prefix]wantRoute{
		n.block: {typ: unix.RTN_BLACKHOLE, scope: unix.RT_SCOPE_UNIVERSE},
	}
	for _, p := range n.pods {
		want[netip.PrefixFrom(p.w.IP, 32)] = wantRoute{typ: unix.RTN_UNICAST, scope: unix.RT_SCOPE_LINK, dev: p.w.HostIface}
	}
	for _, peer := range all {
		if peer == n {
			continue
		}
		var w wantRoute
		switch n.encapTo(peer, m) {
		case "vxlan":
			w = wantRoute{unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, true, peer.tunIP.String(), "vxlan.calico", 1450}
		case "ipip":
			w = wantRoute{unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, true, peer.addr.Addr().String(), "tunl0", 1480}
		default:
			w = wantRoute{unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, m.vxlan == model.EncapCrossSubnet, peer.addr.Addr().String(), "eth0", 0}
		}
		want[peer.block] = w
	}
	return want
}

// assertNodeState checks the whole kernel state of a node on netlink
// attributes: own routes, tunnel device, VTEP neighbours and FDB, cali
// veths and their sysctls, and each pod's side.
func assertNodeState(t *testing.T, n *node, m mode, all []*node) {
	t.Helper()
	assertRoutes(t, n, expectedRoutes(n, m, all))
	if got := n.ns.ReadSysctl(t, "net.ipv4.ip_forward"); got != "1" {
		t.Errorf("%s: ip_forward=%s", n.name, got)
	}
	if m.vxlan != model.EncapNever {
		assertVXLAN(t, n, all)
	} else if _, err := n.ns.NL.LinkByName("vxlan.calico"); err == nil {
		t.Errorf("%s: vxlan.calico exists in a mode without VXLAN", n.name)
	}
	for _, p := range n.pods {
		assertPod(t, n, p)
	}
}

func assertRoutes(t *testing.T, n *node, want map[netip.Prefix]wantRoute) {
	t.Helper()
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Prefix]wantRoute{}
	for _, r := range rs {
		w := wantRoute{typ: r.Type, scope: int(r.Scope), onlink: r.Flags&unix.RTNH_F_ONLINK != 0, mtu: r.MTU}
		if r.Gw != nil {
			w.gw = r.Gw.String()
		}
		if r.LinkIndex != 0 {
			l, err := n.ns.NL.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			w.dev = l.Attrs().Name
		}
		p, _ := netip.ParsePrefix(r.Dst.String())
		if r.Priority != 0 {
			t.Errorf("%s: route %s has metric %d", n.name, p, r.Priority)
		}
		got[p] = w
	}
	for dst, w := range want {
		g, ok := got[dst]
		switch {
		case !ok:
			t.Errorf("%s: route %s missing; want %s", n.name, dst, w)
		case g != w:
			t.Errorf("%s: route %s = %s; want %s", n.name, dst, g, w)
		}
	}
	for dst := range got {
		if _, ok := want[dst]; !ok {
			t.Errorf("%s: unexpected own route %s %s", n.name, dst, got[dst])
		}
	}
}

func assertVXLAN(t *testing.T, n *node, all []*node) {
	t.Helper()
	l, err := n.ns.NL.LinkByName("vxlan.calico")
	if err != nil {
		t.Fatalf("%s: vxlan.calico: %v", n.name, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s: vxlan.calico is a %s", n.name, l.Type())
	}
	eth0 := n.ns.Link(t, "eth0")
	a := vx.Attrs()
	if vx.VxlanId != 4096 || vx.Port != 4789 || vx.Learning || !vx.SrcAddr.Equal(net.IP(n.addr.Addr().AsSlice())) ||
		vx.VtepDevIndex != eth0.Attrs().Index || a.MTU != n.hostMT-50 || a.HardwareAddr.String() != tunnel.VTEPMAC(n.name).String() ||
		a.Flags&net.FlagUp == 0 {
		t.Errorf("%s: vxlan.calico id=%d port=%d learning=%v local=%s parent=%d mtu=%d mac=%s flags=%s",
			n.name, vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, vx.VtepDevIndex, a.MTU, a.HardwareAddr, a.Flags)
	}
	if !strings.HasPrefix(a.HardwareAddr.String(), "66:") {
		t.Errorf("%s: VTEP MAC %s lacks the 66: prefix", n.name, a.HardwareAddr)
	}
	addrs, err := n.ns.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != n.tunIP.String()+"/32" {
		t.Errorf("%s: vxlan.calico addresses %v, want exactly %s/32", n.name, addrs, n.tunIP)
	}
	neighs, err := n.ns.NL.NeighList(a.Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := n.ns.NL.NeighList(a.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range all {
		if peer == n {
			continue
		}
		mac := tunnel.VTEPMAC(peer.name).String()
		found := false
		for _, ne := range neighs {
			if ne.IP.String() == peer.tunIP.String() {
				found = true
				if ne.HardwareAddr.String() != mac || ne.State&unix.NUD_PERMANENT == 0 {
					t.Errorf("%s: neighbour %s = %s state %#x; want %s permanent", n.name, peer.tunIP, ne.HardwareAddr, ne.State, mac)
				}
			}
		}
		if !found {
			t.Errorf("%s: no neighbour for %s's tunnel address %s", n.name, peer.name, peer.tunIP)
		}
		found = false
		for _, f := range fdb {
			if f.HardwareAddr.String() == mac {
				found = true
				if f.IP.String() != peer.addr.Addr().String() || f.State&unix.NUD_PERMANENT == 0 || f.Flags&unix.NTF_SELF == 0 {
					t.Errorf("%s: fdb %s dst %s state %#x flags %#x; want dst %s permanent self", n.name, mac, f.IP, f.State, f.Flags, peer.addr.Addr())
				}
			}
		}
		if !found {
			t.Errorf("%s: no FDB entry for %s (%s)", n.name, peer.name, mac)
		}
	}
}

func assertPod(t *testing.T, n *node, p *pod) {
	t.Helper()
	host := n.ns.Link(t, p.w.HostIface)
	ha := host.Attrs()
	if host.Type() != "veth" || ha.HardwareAddr.String() != proxyarp.HostMAC || ha.MTU != p.w.MTU || ha.Flags&net.FlagUp == 0 {
		t.Errorf("%s: %s type=%s mac=%s mtu=%d flags=%s", n.name, ha.Name, host.Type(), ha.HardwareAddr, ha.MTU, ha.Flags)
	}
	hostAddrs, _ := n.ns.NL.AddrList(host, netlink.FAMILY_V4)
	if len(hostAddrs) != 0 {
		t.Errorf("%s: %s has IPv4 addresses %v", n.name, ha.Name, hostAddrs)
	}
	for key, want := range map[string]string{
		"net.ipv4.conf.%s.proxy_arp":      "1",
		"net.ipv4.conf.%s.forwarding":     "1",
		"net.ipv4.conf.%s.route_localnet": "1",
		"net.ipv4.neigh.%s.proxy_delay":   "0",
		"net.ipv6.conf.%s.accept_ra":      "0",
	} {
		k := fmt.Sprintf(key, ha.Name)
		if got := n.ns.ReadSysctl(t, k); got != want {
			t.Errorf("%s: %s=%s, want %s", n.name, k, got, want)
		}
	}
	eth0 := p.ns.Link(t, "eth0")
	if eth0.Attrs().MTU != p.w.MTU {
		t.Errorf("%s: eth0 MTU %d, want %d", p.w.Key(), eth0.Attrs().MTU, p.w.MTU)
	}
	addrs, _ := p.ns.NL.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != p.w.IP.String()+"/32" {
		t.Errorf("%s: eth0 addresses %v, want %s/32", p.w.Key(), addrs, p.w.IP)
	}
	rs, _ := p.ns.NL.RouteList(eth0, netlink.FAMILY_V4)
	var gwRoute, defRoute bool
	for _, r := range rs {
		switch {
		case r.Dst != nil && r.Dst.String() == "169.254.1.1/32" && r.Scope == netlink.SCOPE_LINK && r.Gw == nil:
			gwRoute = true
		case (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "169.254.1.1":
			defRoute = true
		}
	}
	if !gwRoute || !defRoute {
		t.Errorf("%s: pod routes %v; want 169.254.1.1 scope link and default via 169.254.1.1", p.w.Key(), rs)
	}
	// Any neighbour entry for the gateway must have been learnt by proxy
	// ARP from the host side (ee:ee:...), never configured statically.
	neighs, _ := p.ns.NL.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
	for _, ne := range neighs {
		if ne.IP.String() == "169.254.1.1" && ne.State&unix.NUD_PERMANENT != 0 {
			t.Errorf("%s: static ARP entry for 169.254.1.1", p.w.Key())
		}
	}
}

func TestVXLANAlways(t *testing.T) {
	c := newCluster(t, vxlanAlways, true)
	if err := c.converge(t, vxlanAlways); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		assertNodeState(t, n, vxlanAlways, c.nodes)
	}
	c.pingAll(t)
	assertProxyARPLearnt(t, c)
}

func TestVXLANCrossSubnet(t *testing.T) {
	c := newCluster(t, vxlanCrossSubnet, true)
	if err := c.converge(t, vxlanCrossSubnet); err != nil {
		t.Fatal(err)
	}
	// a and b share subnet 1: direct onlink; c is behind the router: VXLAN.
	a, b, cn := c.nodes[0], c.nodes[1], c.nodes[2]
	if a.encapTo(b, vxlanCrossSubnet) != "direct" || a.encapTo(cn, vxlanCrossSubnet) != "vxlan" {
		t.Fatal("topology does not exercise both CrossSubnet paths")
	}
	for _, n := range c.nodes {
		assertNodeState(t, n, vxlanCrossSubnet, c.nodes)
	}
	c.pingAll(t)
}

func TestNoEncap(t *testing.T) {
	c := newCluster(t, noEncap, false)
	if err := c.converge(t, noEncap); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		assertNodeState(t, n, noEncap, c.nodes)
	}
	c.pingAll(t)
}

// TestIPIPAlways runs the same scenario over tunl0 where the kernel has
// ipip; this machine's kernel does not, and the test says so.
func TestIPIPAlways(t *testing.T) {
	c := newCluster(t, ipipAlways, true)
	err := c.converge(t, ipipAlways)
	if errors.Is(err, tunnel.ErrNoIPIP) {
		t.Skip("kernel lacks ipip")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		assertNodeState(t, n, ipipAlways, c.nodes)
	}
	c.pingAll(t)
}

// assertProxyARPLearnt: after traffic, each pod resolved 169.254.1.1 to
// the host side's ee:ee:ee:ee:ee:ee by proxy ARP.
func assertProxyARPLearnt(t *testing.T, c *cluster) {
	t.Helper()
	for _, n := range c.nodes {
		for _, p := range n.pods {
			eth0 := p.ns.Link(t, "eth0")
			neighs, _ := p.ns.NL.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
			ok := false
			for _, ne := range neighs {
				if ne.IP.String() == "169.254.1.1" && ne.HardwareAddr.String() == proxyarp.HostMAC {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: 169.254.1.1 not resolved to %s: %v", p.w.Key(), proxyarp.HostMAC, neighs)
			}
		}
	}
}
