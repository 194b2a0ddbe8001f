package bgpsession

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/selector"
)

// MeshConfig is the part of the BGPConfiguration the node-to-node
// topology depends on.
type MeshConfig struct {
	Enabled bool   // nodeToNodeMeshEnabled (default true)
	AS      uint32 // asNumber; 0 means model.DefaultAS
	Port    int    // listenPort; 0 means 179
}

// NodeSessions returns the node-to-node sessions self wants, sorted by
// address. Without route reflectors it is a full mesh. As soon as one
// node is a route reflector (its wren.network/route-reflector label, as
// pkg/cluster reads it), a plain node peers with the
// reflectors only, and a reflector peers with every node: with plain
// nodes as its clients, with other reflectors as ordinary iBGP peers.
// Nodes without a valid address (not registered yet) are left out.
// Between any two nodes the one with the higher address is passive.
func NodeSessions(self model.NodeInfo, nodes []model.NodeInfo, cfg MeshConfig) []model.BGPSession {
	if !cfg.Enabled || !self.IP.IsValid() {
		return nil
	}
	anyRR := false
	for _, n := range nodes {
		anyRR = anyRR || n.RouteReflector && n.IP.IsValid()
	}
	selfCluster, selfRR := self.RRClusterID, self.RouteReflector
	me := self.IP.Addr()
	var out []model.BGPSession
	for _, n := range nodes {
		if n.Name == self.Name || !n.IP.IsValid() || n.IP.Addr() == me {
			continue
		}
		peerRR := n.RouteReflector
		s := model.BGPSession{Address: n.IP.Addr(), Port: cfg.Port, AS: n.EffectiveAS(cfg.AS), Passive: me.Compare(n.IP.Addr()) > 0}
		switch {
		case !anyRR:
			s.Name, s.Kind = "mesh/"+n.Name, model.SessionMesh
		case selfRR && peerRR:
			s.Name, s.Kind = "rr/"+n.Name, model.SessionRouteReflector
		case selfRR:
			s.Name, s.Kind, s.RRClient, s.ClusterID = "rr-client/"+n.Name, model.SessionRRClient, true, selfCluster
		case peerRR:
			s.Name, s.Kind = "rr/"+n.Name, model.SessionRouteReflector
		default:
			continue // two plain nodes: the reflectors carry their routes
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b model.BGPSession) int { return a.Address.Compare(b.Address) })
	return out
}

// Wants are the sessions self wants: the node-to-node topology (none while
// the mesh password's Secret is missing) and the BGPPeers that apply to it,
// as speaker configurations from local (the node's address).
func Wants(self model.NodeInfo, nodes []model.NodeInfo, peers []model.BGPPeer, cfg model.BGPConfig, local netip.Addr, warn func(kind, name, reason, message string)) []Want {
	var ss []model.BGPSession
	if !cfg.MeshPasswordMissing {
		ss = NodeSessions(self, nodes, MeshConfig{Enabled: cfg.MeshEnabled, AS: cfg.AS, Port: cfg.ListenPort})
		for i := range ss {
			ss[i].Password = cfg.MeshPassword
		}
	}
	ss = append(ss, ExplicitSessions(self, peers, warn)...)
	out := make([]Want, 0, len(ss))
	for _, s := range ss {
		out = append(out, Want{Name: s.Name, Kind: s.Kind, Peer: PeerConfig(s, cfg, local)})
	}
	return out
}

// Vouched reports whether the cluster still backs a route BGP withdrew:
// its prefix is a confirmed block, or an address allocated, for the node
// whose IP is the next hop.
func Vouched(blocks []ipam.Block, nodes []model.NodeInfo) func(model.LearnedRoute) bool {
	nodeAt := map[netip.Addr]string{}
	for _, n := range nodes {
		if n.IP.IsValid() {
			nodeAt[n.IP.Addr()] = n.Name
		}
	}
	return func(r model.LearnedRoute) bool {
		name, ok := nodeAt[r.NextHop]
		if !ok {
			return false
		}
		for _, b := range blocks {
			if b.State != ipam.StateConfirmed {
				continue
			}
			if b.CIDR == r.Prefix && b.Affinity == name {
				return true
			}
			if r.Prefix.Bits() == 32 && b.CIDR.Contains(r.Prefix.Addr()) {
				for _, al := range b.Allocations {
					if al.IP == r.Prefix.Addr() && al.Node == name {
						return true
					}
				}
			}
		}
		return false
	}
}

