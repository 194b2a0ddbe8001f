package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/wren-net/wren/pkg/model"
)

// Node annotations and labels (SPEC.md "Names"). These are the only
// definitions of the keys; parseNode is the only reader.
const (
	// AnnotationIPv4 is the node's underlay address in CIDR form
	// (198.18.0.11/24), written by its agent.
	AnnotationIPv4 = "wren.network/ipv4-address"
	// AnnotationVXLANIP is the node's VXLAN tunnel address, written by its
	// agent.
	AnnotationVXLANIP = "wren.network/ipv4-vxlan-tunnel-addr"
	// AnnotationVXLANMAC is the MAC of the node's vxlan.calico, written by
	// its agent.
	AnnotationVXLANMAC = "wren.network/vxlan-tunnel-mac"
	// AnnotationIPIPIP is the address of the node's tunl0, written by its
	// agent.
	AnnotationIPIPIP = "wren.network/ipv4-ipip-tunnel-addr"
	// AnnotationASNumber is the node's own AS number, set by the operator
	// (optional; read only).
	AnnotationASNumber = "wren.network/as-number"
	// LabelRouteReflector makes a node a route reflector. Its value is
	// "true" (or empty) for the default cluster ID, or the cluster ID as a
	// dotted quad.
	LabelRouteReflector = "wren.network/route-reflector"
)

// parseNode translates a Node into the facts Wren uses. Each malformed
// annotation or label is returned as a problem naming it and is ignored:
// an address or MAC is left unset, an AS number leaves the node on the
// cluster's AS, and a route-reflector label that is neither "true" nor a
// dotted quad still makes the node a reflector, with the default cluster
// ID (the label's presence is what SPEC.md defines as the role).
func parseNode(n *corev1.Node) (model.NodeInfo, []problem) {
	var problems []problem
	bad := func(reason, format string, args ...any) {
		problems = append(problems, problem{Kind: "Node", Name: n.Name, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	ni := model.NodeInfo{Node: model.Node{Name: n.Name}, Labels: n.Labels}
	if s := n.Annotations[AnnotationIPv4]; s != "" {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			ni.IP = p
		} else {
			bad("BadAnnotation", "annotation %s=%q is not an IPv4 address in CIDR form (like 198.18.0.11/24)", AnnotationIPv4, s)
		}
	}
	for _, a := range []struct {
		key string
		to  *netip.Addr
	}{{AnnotationVXLANIP, &ni.VXLANTunnelIP}, {AnnotationIPIPIP, &ni.IPIPTunnelIP}} {
		if s := n.Annotations[a.key]; s != "" {
			if ip, err := netip.ParseAddr(s); err == nil && ip.Is4() {
				*a.to = ip
			} else {
				bad("BadAnnotation", "annotation %s=%q is not an IPv4 address; ignored until the node's agent writes it again", a.key, s)
			}
		}
	}
	if s := n.Annotations[AnnotationVXLANMAC]; s != "" {
		if m, err := net.ParseMAC(s); err == nil && len(m) == 6 {
			ni.VTEPMAC = m
		} else {
			bad("BadAnnotation", "annotation %s=%q is not a MAC address (like 66:aa:bb:cc:dd:ee); ignored until the node's agent writes it again", AnnotationVXLANMAC, s)
		}
	}
	if s := n.Annotations[AnnotationASNumber]; s != "" {
		// RFC 6793: four bytes; RFC 7607: 0 is reserved.
		if as, err := strconv.ParseUint(s, 10, 32); err == nil && as > 0 {
			ni.AS = uint32(as)
		} else {
			bad("BadAnnotation", "annotation %s=%q is not an AS number from 1 to 4294967295; the node uses the cluster's AS", AnnotationASNumber, s)
		}
	}
	if s, ok := n.Labels[LabelRouteReflector]; ok {
		ni.RouteReflector, ni.RRClusterID = true, model.DefaultRRClusterID
		if id, err := netip.ParseAddr(s); err == nil && id.Is4() {
			ni.RRClusterID = id
		} else if s != "" && s != "true" {
			bad("BadLabel", "label %s=%q is neither true nor a cluster ID in dotted-quad form; the node is a route reflector with the default cluster ID %s",
				LabelRouteReflector, s, model.DefaultRRClusterID)
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				ni.InternalIP = ip
			}
		}
	}
	return ni, problems
}
