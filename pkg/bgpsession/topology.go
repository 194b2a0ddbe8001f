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
	var out []model.BGPSession
	for _, n := range nodes {
		s, ok := nodeSession(self, n, cfg)
		if !ok {
			continue
		}
		switch {
		case !anyRR:
			s.Name, s.Kind = "mesh/"+n.Name, model.SessionMesh
		case s.Kind == model.SessionNodeSpecific:
			continue // two plain nodes: the reflectors carry their routes
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b model.BGPSession) int { return a.Address.Compare(b.Address) })
	return out
}

// nodeSession is the session between self and another node n, shaped by
// their route-reflector roles: a reflector serves a plain node as its
// client, two reflectors (or two plain nodes) are ordinary iBGP peers.
// Whatever asks for the session (the topology or a BGPPeer), it is the
// same one: the node with the higher address is passive, and the peer's
// port is the cluster's listen port. Kind is route-reflector or rr-client
// when a reflector is involved, node-specific between plain nodes. It is
// false for self and for nodes without an address.
func nodeSession(self, n model.NodeInfo, cfg MeshConfig) (model.BGPSession, bool) {
	if n.Name == self.Name || !n.IP.IsValid() || !self.IP.IsValid() || n.IP.Addr() == self.IP.Addr() {
		return model.BGPSession{}, false
	}
	me := self.IP.Addr()
	s := model.BGPSession{Address: n.IP.Addr(), Port: cfg.Port, AS: n.EffectiveAS(cfg.AS), Passive: me.Compare(n.IP.Addr()) > 0}
	switch {
	case self.RouteReflector && n.RouteReflector:
		s.Name, s.Kind = "rr/"+n.Name, model.SessionRouteReflector
	case self.RouteReflector:
		s.Name, s.Kind, s.RRClient, s.ClusterID = "rr-client/"+n.Name, model.SessionRRClient, true, self.RRClusterID
	case n.RouteReflector:
		s.Name, s.Kind = "rr/"+n.Name, model.SessionRouteReflector
	default:
		s.Name, s.Kind = "node/"+n.Name, model.SessionNodeSpecific
	}
	return s, true
}

