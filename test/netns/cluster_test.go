//go:build linux

// Multi-node privileged tests of the dataplane library: node namespaces on
// bridge underlays (and a router namespace between two subnets), pod
// namespaces on each node, and only Wren's library calls to wire them.
//
// Test addresses (inside the test namespaces only):
//
//	subnet 1 198.18.0.0/24: node-a .11, node-b .12, router .1
//	subnet 2 198.18.1.0/24: node-c .13, router .1
//	blocks   10.244.N.0/26 for node N (a=1, b=2, c=3), pods .5 and .6,
//	         VXLAN tunnel address 10.244.N.0
package nstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"testing"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/sysctl"
	"github.com/wren-net/wren/pkg/tunnel"
	nstest "github.com/wren-net/wren/test/netns"
)

// mode is the encapsulation of the test's single pool.
type mode struct {
	vxlan, ipip model.EncapMode
}

var (
	vxlanAlways      = mode{vxlan: model.EncapAlways, ipip: model.EncapNever}
	vxlanCrossSubnet = mode{vxlan: model.EncapCrossSubnet, ipip: model.EncapNever}
	ipipAlways       = mode{vxlan: model.EncapNever, ipip: model.EncapAlways}
	noEncap          = mode{vxlan: model.EncapNever, ipip: model.EncapNever}
)

type pod struct {
	ns *nstest.NS
	w  model.Workload
}

// node is one node namespace with its reconcilers: what the agent loop
// will own in production, driven here by hand.
type node struct {
	name   string
	ns     *nstest.NS
	addr   netip.Prefix // underlay address with its real prefix length
	block  netip.Prefix
	tunIP  netip.Addr
	pods   []*pod
	hostMT int

	routes *routes.Reconciler
	kernel *routes.NetlinkKernel
	tun    *tunnel.Reconciler
	arp    *proxyarp.Reconciler
	sys    sysctl.FS
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newNode(t *testing.T, name string, sw *nstest.Switch, addr string, blockN int) *node {
	t.Helper()
	ns := nstest.New(t, name)
	sw.Attach(t, ns, "eth0", addr, 0)
	// Like every real node, a default route on the underlay. Proxy ARP
	// needs it: the kernel answers for 169.254.1.1 only if it routes that
	// address out of another interface than the asking veth.
	p := netip.MustParsePrefix(addr)
	ns.AddRoute(t, "default", "via", p.Masked().Addr().Next().String())
	n := &node{
		name:  name,
		ns:    ns,
		addr:  netip.MustParsePrefix(addr),
		block: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(blockN), 0}), 26),
		tunIP: netip.AddrFrom4([4]byte{10, 244, byte(blockN), 0}),
		sys:   sysctl.FS{NS: ns.Handle},
	}
	k, err := routes.NewKernel(ns.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	n.kernel = k
	if n.routes, err = routes.New(routes.Config{Logger: quiet}, k); err != nil {
		t.Fatal(err)
	}
	n.tun = tunnel.New(tunnel.Config{Logger: quiet}, ns.NL)
	n.arp = proxyarp.New(proxyarp.Config{Sysctl: n.sys, Logger: quiet}, ns.NL)
	if err := proxyarp.EnableForwarding(n.sys); err != nil {
		t.Fatal(err)
	}
	mtu, err := tunnel.HostMTU(ns.NL, regexp.MustCompile(tunnel.DefaultIfacePattern))
	if err != nil {
		t.Fatal(err)
	}
	n.hostMT = mtu
	return n
}

// podMTU is the host MTU less the mode's encapsulation overhead.
func (n *node) podMTU(m mode) int {
	switch {
	case m.vxlan != model.EncapNever:
		return n.hostMT - tunnel.VXLANOverhead
	case m.ipip != model.EncapNever:
		return n.hostMT - tunnel.IPIPOverhead
	}
	return n.hostMT
}

// addPods creates count pod namespaces wired to the node with SetupPod.
func (n *node) addPods(t *testing.T, m mode, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		podName := fmt.Sprintf("web-%s-%d", n.name, i)
		ns := nstest.New(t, "pod")
		w := model.Workload{
			Namespace:   "default",
			Name:        podName,
			ContainerID: fmt.Sprintf("c%d", i),
			HostIface:   proxyarp.VethName("default", podName),
			IP:          n.block.Addr().Next().Next().Next().Next().Next(), // .5
			MTU:         n.podMTU(m),
		}
		for j := 0; j < i; j++ {
			w.IP = w.IP.Next()
		}
		if err := proxyarp.SetupPodWith(context.Background(), n.ns.NL, n.sys, ns.Handle, w, "eth0"); err != nil {
			t.Fatal(err)
		}
		n.pods = append(n.pods, &pod{ns: ns, w: w})
	}
}

func sameSubnet(a, b *node) bool { return a.addr.Masked() == b.addr.Masked() }

// encapTo says how n reaches peer in mode m: "vxlan", "ipip" or "direct".
func (n *node) encapTo(peer *node, m mode) string {
	switch {
	case m.vxlan == model.EncapAlways, m.vxlan == model.EncapCrossSubnet && !sameSubnet(n, peer):
		return "vxlan"
	case m.ipip == model.EncapAlways, m.ipip == model.EncapCrossSubnet && !sameSubnet(n, peer):
		return "ipip"
	}
	return "direct"
}

