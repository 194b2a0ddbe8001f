// Package model holds the plain value types that flow from the agent's
// desired-state computation into the reconcilers. Nothing here does I/O.
package model

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// RouteKind says what a route is for; it decides the netlink shape of the
// route (type, scope, gateway, onlink) in pkg/routes.
type RouteKind uint8

const (
	// RouteBlackhole is an own IPAM block: "blackhole 10.244.1.0/26". Pods
	// of the block get more-specific /32 routes, so the blackhole only
	// drops traffic for unallocated addresses instead of bouncing it back
	// to the default route (the same reason Calico installs it).
	RouteBlackhole RouteKind = iota + 1
	// RoutePod is a local pod: "10.244.1.5 dev caliX scope link".
	RoutePod
	// RouteRemoteTunnel is a remote block reached through tunl0 or
	// vxlan.calico: "10.244.2.0/26 via GW dev DEV onlink". Onlink because
	// the gateway (a node IP for IPIP, a tunnel address for VXLAN) is not
	// inside any subnet configured on the tunnel device.
	RouteRemoteTunnel
	// RouteRemoteDirect is a remote block reached over the underlay:
	// "10.244.2.0/26 via GW dev eth0", with OnLink set where the mode
	// wants it (VXLAN CrossSubnet).
	RouteRemoteDirect
)

