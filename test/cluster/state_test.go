//go:build linux

package cluster_test

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/sysctl"
	"github.com/wren-net/wren/pkg/tunnel"
)

// facts is what the API says, as an operator would read it with kubectl:
// each node's address and VXLAN tunnel address, confirmed blocks by
// node, the pool's encapsulation, the Running pods by node.
type facts struct {
	nodeIP  map[string]netip.Prefix
	tunnel  map[string]netip.Addr
	blocks  map[string][]netip.Prefix
	vxlan   v1alpha1.EncapMode
	podsBy  map[string][]corev1.Pod
	nodes   []string
	hostMTU int
}

func (e *env) facts() (facts, error) {
	f := facts{nodeIP: map[string]netip.Prefix{}, tunnel: map[string]netip.Addr{}, blocks: map[string][]netip.Prefix{},
		podsBy: map[string][]corev1.Pod{}, hostMTU: 1500}
	var nl corev1.NodeList
	if err := e.c.List(e.ctx, &nl); err != nil {
		return f, err
	}
	for _, n := range nl.Items {
		p, err := netip.ParsePrefix(n.Annotations["wren.network/ipv4-address"])
		if err != nil {
			return f, fmt.Errorf("node %s: annotation wren.network/ipv4-address: %w", n.Name, err)
		}
		f.nodeIP[n.Name] = p
		f.nodes = append(f.nodes, n.Name)
		if a, err := netip.ParseAddr(n.Annotations["wren.network/ipv4-vxlan-tunnel-addr"]); err == nil {
			f.tunnel[n.Name] = a
		}
	}
	slices.Sort(f.nodes)
	var bl v1alpha1.IPAMBlockList
	if err := e.c.List(e.ctx, &bl); err != nil {
		return f, err
	}
	for _, b := range bl.Items {
		if b.Spec.State != v1alpha1.BlockConfirmed {
			continue
		}
		p, err := b.Spec.CIDR.Prefix()
		if err != nil {
			return f, err
		}
		f.blocks[b.Spec.Affinity] = append(f.blocks[b.Spec.Affinity], p)
	}
	var pools v1alpha1.IPPoolList
	if err := e.c.List(e.ctx, &pools); err != nil {
		return f, err
	}
	if len(pools.Items) != 1 {
		return f, fmt.Errorf("%d IPPools; the lab makes one", len(pools.Items))
	}
	f.vxlan = pools.Items[0].Spec.VXLANMode
	var pl corev1.PodList
	if err := e.c.List(e.ctx, &pl); err != nil {
		return f, err
	}
	for _, p := range pl.Items {
		if p.Spec.HostNetwork || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		f.podsBy[p.Spec.NodeName] = append(f.podsBy[p.Spec.NodeName], p)
	}
	return f, nil
}

// checkAllNodes compares every node's kernel with SPEC.md's state for
// what the API says; it returns the first difference.
func (e *env) checkAllNodes() error {
	f, err := e.facts()
	if err != nil {
		return err
	}
	for _, name := range f.nodes {
		if err := e.checkNode(f, name); err != nil {
			return err
		}
	}
	return nil
}