// plan sets the node's desired state on its reconcilers.
func (n *node) plan(m mode, all []*node) {
	tun, ws, rs := n.desired(m, all)
	n.tun.Set(tun)
	n.arp.Set(ws)
	n.routes.Set(rs)
}

// desired computes the node's desired state, as the agent loop will: own
// block blackholed, local pods routed to their veths, remote blocks by the
// mode's rule, one VTEP per remote node in VXLAN modes.
func (n *node) desired(m mode, all []*node) (model.Tunnels, []model.Workload, []model.Route) {
	var rs []model.Route
	var ws []model.Workload
	rs = append(rs, model.Route{Dst: n.block, Kind: model.RouteBlackhole})
	for _, p := range n.pods {
		ws = append(ws, p.w)
		rs = append(rs, model.Route{Dst: netip.PrefixFrom(p.w.IP, 32), Kind: model.RoutePod, Device: p.w.HostIface})
	}
	var tun model.Tunnels
	if m.vxlan != model.EncapNever {
		tun.VXLAN = &model.VXLAN{VNI: tunnel.VXLANVNI, Port: tunnel.VXLANPort, LocalIP: n.addr.Addr(), Parent: "eth0",
			MAC: tunnel.VTEPMAC(n.name), MTU: n.hostMT - tunnel.VXLANOverhead, Address: n.tunIP}
	}
	if m.ipip != model.EncapNever {
		tun.IPIP = &model.IPIP{MTU: n.hostMT - tunnel.IPIPOverhead, Address: n.tunIP}
	}
	for _, peer := range all {
		if peer == n {
			continue
		}
		if m.vxlan != model.EncapNever {
			tun.VTEPs = append(tun.VTEPs, model.VTEP{Node: peer.name, NodeIP: peer.addr.Addr(), TunnelIP: peer.tunIP, MAC: tunnel.VTEPMAC(peer.name)})
		}
		switch n.encapTo(peer, m) {
		case "vxlan":
			rs = append(rs, model.Route{Dst: peer.block, Kind: model.RouteRemoteTunnel, Gateway: peer.tunIP, Device: tunnel.VXLANName, MTU: n.hostMT - tunnel.VXLANOverhead})
		case "ipip":
			rs = append(rs, model.Route{Dst: peer.block, Kind: model.RouteRemoteTunnel, Gateway: peer.addr.Addr(), Device: tunnel.IPIPName, MTU: n.hostMT - tunnel.IPIPOverhead})
		default:
			// VXLAN CrossSubnet marks same-subnet routes onlink, as
			// Calico does; IPIP CrossSubnet and no-encap do not.
			rs = append(rs, model.Route{Dst: peer.block, Kind: model.RouteRemoteDirect, Gateway: peer.addr.Addr(), Device: "eth0",
				OnLink: m.vxlan == model.EncapCrossSubnet})
		}
	}
	return tun, ws, rs
}

// apply runs the reconcilers in the loop's fixed order: devices before
// the routes that point at them.
func (n *node) apply(ctx context.Context) error {
	return errors.Join(n.tun.Apply(ctx), n.arp.Apply(ctx), n.routes.Apply(ctx))
}

// cluster is nodes a and b on subnet 1 and, when withC, node c on subnet 2
// behind a router namespace.
type cluster struct {
	nodes []*node
}

func newCluster(t *testing.T, m mode, withC bool) *cluster {
	t.Helper()
	sw1 := nstest.NewSwitch(t, "sw1")
	c := &cluster{}
	a := newNode(t, "node-a", sw1, "198.18.0.11/24", 1)
	b := newNode(t, "node-b", sw1, "198.18.0.12/24", 2)
	c.nodes = append(c.nodes, a, b)
	if withC {
		sw2 := nstest.NewSwitch(t, "sw2")
		r := nstest.New(t, "router")
		sw1.Attach(t, r, "eth0", "198.18.0.1/24", 0)
		sw2.Attach(t, r, "eth1", "198.18.1.1/24", 0)
		r.Sysctl(t, "net.ipv4.ip_forward", "1")
		cn := newNode(t, "node-c", sw2, "198.18.1.13/24", 3)
		// Each node's default route (via .1 of its subnet) goes
		// through the router to the other subnet.
		c.nodes = append(c.nodes, cn)
	}
	for _, n := range c.nodes {
		n.addPods(t, m, 2)
	}
	return c
}

// converge plans and applies every node.
func (c *cluster) converge(t *testing.T, m mode) error {
	t.Helper()
	var errs []error
	for _, n := range c.nodes {
		n.plan(m, c.nodes)
		if err := n.apply(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
		}
	}
	return errors.Join(errs...)
}

// pingAll pings every pod from every pod (same node and across nodes).
func (c *cluster) pingAll(t *testing.T) {
	t.Helper()
	var pods []*pod
	for _, n := range c.nodes {
		pods = append(pods, n.pods...)
	}
	for _, src := range pods {
		for _, dst := range pods {
			if src == dst {
				continue
			}
			if err := src.ns.Ping(dst.w.IP, 2); err != nil {
				t.Errorf("ping %s (%s) -> %s (%s): %v", src.w.Name, src.w.IP, dst.w.Name, dst.w.IP, err)
			}
		}
	}
	if !t.Failed() {
		t.Logf("all-pairs ping ok across %d pods", len(pods))
	}
}
