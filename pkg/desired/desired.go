// Package desired computes a node's whole desired dataplane from a
// snapshot of its inputs: tunnel devices, pod veths, kernel routes, BGP
// advertisements and natOutgoing masquerading (Build), and how BGP-learned routes become kernel
// routes between full builds (LearnedShaper). It is pure: no I/O, no
// clock. The agent's loop calls Build once per run.
package desired

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/tunnel"
)

// Inputs is everything the desired state depends on.
type Inputs struct {
	Self      model.Node
	Nodes     []model.Node // every node, Self included or not
	Pools     []model.Pool
	Blocks    []ipam.Block
	Workloads []model.Workload // local pods
	HostMTU   int
	Uplink    string // the device carrying Self.IP
	// BGP: the node runs its BGP speaker. Remote blocks and borrowed
	// addresses of pools without VXLAN are then routed from Learned (what
	// the peers advertise), not from the IPAMBlocks; VXLAN pools are
	// always routed from the IPAMBlocks, as Calico does.
	BGP     bool
	Learned []model.LearnedRoute
	// ServiceCIDRs are advertised with the node's blocks.
	ServiceCIDRs []netip.Prefix
}

// Build computes the node's desired state. Problems with single objects
// (a remote node without its tunnel address yet, a block outside every
// pool) are returned as errors naming them; everything else is built.
func Build(in Inputs) (model.Desired, []error) {
	var d model.Desired
	var errs []error
	nodes := map[string]model.Node{}
	for _, n := range in.Nodes {
		nodes[n.Name] = n
	}
	nodes[in.Self.Name] = in.Self

	useVXLAN, useIPIP := encaps(in.Pools)
	d.PodMTU = PodMTU(in.Pools, in.HostMTU)
	if useVXLAN && in.Self.VXLANTunnelIP.IsValid() {
		d.Tunnels.VXLAN = &model.VXLAN{VNI: tunnel.VXLANVNI, Port: tunnel.VXLANPort, LocalIP: in.Self.IP.Addr(),
			Parent: in.Uplink, MAC: tunnel.VTEPMAC(in.Self.Name), MTU: in.HostMTU - tunnel.VXLANOverhead,
			Address: in.Self.VXLANTunnelIP}
		for _, n := range sortedNodes(nodes) {
			if n.Name == in.Self.Name {
				continue
			}
			if !n.VXLANTunnelIP.IsValid() || len(n.VTEPMAC) == 0 || !n.IP.IsValid() {
				continue // routes to it report the gap below
			}
			d.Tunnels.VTEPs = append(d.Tunnels.VTEPs, model.VTEP{Node: n.Name, NodeIP: n.IP.Addr(), TunnelIP: n.VXLANTunnelIP, MAC: n.VTEPMAC})
		}
	}
	if useIPIP && in.Self.IPIPTunnelIP.IsValid() {
		d.Tunnels.IPIP = &model.IPIP{MTU: in.HostMTU - tunnel.IPIPOverhead, Address: in.Self.IPIPTunnelIP}
	}

	// Local pods: the veth and a /32 to it.
	for _, w := range in.Workloads {
		d.Workloads = append(d.Workloads, w)
		d.Routes = append(d.Routes, model.Route{Dst: netip.PrefixFrom(w.IP, 32), Kind: model.RoutePod, Device: w.HostIface})
	}
	local := map[netip.Addr]bool{}
	for _, w := range in.Workloads {
		local[w.IP] = true
	}

	for _, b := range in.Blocks {
		if b.State != ipam.StateConfirmed {
			continue // only confirmed claims are routed
		}
		pool, ok := poolOf(in.Pools, b.CIDR)
		if !ok {
			errs = append(errs, fmt.Errorf("block %s: inside no IPPool; not routed", b.CIDR))
			continue
		}
		if in.BGP && b.Affinity != in.Self.Name && !isVXLAN(pool) {
			continue // routed from BGP (below)
		}
		if b.Affinity == in.Self.Name {
			// Own block: blackhole what is not allocated locally, so
			// traffic to unused addresses dies here instead of looping
			// via the default route. No blackhole for a /32 block.
			if b.CIDR.Bits() < 32 {
				d.Routes = append(d.Routes, model.Route{Dst: b.CIDR, Kind: model.RouteBlackhole})
			}
		} else if owner, ok := nodes[b.Affinity]; ok {
			r, err := remoteRoute(in, pool, owner, b.CIDR)
			if err != nil {
				errs = append(errs, fmt.Errorf("block %s of node %s: %w", b.CIDR, b.Affinity, err))
			} else {
				d.Routes = append(d.Routes, r)
			}
		} else {
			errs = append(errs, fmt.Errorf("block %s: its node %q is unknown; not routed", b.CIDR, b.Affinity))
		}
		// Borrowed addresses: a /32 to the node hosting the pod, which
		// wins over the owner's block route (or blackhole) by longest
		// prefix.
		for _, al := range b.Allocations {
			if al.Node == "" || al.Node == b.Affinity || al.Node == in.Self.Name || local[al.IP] || in.BGP && !isVXLAN(pool) {
				continue
			}
			host, ok := nodes[al.Node]
			if !ok {
				continue
			}
			r, err := remoteRoute(in, pool, host, netip.PrefixFrom(al.IP, 32))
			if err != nil {
				errs = append(errs, fmt.Errorf("borrowed %s on node %s: %w", al.IP, al.Node, err))
				continue
			}
			d.Routes = append(d.Routes, r)
		}
	}
	if in.BGP {
		rs, rerrs := learnedRoutes(in)
		d.Routes = append(d.Routes, rs...)
		errs = append(errs, rerrs...)
	}
	d.Advertise = advertisements(in)
	d.NAT = NAT(in.Pools)
	return d, errs
}

