// Package agent is the node agent's loop: it gathers the cluster's state,
// computes the node's desired dataplane (this file, pure) and applies it
// through the reconcilers in a fixed order.
package agent

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
	Pools     []model.PoolMode
	Blocks    []ipam.Block
	Workloads []model.Workload // local pods
	HostMTU   int
	Uplink    string // the device carrying Self.IP
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

	useVXLAN, useIPIP := false, false
	for _, p := range in.Pools {
		if p.Disabled {
			continue
		}
		useVXLAN = useVXLAN || p.VXLAN != model.EncapNever && p.VXLAN != ""
		useIPIP = useIPIP || p.IPIP != model.EncapNever && p.IPIP != ""
	}
	d.PodMTU = in.HostMTU
	switch {
	case useVXLAN:
		d.PodMTU = in.HostMTU - tunnel.VXLANOverhead
	case useIPIP:
		d.PodMTU = in.HostMTU - tunnel.IPIPOverhead
	}

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
			if al.Node == "" || al.Node == b.Affinity || al.Node == in.Self.Name || local[al.IP] {
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
	return d, errs
}

// remoteRoute routes dst to node n by the pool's mode: VXLAN via its VTEP
// (onlink), IPIP via its node IP on tunl0 (onlink), or directly over the
// underlay; CrossSubnet encapsulates only towards other subnets.
func remoteRoute(in Inputs, pool model.PoolMode, n model.Node, dst netip.Prefix) (model.Route, error) {
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

func poolOf(pools []model.PoolMode, cidr netip.Prefix) (model.PoolMode, bool) {
	for _, p := range pools {
		if p.CIDR.Contains(cidr.Addr()) && p.CIDR.Bits() <= cidr.Bits() {
			return p, true
		}
	}
	return model.PoolMode{}, false
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