// String returns the kind's name as used in logs and errors.
func (k RouteKind) String() string {
	switch k {
	case RouteBlackhole:
		return "blackhole"
	case RoutePod:
		return "pod"
	case RouteRemoteTunnel:
		return "remote-tunnel"
	case RouteRemoteDirect:
		return "remote-direct"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Route is one IPv4 route the agent wants in the kernel's main table.
type Route struct {
	Dst     netip.Prefix
	Kind    RouteKind
	Gateway netip.Addr // remote kinds only
	Device  string     // every kind but blackhole
	MTU     int        // route MTU (RTAX_MTU); 0 leaves it unset
	OnLink  bool       // RouteRemoteDirect only; remote-tunnel is always onlink
}

// String renders the route like "ip route" would, for logs and errors.
func (r Route) String() string {
	switch r.Kind {
	case RouteBlackhole:
		return "blackhole " + r.Dst.String()
	case RoutePod:
		return fmt.Sprintf("%s dev %s scope link", r.Dst, r.Device)
	}
	s := fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gateway, r.Device)
	if r.Kind == RouteRemoteTunnel || r.OnLink {
		s += " onlink"
	}
	if r.MTU != 0 {
		s += fmt.Sprintf(" mtu %d", r.MTU)
	}
	return s
}

// Validate reports what is wrong with the route, naming it.
func (r Route) Validate() error {
	if !r.Dst.IsValid() || !r.Dst.Addr().Is4() {
		return fmt.Errorf("route %q: destination must be a valid IPv4 prefix", r.Dst)
	}
	if r.Dst != r.Dst.Masked() {
		return fmt.Errorf("route %s: destination has host bits set (want %s)", r.Dst, r.Dst.Masked())
	}
	if r.MTU < 0 || (r.MTU > 0 && r.MTU < 68) {
		return fmt.Errorf("route %s: MTU %d is below the IPv4 minimum of 68", r.Dst, r.MTU)
	}
	switch r.Kind {
	case RouteBlackhole:
		return nil
	case RoutePod:
		if r.Device == "" {
			return fmt.Errorf("route %s: pod route needs a device", r.Dst)
		}
		return nil
	case RouteRemoteTunnel, RouteRemoteDirect:
		if r.Device == "" {
			return fmt.Errorf("route %s: remote route needs a device", r.Dst)
		}
		if !r.Gateway.IsValid() || !r.Gateway.Is4() {
			return fmt.Errorf("route %s: remote route needs an IPv4 gateway", r.Dst)
		}
		return nil
	}
	return fmt.Errorf("route %s: unknown kind %s", r.Dst, r.Kind)
}

// EncapMode is an IPPool's ipipMode / vxlanMode value.
type EncapMode string

// The values of IPPool ipipMode and vxlanMode, as in Calico.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// VXLAN is the desired vxlan.calico device.
type VXLAN struct {
	VNI     int              // 4096 by default
	Port    int              // 4789 by default
	LocalIP netip.Addr       // the node IP
	Parent  string           // the uplink carrying LocalIP
	MAC     net.HardwareAddr // 66: + sha1(node name)[0:5]
	MTU     int              // host MTU - 50
	Address netip.Addr       // the node's VXLAN tunnel address, installed as /32
}

// IPIP is the desired tunl0 device.
type IPIP struct {
	MTU     int        // host MTU - 20
	Address netip.Addr // the node's IPIP tunnel address, installed as /32
}

// VTEP is a remote node's VXLAN endpoint: the agent programs a permanent
// neighbour (TunnelIP lladdr MAC) and FDB entry (MAC dst NodeIP) for it.
type VTEP struct {
	Node     string
	NodeIP   netip.Addr
	TunnelIP netip.Addr
	MAC      net.HardwareAddr
}

// Tunnels is the whole desired tunnel state of a node. A nil device means
// the device must not exist (or, for tunl0, must carry no address).
type Tunnels struct {
	VXLAN *VXLAN
	IPIP  *IPIP
	VTEPs []VTEP
}

// Workload is a local pod: its host-side veth and its address.
type Workload struct {
	Namespace   string
	Name        string
	ContainerID string
	HostIface   string     // cali + 11 hex; see proxyarp.VethName
	IP          netip.Addr // the pod's IPv4 address, a /32 in the pod
	MTU         int        // pod MTU (host MTU - encapsulation overhead)
}

// Key names the workload in logs and errors: "namespace/name".
func (w Workload) Key() string { return w.Namespace + "/" + w.Name }

// Desired is the whole desired dataplane state of a node, computed by the
// agent from the cluster and applied by the reconcilers.
type Desired struct {
	Tunnels   Tunnels
	Workloads []Workload
	Routes    []Route
	PodMTU    int // MTU handed to the CNI plugin for new pods
	// Advertise is what the node announces over BGP: its confirmed
	// blocks, borrowed pod addresses (/32) and service ranges.
	Advertise []netip.Prefix
	// NAT is the node's natOutgoing masquerading.
	NAT NAT
}

// NAT is what IPPool natOutgoing asks of a node (docs/dataplane.md
// "natOutgoing"): traffic from an address in Masquerade to one outside
// every prefix of Pools leaves masqueraded to the node's address. Empty
// Masquerade: nothing is masqueraded.
type NAT struct {
	// Masquerade are the CIDRs of the pools with natOutgoing (disabled
	// ones too: their pods keep their addresses), sorted.
	Masquerade []netip.Prefix
	// Pools are the CIDRs of every pool, natOutgoing or not, disabled or
	// not, sorted: pod-to-pod traffic is never masqueraded.
	Pools []netip.Prefix
}

// DefaultAS is the nodes' AS number when neither their
// wren.network/as-number annotation nor the BGPConfiguration sets one
// (SPEC.md "BGP behaviour"): 64512, the first private 16-bit AS number
// (RFC 6996), Calico's default too.
const DefaultAS = 64512

// BGPConfig is the cluster-wide BGP configuration (the BGPConfiguration
// named default, with defaults filled in).
type BGPConfig struct {
	AS           uint32 // 0 when unset: nodes use DefaultAS
	MeshEnabled  bool
	ListenPort   int
	ServiceCIDRs []netip.Prefix
	Keepalive    time.Duration // 0: the speaker's default
	Hold         time.Duration
	RestartTime  time.Duration
	// MeshPassword is the TCP MD5 password of node-to-node sessions.
	// MeshPasswordMissing: one is configured but its Secret is not
	// readable; mesh sessions wait for it.
	MeshPassword        string
	MeshPasswordMissing bool
}

// LearnedRoute is a best path BGP learned from a peer.
type LearnedRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is the BGP neighbour the path came from; invalid for a route
	// found in the kernel at start (the previous run's).
	Peer netip.Addr
}