// NAT is the pools' natOutgoing, as Calico has it: sources in a pool
// with natOutgoing are masqueraded towards destinations outside every
// pool. Disabled pools count in both: their addresses stay in use.
func NAT(pools []model.Pool) model.NAT {
	var n model.NAT
	for _, p := range pools {
		n.Pools = append(n.Pools, p.CIDR)
		if p.NATOutgoing {
			n.Masquerade = append(n.Masquerade, p.CIDR)
		}
	}
	slices.SortFunc(n.Pools, netip.Prefix.Compare)
	slices.SortFunc(n.Masquerade, netip.Prefix.Compare)
	return n
}

// encaps reports whether any enabled pool uses VXLAN or IPIP.
func encaps(pools []model.Pool) (vxlan, ipip bool) {
	for _, p := range pools {
		if p.Disabled {
			continue
		}
		vxlan = vxlan || p.VXLAN != model.EncapNever && p.VXLAN != ""
		ipip = ipip || p.IPIP != model.EncapNever && p.IPIP != ""
	}
	return vxlan, ipip
}

// PodMTU is the pods' MTU: the host's, less the overhead of the
// encapsulation the enabled pools use (VXLAN's when any pool uses it, as
// one MTU serves every pod).
func PodMTU(pools []model.Pool, hostMTU int) int {
	switch vxlan, ipip := encaps(pools); {
	case vxlan:
		return hostMTU - tunnel.VXLANOverhead
	case ipip:
		return hostMTU - tunnel.IPIPOverhead
	}
	return hostMTU
}

func isVXLAN(p model.Pool) bool { return p.VXLAN != model.EncapNever && p.VXLAN != "" }

// LearnedShaper turns BGP best paths into kernel routes, shaped by the
// pool's mode towards the node whose address is the next hop (a next hop
// that is no node, such as a top-of-rack router, is treated like a node at
// that address). Paths outside every enabled pool, in VXLAN pools (the
// IPAMBlocks route those), for local pod addresses or for the node's own
// blocks are not installed; the speaker's import policy should already
// have rejected most of them. Build uses one for the whole table; the
// agent keeps the one of its last full run for the best-path changes that
// arrive until the next.
type LearnedShaper struct {
	in        Inputs
	byIP      map[netip.Addr]model.Node
	ownBlocks []netip.Prefix // the node's own blocks: few, checked for every path
	local     map[netip.Addr]bool
}

// NewLearnedShaper prepares the shaping of learned routes for in.
func NewLearnedShaper(in Inputs) *LearnedShaper {
	s := &LearnedShaper{in: in, byIP: map[netip.Addr]model.Node{}, local: map[netip.Addr]bool{}}
	for _, n := range in.Nodes {
		if n.IP.IsValid() && n.Name != in.Self.Name {
			s.byIP[n.IP.Addr()] = n
		}
	}
	for _, b := range in.Blocks {
		if b.Affinity == in.Self.Name {
			s.ownBlocks = append(s.ownBlocks, b.CIDR)
		}
	}
	for _, w := range in.Workloads {
		s.local[w.IP] = true
	}
	return s
}

// Handles reports whether a learned route for p would be installed by
// Wren (or is one Wren would remove when it is withdrawn): inside an
// enabled pool without VXLAN, not a local pod's address, not inside an own
// block.
func (s *LearnedShaper) Handles(p netip.Prefix) bool { return s.WhyNot(p) == "" }

// WhyNot says why Wren does not install a learned route for p ("" when
// Handles(p)): the words of the debug API.
func (s *LearnedShaper) WhyNot(p netip.Prefix) string {
	p = p.Masked()
	pool, ok := poolOf(s.in.Pools, p)
	switch {
	case !ok:
		return "outside every IPPool"
	case pool.Disabled:
		return "its IPPool " + pool.Name + " is disabled"
	case isVXLAN(pool):
		return "its IPPool " + pool.Name + " uses VXLAN: its routes come from the IPAM blocks, not from BGP"
	case p.Bits() == 32 && s.local[p.Addr()]:
		return "a pod on this node holds this address"
	case p.Bits() < 32 && slices.ContainsFunc(s.ownBlocks, func(c netip.Prefix) bool { return c.Overlaps(p) && c.Bits() <= p.Bits() }):
		return "superseded by a local block"
	}
	return ""
}