// checkNode checks one node: Wren's routes (exactly the expected set),
// the VXLAN device with its neighbours and FDB entries, each local pod's
// veth, sysctls and pod side, and ip_forward.
func (e *env) checkNode(f facts, name string) error {
	n := nodeNumber(name)
	h, nl, err := openNetns("/run/netns/" + e.lab.NodeNS(n))
	if err != nil {
		return err
	}
	defer h.Close()
	defer nl.Close()
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	got := map[string]netlink.Route{}
	for _, r := range rs {
		got[r.Dst.String()] = r
	}
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		return err
	}
	var vx netlink.Link
	if f.vxlan != v1alpha1.EncapNever {
		if vx, err = e.checkVXLAN(nl, f, name); err != nil {
			return err
		}
	} else if _, err := nl.LinkByName(tunnel.VXLANName); err == nil {
		return fmt.Errorf("%s: %s exists although no pool uses VXLAN", name, tunnel.VXLANName)
	}
	want := map[string]string{} // dst -> what it should be, for the count and the message
	for _, b := range f.blocks[name] {
		want[b.String()] = "blackhole"
		if r, ok := got[b.String()]; !ok || r.Type != unix.RTN_BLACKHOLE {
			return fmt.Errorf("%s: no blackhole %s proto wren for its own block", name, b)
		}
	}
	for _, p := range f.podsBy[name] {
		dst := p.Status.PodIP + "/32"
		dev := proxyarp.VethName(p.Namespace, p.Name)
		want[dst] = "pod"
		r, ok := got[dst]
		l, lerr := nl.LinkByName(dev)
		switch {
		case lerr != nil:
			return fmt.Errorf("%s: pod %s/%s has no veth %s: %w", name, p.Namespace, p.Name, dev, lerr)
		case !ok || r.Scope != netlink.SCOPE_LINK || r.LinkIndex != l.Attrs().Index:
			return fmt.Errorf("%s: no route %s dev %s scope link proto wren for pod %s/%s", name, dst, dev, p.Namespace, p.Name)
		case l.Attrs().HardwareAddr.String() != "ee:ee:ee:ee:ee:ee" || l.Attrs().OperState != netlink.OperUp:
			return fmt.Errorf("%s: veth %s: MAC %s state %s; want ee:ee:ee:ee:ee:ee up", name, dev, l.Attrs().HardwareAddr, l.Attrs().OperState)
		}
		fs := sysctl.FS{NS: h}
		for _, kv := range []struct{ key, v string }{
			{"net/ipv4/conf/" + dev + "/proxy_arp", "1"}, {"net/ipv4/conf/" + dev + "/forwarding", "1"},
			{"net/ipv4/conf/" + dev + "/route_localnet", "1"}, {"net/ipv4/neigh/" + dev + "/proxy_delay", "0"},
		} {
			if v, err := fs.Get(kv.key); err != nil || v != kv.v {
				return fmt.Errorf("%s: sysctl %s = %q (%v); want %s", name, kv.key, v, err, kv.v)
			}
		}
		if err := e.checkPodSide(n, p); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, peer := range f.nodes {
		if peer == name {
			continue
		}
		for _, b := range f.blocks[peer] {
			want[b.String()] = "remote"
			r, ok := got[b.String()]
			if !ok {
				return fmt.Errorf("%s: no route to %s's block %s", name, peer, b)
			}
			onlink := r.Flags&unix.RTNH_F_ONLINK != 0
			direct := f.vxlan == v1alpha1.EncapNever || f.vxlan == v1alpha1.EncapCrossSubnet && f.nodeIP[peer].Masked() == f.nodeIP[name].Masked()
			switch {
			case f.vxlan == v1alpha1.EncapNever && (r.Gw.String() != f.nodeIP[peer].Addr().String() || r.LinkIndex != eth0.Attrs().Index):
				return fmt.Errorf("%s: route %s = via %s oif %d; want via %s dev eth0 (BGP, no encapsulation)", name, b, r.Gw, r.LinkIndex, f.nodeIP[peer].Addr())
			case f.vxlan != v1alpha1.EncapNever && direct && (r.Gw.String() != f.nodeIP[peer].Addr().String() || r.LinkIndex != eth0.Attrs().Index || !onlink):
				return fmt.Errorf("%s: route %s = via %s oif %d onlink %v; want via %s dev eth0 onlink (CrossSubnet, same subnet)", name, b, r.Gw, r.LinkIndex, onlink, f.nodeIP[peer].Addr())
			case !direct && (r.Gw.String() != f.tunnel[peer].String() || r.LinkIndex != vx.Attrs().Index || !onlink):
				return fmt.Errorf("%s: route %s = via %s oif %d onlink %v; want via %s dev vxlan.calico onlink", name, b, r.Gw, r.LinkIndex, onlink, f.tunnel[peer])
			}
		}
	}
	if len(got) != len(want) {
		var extra []string
		for d := range got {
			if _, ok := want[d]; !ok {
				extra = append(extra, d)
			}
		}
		return fmt.Errorf("%s: %d Wren routes, want %d; not expected: %v", name, len(got), len(want), extra)
	}
	if v, err := (sysctl.FS{NS: h}).Get("net/ipv4/ip_forward"); err != nil || v != "1" {
		return fmt.Errorf("%s: net.ipv4.ip_forward = %q (%v); want 1", name, v, err)
	}
	return nil
}

