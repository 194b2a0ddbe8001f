package agent

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/wren-net/wren/pkg/model"
)

// BGP topology names (SPEC.md "BGP behaviour").
const (
	// LabelRouteReflector makes a node a route reflector. Its value is
	// the cluster ID if it is a dotted quad, else DefaultClusterID.
	LabelRouteReflector = "wren.network/route-reflector"
	// DefaultAS is the nodes' AS without a BGPConfiguration or an
	// as-number annotation.
	DefaultAS = 64512
)

// DefaultClusterID is the route reflectors' cluster ID when the label
// value is not a dotted quad: one cluster-wide ID, so reflectors do not
// reflect each other's routes back into the cluster. 244.0.0.1 is the
// value Calico's documentation uses for routeReflectorClusterID.
var DefaultClusterID = netip.MustParseAddr("244.0.0.1")

// MeshConfig is the part of the BGPConfiguration the node-to-node
// topology depends on.
type MeshConfig struct {
	Enabled bool   // nodeToNodeMeshEnabled (default true)
	AS      uint32 // asNumber; 0 means DefaultAS
	Port    int    // listenPort; 0 means 179
}

// NodeAS is a node's AS: its wren.network/as-number annotation, else the
// cluster's, else DefaultAS.
func NodeAS(n model.NodeInfo, clusterAS uint32) uint32 {
	if v, err := strconv.ParseUint(n.Annotations[AnnotationASNumber], 10, 32); err == nil && v > 0 {
		return uint32(v)
	}
	if clusterAS != 0 {
		return clusterAS
	}
	return DefaultAS
}

// RouteReflector reports whether n is a route reflector and its cluster
// ID.
func RouteReflector(n model.NodeInfo) (netip.Addr, bool) {
	v, ok := n.Labels[LabelRouteReflector]
	if !ok {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
		return a, true
	}
	return DefaultClusterID, true
}

// NodeSessions returns the node-to-node sessions self wants, sorted by
// address. Without route reflectors it is a full mesh. As soon as one
// node carries LabelRouteReflector, a plain node peers with the
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
		if _, rr := RouteReflector(n); rr && n.IP.IsValid() {
			anyRR = true
		}
	}
	selfCluster, selfRR := RouteReflector(self)
	me := self.IP.Addr()
	var out []model.BGPSession
	for _, n := range nodes {
		if n.Name == self.Name || !n.IP.IsValid() || n.IP.Addr() == me {
			continue
		}
		_, peerRR := RouteReflector(n)
		s := model.BGPSession{Address: n.IP.Addr(), Port: cfg.Port, AS: NodeAS(n, cfg.AS), Passive: me.Compare(n.IP.Addr()) > 0}
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