// Route returns the kernel route for l; ok is false when Wren does not
// install it (see Handles) and err says why a route it should install
// cannot be built.
func (s *LearnedShaper) Route(l model.LearnedRoute) (r model.Route, ok bool, err error) {
	p := l.Prefix.Masked()
	if !s.Handles(p) {
		return model.Route{}, false, nil
	}
	pool, _ := poolOf(s.in.Pools, p)
	n, known := s.byIP[l.NextHop]
	if !known {
		if l.NextHop == s.in.Self.IP.Addr() || !l.NextHop.Is4() {
			return model.Route{}, true, fmt.Errorf("learned %s via %s: next hop is this node or not IPv4; not routed", p, l.NextHop)
		}
		n = model.Node{Name: "peer " + l.NextHop.String(), IP: netip.PrefixFrom(l.NextHop, s.in.Self.IP.Bits())}
	}
	r, err = remoteRoute(s.in, pool, n, p)
	if err != nil {
		return model.Route{}, true, fmt.Errorf("learned %s via %s: %w", p, l.NextHop, err)
	}
	return r, true, nil
}

// learnedRoutes shapes every learned route (the first path for a prefix
// wins).
func learnedRoutes(in Inputs) ([]model.Route, []error) {
	s := NewLearnedShaper(in)
	var out []model.Route
	var errs []error
	seen := make(map[netip.Prefix]bool, len(in.Learned))
	for _, l := range in.Learned {
		p := l.Prefix.Masked()
		if seen[p] {
			continue
		}
		seen[p] = true
		r, ok, err := s.Route(l)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			out = append(out, r)
		}
	}
	return out, errs
}

// advertisements is what the node announces: its confirmed blocks in
// enabled pools without disableBGPExport, the /32 of every local pod whose
// address lies outside its own blocks (borrowed), and the service ranges.
func advertisements(in Inputs) []netip.Prefix {
	var out []netip.Prefix
	var ownBlocks []netip.Prefix
	for _, b := range in.Blocks {
		if b.Affinity != in.Self.Name || b.State != ipam.StateConfirmed {
			continue
		}
		ownBlocks = append(ownBlocks, b.CIDR)
		if pool, ok := poolOf(in.Pools, b.CIDR); ok && !pool.Disabled && !pool.DisableBGPExport {
			out = append(out, b.CIDR)
		}
	}
	for _, w := range in.Workloads {
		if slices.ContainsFunc(ownBlocks, func(c netip.Prefix) bool { return c.Contains(w.IP) }) {
			continue
		}
		if pool, ok := poolOf(in.Pools, netip.PrefixFrom(w.IP, 32)); ok && !pool.DisableBGPExport {
			out = append(out, netip.PrefixFrom(w.IP, 32))
		}
	}
	out = append(out, in.ServiceCIDRs...)
	slices.SortFunc(out, netip.Prefix.Compare)
	return slices.Compact(out)
}

// remoteRoute routes dst to node n by the pool's mode: VXLAN via its VTEP
// (onlink), IPIP via its node IP on tunl0 (onlink), or directly over the
// underlay; CrossSubnet encapsulates only towards other subnets.
func remoteRoute(in Inputs, pool model.Pool, n model.Node, dst netip.Prefix) (model.Route, error) {
	if !n.IP.IsValid() {
		return model.Route{}, errors.New("node has no wren.network/ipv4-address yet")
	}
	cross := in.Self.IP.Masked() != n.IP.Masked()
	switch {
	case pool.VXLAN == model.EncapAlways || pool.VXLAN == model.EncapCrossSubnet && cross:
		if !n.VXLANTunnelIP.IsValid() {
			return model.Route{}, errors.New("node has no VXLAN tunnel address yet")
		}
		return model.Route{Dst: dst, Kind: model.RouteRemoteTunnel, Gateway: n.VXLANTunnelIP, Device: tunnel.VXLANName,
			MTU: in.HostMTU - tunnel.VXLANOverhead}, nil
	case pool.IPIP == model.EncapAlways || pool.IPIP == model.EncapCrossSubnet && cross:
		return model.Route{Dst: dst, Kind: model.RouteRemoteTunnel, Gateway: n.IP.Addr(), Device: tunnel.IPIPName,
			MTU: in.HostMTU - tunnel.IPIPOverhead}, nil
	}
	// Same-subnet VXLAN CrossSubnet routes are onlink, as Calico's are.
	return model.Route{Dst: dst, Kind: model.RouteRemoteDirect, Gateway: n.IP.Addr(), Device: in.Uplink,
		OnLink: pool.VXLAN == model.EncapCrossSubnet}, nil
}

func poolOf(pools []model.Pool, cidr netip.Prefix) (model.Pool, bool) {
	for _, p := range pools {
		if p.CIDR.Contains(cidr.Addr()) && p.CIDR.Bits() <= cidr.Bits() {
			return p, true
		}
	}
	return model.Pool{}, false
}

func sortedNodes(m map[string]model.Node) []model.Node {
	out := make([]model.Node, 0, len(m))
	for _, n := range m {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b model.Node) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