// Node is what the agent knows of a node from its Node object and
// annotations.
type Node struct {
	Name string
	// IP is the node's underlay address with its real prefix length
	// (wren.network/ipv4-address): CrossSubnet compares subnets with it.
	IP netip.Prefix
	// VXLANTunnelIP and VTEPMAC come from wren.network/ipv4-vxlan-tunnel-addr
	// and wren.network/vxlan-tunnel-mac; IPIPTunnelIP from
	// wren.network/ipv4-ipip-tunnel-addr. Invalid until the node's agent
	// has allocated and published them.
	VXLANTunnelIP netip.Addr
	VTEPMAC       net.HardwareAddr
	IPIPTunnelIP  netip.Addr
}

// Block sizes of an IPPool (SPEC.md "Custom resources"): the prefix
// length of the blocks nodes claim from it.
const (
	DefaultBlockSize = 26 // 64 addresses, as in Calico
	MinBlockSize     = 20
	MaxBlockSize     = 32
)

// Pool is an IPPool as pkg/cluster translates it, for IPAM (which blocks
// a node may claim) and for the agent (how blocks are routed, advertised
// and accepted). pkg/cluster fills in the defaults and leaves out pools it
// cannot use, so every Pool is valid: CIDR an IPv4 network, BlockSize in
// MinBlockSize..MaxBlockSize and at least CIDR's prefix length, VXLAN and
// IPIP never "" and at most one of them not EncapNever, and no two Pools
// overlap.
type Pool struct {
	Name      string
	CIDR      netip.Prefix
	BlockSize int // prefix length of the pool's blocks
	VXLAN     EncapMode
	IPIP      EncapMode
	// NATOutgoing masquerades traffic from the pool's pods to destinations
	// outside every pool.
	NATOutgoing bool
	// DisableBGPExport: the pool's blocks are never advertised.
	DisableBGPExport bool
	// NodeSelector is a Calico selector over node labels choosing the
	// nodes that claim blocks from the pool; "" and "all()" select every
	// node. pkg/cluster reports one that does not parse; it selects no
	// node.
	NodeSelector string
	// Disabled: no new addresses from the pool; the addresses it has
	// handed out keep being routed.
	Disabled bool
}

// DefaultRRClusterID is a route reflector's cluster ID when its
// wren.network/route-reflector label is not a dotted quad: one ID for
// the whole cluster, so that reflectors drop routes reflected by each
// other (RFC 4456 CLUSTER_LIST loop detection) instead of reflecting them
// back into the cluster. 244.0.0.1 is the value Calico's documentation
// uses for routeReflectorClusterID.
var DefaultRRClusterID = netip.AddrFrom4([4]byte{244, 0, 0, 1})

// NodeAddresses are what a node's agent publishes about it for the other
// nodes (pkg/cluster writes them as the Node's annotations). A zero field
// is not written.
type NodeAddresses struct {
	IP            netip.Prefix     // the underlay address with its prefix length
	VTEPMAC       net.HardwareAddr // of vxlan.calico
	VXLANTunnelIP netip.Addr
	IPIPTunnelIP  netip.Addr
}

// IsZero reports whether there is nothing to publish.
func (a NodeAddresses) IsZero() bool {
	return !a.IP.IsValid() && len(a.VTEPMAC) == 0 && !a.VXLANTunnelIP.IsValid() && !a.IPIPTunnelIP.IsValid()
}

// NodeInfo is a Node as pkg/cluster reports it: Node's addresses, the
// node's BGP facts, and its labels, each annotation and label parsed
// there (a malformed one is reported on the Node and ignored).
type NodeInfo struct {
	Node
	// Labels are the Node's labels, for node selectors (IPPool and
	// BGPPeer nodeSelector, BGPPeer peerSelector).
	Labels     map[string]string
	InternalIP netip.Addr // status.addresses InternalIP, if any
	// AS is the node's own AS number (annotation wren.network/as-number);
	// 0 when the node has none. See EffectiveAS.
	AS uint32
	// RouteReflector: the node carries the label
	// wren.network/route-reflector. RRClusterID is then its cluster ID:
	// the label's value if that is a dotted quad, else DefaultRRClusterID.
	RouteReflector bool
	RRClusterID    netip.Addr
}