// Wants are the sessions self wants: the node-to-node topology (none while
// the mesh password's Secret is missing, none with nodeToNodeMeshEnabled
// false) and the sessions the BGPPeers give it (ExplicitSessions; one to
// a node the topology already peers with is left to the topology), as
// speaker configurations from local (the node's address; the kernel
// picks for a BGPPeer with sourceAddress None).
func Wants(self model.NodeInfo, nodes []model.NodeInfo, peers []model.BGPPeer, cfg model.BGPConfig, local netip.Addr, warn func(kind, name, reason, message string)) []Want {
	var ss []model.BGPSession
	if !cfg.MeshPasswordMissing {
		ss = NodeSessions(self, nodes, MeshConfig{Enabled: cfg.MeshEnabled, AS: cfg.AS, Port: cfg.ListenPort})
		for i := range ss {
			ss[i].Password = cfg.MeshPassword
		}
	}
	topo := map[netip.Addr]bool{}
	for _, s := range ss {
		topo[s.Address] = true
	}
	for _, s := range ExplicitSessions(self, nodes, peers, MeshConfig{Enabled: cfg.MeshEnabled, AS: cfg.AS, Port: cfg.ListenPort}, warn) {
		if !topo[s.Address] { // the topology's session to that node wins
			ss = append(ss, s)
		}
	}
	out := make([]Want, 0, len(ss))
	for _, s := range ss {
		from := local
		if s.KernelSource {
			from = netip.Addr{}
		}
		out = append(out, Want{Name: s.Name, Kind: s.Kind, Peer: PeerConfig(s, cfg, from)})
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

// ExplicitSessions are the sessions the BGPPeers give this node, with
// Calico's meaning of their fields:
//
//   - node / nodeSelector (neither: every node) choose the local side, the
//     nodes that peer;
//   - peerIP (with asNumber) names the remote side, or peerSelector picks
//     the nodes to peer with, each at its own address and AS;
//   - a peering is symmetric: a node on the remote side (matching the
//     peerSelector, or whose address and AS the peerIP names) peers back
//     with the nodes of the local side, as Calico's reverse peerings do.
//
// A session to another node is shaped like the topology's (nodeSession:
// passive rule, route-reflector client when this node is a reflector and
// the peer is not), so a BGPPeer that asks for a session the topology
// already has changes nothing on the wire. (A peering whose password
// Secret is missing never gets here: the cluster view reports and skips
// it.) warn reports a selector that does not parse; that BGPPeer gives no
// session until it is fixed.
func ExplicitSessions(self model.NodeInfo, nodes []model.NodeInfo, peers []model.BGPPeer, mesh MeshConfig, warn func(kind, name, reason, message string)) []model.BGPSession {
	var out []model.BGPSession
	seen := map[netip.Addr]bool{}
	add := func(s model.BGPSession, p model.BGPPeer) {
		if seen[s.Address] {
			return // the first BGPPeer (by name) for an address wins
		}
		seen[s.Address] = true
		s.Password, s.Keepalive, s.RestartTime, s.TTLSecurity, s.MaxPrefixes = p.Password, p.Keepalive, p.RestartTime, p.TTLSecurity, p.MaxPrefixes
		s.KernelSource = p.KernelSource
		out = append(out, s)
	}
	toNode := func(n model.NodeInfo, p model.BGPPeer) {
		if s, ok := nodeSession(self, n, mesh); ok {
			s.Name = "bgppeer/" + p.Name + "/" + n.Name
			add(s, p)
		}
	}
	byIP := map[netip.Addr]model.NodeInfo{}
	for _, n := range nodes {
		if n.IP.IsValid() {
			byIP[n.IP.Addr()] = n
		}
	}
	for _, p := range peers {
		local, ok := parseSide(p.NodeSelector, "nodeSelector", p, warn)
		if !ok {
			continue
		}
		localSide := func(n model.NodeInfo) bool {
			return (p.Node == "" || p.Node == n.Name) && (local == nil || local.Matches(n.Labels))
		}
		if p.PeerSelector != "" {
			remote, ok := parseSide(p.PeerSelector, "peerSelector", p, warn)
			if !ok {
				continue
			}
			for _, n := range nodes {
				if localSide(self) && remote.Matches(n.Labels) || remote.Matches(self.Labels) && localSide(n) {
					toNode(n, p)
				}
			}
			continue
		}
		if p.AS == 0 || !p.IP.Is4() {
			continue
		}
		if n, isNode := byIP[p.IP]; isNode && n.EffectiveAS(mesh.AS) == p.AS && (p.Port == 0 || p.Port == portOr179(mesh.Port)) {
			// A peerIP that names a node: a node-to-node session, both ways.
			if localSide(self) {
				toNode(n, p)
			}
			if n.Name == self.Name {
				for _, m := range nodes {
					if localSide(m) {
						toNode(m, p)
					}
				}
			}
			continue
		}
		if !localSide(self) {
			continue
		}
		kind := model.SessionGlobal
		if p.Node != "" || p.NodeSelector != "" {
			kind = model.SessionNodeSpecific
		}
		add(model.BGPSession{Name: "bgppeer/" + p.Name, Kind: kind, Address: p.IP, Port: p.Port, AS: p.AS}, p)
	}
	slices.SortFunc(out, func(x, y model.BGPSession) int { return x.Address.Compare(y.Address) })
	return out
}

// parseSide parses a BGPPeer's node or peer selector; "" gives nil (every
// node). A selector that does not parse is reported on the BGPPeer.
func parseSide(expr, field string, p model.BGPPeer, warn func(kind, name, reason, message string)) (selector.Selector, bool) {
	if expr == "" {
		return nil, true
	}
	sel, err := selector.Parse(expr)
	if err != nil {
		reason := "InvalidNodeSelector"
		if field == "peerSelector" {
			reason = "InvalidPeerSelector"
		}
		warn("BGPPeer", p.Name, reason, fmt.Sprintf("spec.%s: %v; this BGPPeer gives no session until it is fixed", field, err))
		return nil, false
	}
	return sel, true
}

func portOr179(p int) int {
	if p == 0 {
		return 179
	}
	return p
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