// checkVXLAN checks vxlan.calico (VNI 4096, port 4789, local = node IP,
// nolearning, MAC from the node name, MTU host-50, exactly the tunnel
// address) and a permanent neighbour and FDB entry per remote node.
func (e *env) checkVXLAN(nl *netlink.Handle, f facts, name string) (netlink.Link, error) {
	l, err := nl.LinkByName(tunnel.VXLANName)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", name, tunnel.VXLANName, err)
	}
	v, ok := l.(*netlink.Vxlan)
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: %s is a %s", name, tunnel.VXLANName, l.Type())
	case v.VxlanId != tunnel.VXLANVNI || v.Port != tunnel.VXLANPort || v.Learning || !v.SrcAddr.Equal(net.IP(f.nodeIP[name].Addr().AsSlice())):
		return nil, fmt.Errorf("%s: %s: vni %d port %d learning %v local %s; want vni 4096 port 4789 nolearning local %s",
			name, tunnel.VXLANName, v.VxlanId, v.Port, v.Learning, v.SrcAddr, f.nodeIP[name].Addr())
	case v.HardwareAddr.String() != tunnel.VTEPMAC(name).String() || v.MTU != f.hostMTU-50:
		return nil, fmt.Errorf("%s: %s: MAC %s MTU %d; want %s MTU %d", name, tunnel.VXLANName, v.HardwareAddr, v.MTU, tunnel.VTEPMAC(name), f.hostMTU-50)
	}
	addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != netip.PrefixFrom(f.tunnel[name], 32).String() {
		return nil, fmt.Errorf("%s: %s addresses %v; want exactly %s/32", name, tunnel.VXLANName, addrs, f.tunnel[name])
	}
	neighs, _ := nl.NeighList(l.Attrs().Index, unix.AF_INET)
	fdb, _ := nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, peer := range f.nodes {
		if peer == name {
			continue
		}
		mac := tunnel.VTEPMAC(peer).String()
		if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.String() == f.tunnel[peer].String() && n.HardwareAddr.String() == mac && n.State&netlink.NUD_PERMANENT != 0
		}) {
			return nil, fmt.Errorf("%s: no permanent neighbour %s lladdr %s on %s for %s", name, f.tunnel[peer], mac, tunnel.VXLANName, peer)
		}
		if !slices.ContainsFunc(fdb, func(n netlink.Neigh) bool {
			return n.HardwareAddr.String() == mac && n.IP.String() == f.nodeIP[peer].Addr().String() && n.State&netlink.NUD_PERMANENT != 0
		}) {
			return nil, fmt.Errorf("%s: no permanent FDB entry %s dst %s for %s", name, mac, f.nodeIP[peer].Addr(), peer)
		}
	}
	return l, nil
}

// checkPodSide checks inside the pod's network namespace (entered through
// a process of the pod, no API involved): eth0 with exactly the pod's
// /32, 169.254.1.1 scope link, default via 169.254.1.1, and no static
// neighbour for the gateway (the host answers by proxy ARP).
func (e *env) checkPodSide(n int, p corev1.Pod) error {
	pid, err := e.lab.PodPID(n, string(p.UID))
	if err != nil {
		return err
	}
	h, nl, err := openNetns(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err
	}
	defer h.Close()
	defer nl.Close()
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	addrs, err := nl.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != p.Status.PodIP+"/32" {
		return fmt.Errorf("pod %s: eth0 addresses %v; want exactly %s/32", p.Name, addrs, p.Status.PodIP)
	}
	rs, err := nl.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	var desc []string
	gwRoute, defRoute := false, false
	for _, r := range rs {
		desc = append(desc, r.String())
		switch {
		case r.Dst != nil && r.Dst.String() == "169.254.1.1/32" && r.Scope == netlink.SCOPE_LINK:
			gwRoute = true
		case (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "169.254.1.1":
			defRoute = true
		}
	}
	if !gwRoute || !defRoute {
		return fmt.Errorf("pod %s: routes %s; want 169.254.1.1 dev eth0 scope link and default via 169.254.1.1", p.Name, strings.Join(desc, "; "))
	}
	neighs, _ := nl.NeighList(eth0.Attrs().Index, unix.AF_INET)
	for _, nb := range neighs {
		if nb.IP.String() == "169.254.1.1" && nb.State&netlink.NUD_PERMANENT != 0 {
			return fmt.Errorf("pod %s: static ARP entry for 169.254.1.1 (the host answers by proxy ARP)", p.Name)
		}
	}
	return nil
}

// openNetns opens the network namespace at path and a netlink handle in
// it; the caller closes both.
func openNetns(path string) (netns.NsHandle, *netlink.Handle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return h, nil, err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return h, nil, err
	}
	return h, nl, nil
}