// Policy is what the speaker may accept and pass on: prefixes inside
// enabled pools (and, on a route reflector, the service ranges it passes
// on), never the node's own confirmed blocks nor any node's address;
// reflection only on a route reflector.
func Policy(self model.NodeInfo, nodes []model.NodeInfo, pools []model.Pool, blocks []ipam.Block, cfg model.BGPConfig) bgpspeaker.Policy {
	rr := self.RouteReflector
	var p bgpspeaker.Policy
	p.Reflect = rr
	for _, pool := range pools {
		if !pool.Disabled {
			p.Accept = append(p.Accept, pool.CIDR)
		}
	}
	if rr {
		p.Accept = append(p.Accept, cfg.ServiceCIDRs...)
	}
	for _, b := range blocks {
		if b.Affinity == self.Name && b.State == ipam.StateConfirmed {
			p.Reject = append(p.Reject, b.CIDR)
		}
	}
	for _, n := range nodes {
		if n.IP.IsValid() {
			p.Reject = append(p.Reject, netip.PrefixFrom(n.IP.Addr(), 32))
		}
	}
	return p
}

// ExplicitSessions are the BGPPeers (with a peerIP) that apply to this
// node: no node and no nodeSelector, the node's name, or a nodeSelector
// matching its labels. (A peering whose password Secret is missing never
// gets here: the cluster view reports and skips it.) warn reports a
// nodeSelector that does not parse.
func ExplicitSessions(self model.NodeInfo, peers []model.BGPPeer, warn func(kind, name, reason, message string)) []model.BGPSession {
	var out []model.BGPSession
	for _, p := range peers {
		switch {
		case p.Node != "" && p.Node != self.Name:
			continue
		case p.NodeSelector != "":
			sel, err := selector.Parse(p.NodeSelector)
			if err != nil {
				warn("BGPPeer", p.Name, "InvalidNodeSelector", fmt.Sprintf("spec.nodeSelector: %v; no node peers until it is fixed", err))
				continue
			}
			if !sel.Matches(self.Labels) {
				continue
			}
		}
		if p.AS == 0 || !p.IP.Is4() {
			continue
		}
		kind := model.SessionGlobal
		if p.Node != "" || p.NodeSelector != "" {
			kind = model.SessionNodeSpecific
		}
		out = append(out, model.BGPSession{Name: "bgppeer/" + p.Name, Kind: kind, Address: p.IP, Port: p.Port, AS: p.AS, Password: p.Password,
			Keepalive: p.Keepalive, RestartTime: p.RestartTime, TTLSecurity: p.TTLSecurity, MaxPrefixes: p.MaxPrefixes})
	}
	slices.SortFunc(out, func(x, y model.BGPSession) int { return x.Address.Compare(y.Address) })
	return out
}

// PeerConfig turns a session into the speaker's peer configuration, with
// the cluster's timers and graceful restart on every session, from local
// (the node's address; invalid: the kernel picks).
func PeerConfig(s model.BGPSession, cfg model.BGPConfig, local netip.Addr) bgpspeaker.Peer {
	rt, ka := cfg.RestartTime, cfg.Keepalive
	if s.RestartTime != 0 {
		rt = s.RestartTime
	}
	if rt == 0 {
		rt = DefaultRestartTime
	}
	if s.Keepalive != 0 {
		ka = s.Keepalive
	}
	p := bgpspeaker.Peer{Address: s.Address, AS: s.AS, Passive: s.Passive, Port: uint16(s.Port), Password: s.Password,
		KeepaliveSeconds: uint32(ka / time.Second), HoldSeconds: uint32(cfg.Hold / time.Second),
		GracefulRestartSeconds: uint16(rt / time.Second), RouteReflectorClient: s.RRClient, MaxPrefixes: s.MaxPrefixes}
	if s.TTLSecurity > 0 && s.TTLSecurity < 255 {
		p.TTLMin = uint8(256 - s.TTLSecurity)
	}
	if s.RRClient && s.ClusterID.IsValid() {
		p.ClusterID = s.ClusterID.String()
	}
	if local.IsValid() {
		p.LocalAddress = local
	}
	return p
}