// EffectiveAS is the AS the node speaks: its own, else clusterAS (the
// BGPConfiguration's asNumber, 0 when unset), else DefaultAS.
func (n NodeInfo) EffectiveAS(clusterAS uint32) uint32 {
	switch {
	case n.AS != 0:
		return n.AS
	case clusterAS != 0:
		return clusterAS
	}
	return DefaultAS
}

// BGPSession is one BGP session a node wants.
type BGPSession struct {
	// Name says where the session comes from, for logs and status:
	// "mesh/<node>", "rr/<node>" or "bgppeer/<object>".
	Name string
	// Kind is why the session exists.
	Kind    SessionKind
	Address netip.Addr
	Port    int // 0 means 179
	AS      uint32
	// Passive: wait for the peer to connect. Between nodes the one with
	// the higher address is passive, so two nodes never open colliding
	// connections.
	Passive bool
	// RRClient: this node is a route reflector and the peer is its
	// client; ClusterID is the reflector's cluster ID then.
	RRClient  bool
	ClusterID netip.Addr
	// Password is the TCP MD5 password; "" for none.
	Password string
	// Keepalive, RestartTime and TTLSecurity (hops) override the
	// cluster's settings for an explicit peer; zero means unset.
	Keepalive   time.Duration
	RestartTime time.Duration
	TTLSecurity int
	// MaxPrefixes cuts the session when the peer sends more prefixes; 0
	// means no limit.
	MaxPrefixes uint32
	// KernelSource: the BGPPeer's sourceAddress is None, so the kernel
	// picks the session's local address instead of the node IP.
	KernelSource bool
}

// SessionKind is why a BGP session exists (the peer types of the debug
// API and `wrenctl status`).
type SessionKind string

// Session kinds. The first three are the node-to-node topology, which the
// agent reshapes make-before-break; the last two come from BGPPeer objects
// and follow them at once.
const (
	SessionMesh           SessionKind = "mesh"            // full mesh, no reflector in the cluster
	SessionRouteReflector SessionKind = "route-reflector" // the peer is a reflector (this node its client, or a fellow reflector)
	SessionRRClient       SessionKind = "rr-client"       // this node reflects to the peer
	SessionGlobal         SessionKind = "global"          // a BGPPeer for every node (a top-of-rack router)
	SessionNodeSpecific   SessionKind = "node-specific"   // a BGPPeer for selected nodes
)

// Topology reports whether the session belongs to the node-to-node
// topology (mesh or route reflection) rather than to a BGPPeer object.
func (k SessionKind) Topology() bool {
	return k == SessionMesh || k == SessionRouteReflector || k == SessionRRClient
}

// BGPPeer is an explicit BGP peer (a BGPPeer object) as far as the agent
// validates it before BGP is involved.
type BGPPeer struct {
	Name string
	IP   netip.Addr
	Port int // 0 means 179
	AS   uint32
	// Node and NodeSelector choose the nodes that peer; both empty means
	// every node.
	Node         string
	NodeSelector string
	// PeerSelector (instead of IP and AS) peers with every node matching
	// it, at that node's address and AS; the matching nodes peer back.
	PeerSelector string
	// KernelSource: sourceAddress None (the kernel picks the local
	// address); the default, UseNodeIP, binds the session to the node IP.
	KernelSource bool
	Keepalive    time.Duration
	RestartTime  time.Duration
	TTLSecurity  int
	// MaxPrefixes (spec.maxPrefixes) cuts the session when the peer sends
	// more prefixes; 0 means no limit.
	MaxPrefixes uint32
	// Password is the TCP MD5 password (from its Secret); "" for none.
	Password string
}
