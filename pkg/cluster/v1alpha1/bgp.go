package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// BGPConfigurationName is the only BGPConfiguration the agent reads.
const BGPConfigurationName = "default"

// BGPConfiguration holds the cluster-wide BGP settings. Exactly one, named
// "default", is used; Calico's per-node "node.<name>" objects are not
// supported (a per-node AS goes in the wren.network/as-number annotation).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="metadata.name must be default: Wren reads only the BGPConfiguration named default"
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="Mesh",type=boolean,JSONPath=`.spec.nodeToNodeMeshEnabled`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.listenPort`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the configuration.
	// +optional
	// +kubebuilder:default={}
	Spec BGPConfigurationSpec `json:"spec,omitempty"`
}

// BGPConfigurationSpec is the cluster-wide BGP configuration (Calico's
// BGPConfigurationSpec fields that Wren implements).
type BGPConfigurationSpec struct {
	// ASNumber is the nodes' AS unless a node's wren.network/as-number
	// annotation overrides it. Default 64512.
	// +optional
	// +kubebuilder:default=64512
	ASNumber *ASNumber `json:"asNumber,omitempty"`

	// NodeToNodeMeshEnabled peers every node with every other node (or,
	// once a node carries the wren.network/route-reflector label, every
	// node with the route reflectors). Default true.
	// +optional
	// +kubebuilder:default=true
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`

	// ListenPort is the TCP port BGP listens on and mesh peers connect
	// to. Default 179.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ListenPort *int32 `json:"listenPort,omitempty"`

	// ServiceClusterIPs are Service cluster IP ranges every node
	// advertises.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ServiceClusterIPs []ServiceIPBlock `json:"serviceClusterIPs,omitempty"`

	// ServiceExternalIPs are Service external IP ranges every node
	// advertises.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ServiceExternalIPs []ServiceIPBlock `json:"serviceExternalIPs,omitempty"`

	// ServiceLoadBalancerIPs are Service load-balancer IP ranges every
	// node advertises.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ServiceLoadBalancerIPs []ServiceIPBlock `json:"serviceLoadBalancerIPs,omitempty"`

	// NodeMeshPassword is the TCP MD5 password of the node-to-node mesh
	// sessions.
	// +optional
	NodeMeshPassword *BGPPassword `json:"nodeMeshPassword,omitempty"`

	// NodeMeshMaxRestartTime is the graceful-restart time (RFC 4724) of
	// mesh sessions: how long peers keep a restarting node's routes.
	// A Go duration such as 120s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	NodeMeshMaxRestartTime *metav1.Duration `json:"nodeMeshMaxRestartTime,omitempty"`

	// KeepaliveTime is the BGP keepalive interval of mesh sessions
	// (RFC 4271 section 4.4), a Go duration such as 20s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// HoldTime is the BGP hold time of mesh sessions (RFC 4271: 0 or at
	// least 3s), a Go duration such as 90s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
}

// ServiceIPBlock is one Service address range to advertise.
type ServiceIPBlock struct {
	// CIDR is the range, e.g. 10.96.0.0/12.
	// +required
	CIDR CIDR `json:"cidr"`
}

// BGPConfigurationList is a list of BGPConfigurations.
//
// +kubebuilder:object:root=true
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the configurations.
	Items []BGPConfiguration `json:"items"`
}

// BGPPeer is an explicit BGP peer: a router outside the cluster (peerIP),
// or the nodes matching peerSelector. It applies to every node, or to the
// node named by node, or to the nodes matching nodeSelector.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:printcolumn:name="Peer IP",type=string,JSONPath=`.spec.peerIP`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Node Selector",type=string,JSONPath=`.spec.nodeSelector`,priority=1
// +kubebuilder:printcolumn:name="Peer Selector",type=string,JSONPath=`.spec.peerSelector`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the peering.
	// +required
	Spec BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is one peering (Calico's BGPPeerSpec fields that Wren
// implements).
//
// +kubebuilder:validation:XValidation:rule="!(has(self.node) && has(self.nodeSelector))",message="spec.node and spec.nodeSelector cannot both be set: name one node, or select nodes, or set neither for every node"
// +kubebuilder:validation:XValidation:rule="has(self.peerIP) != has(self.peerSelector)",message="exactly one of spec.peerIP and spec.peerSelector must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.peerIP) || has(self.asNumber)",message="spec.asNumber is required with spec.peerIP",fieldPath=".asNumber"
// +kubebuilder:validation:XValidation:rule="!(has(self.peerSelector) && has(self.asNumber))",message="spec.asNumber must not be set with spec.peerSelector: the selected nodes' own AS numbers are used",fieldPath=".asNumber"
type BGPPeerSpec struct {
	// Node is the name of the one node that peers; empty with an empty
	// nodeSelector means every node.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`

	// NodeSelector is a Calico selector over node labels choosing the
	// nodes that peer.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	NodeSelector string `json:"nodeSelector,omitempty"`

	// PeerIP is the peer's IPv4 address, optionally with its BGP port:
	// "198.18.0.1" or "198.18.0.1:1179".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=21
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9.]+(:[0-9]{1,5})?$') && isIP(self.split(':')[0]) && (size(self.split(':')) == 1 || (int(self.split(':')[1]) >= 1 && int(self.split(':')[1]) <= 65535))",message="must be an IPv4 address, optionally with a port 1-65535: 198.18.0.1 or 198.18.0.1:179"
	PeerIP string `json:"peerIP,omitempty"`

	// ASNumber is the peer's AS; required with peerIP. Equal to the
	// node's AS means iBGP, different means eBGP.
	// +optional
	ASNumber *ASNumber `json:"asNumber,omitempty"`

	// PeerSelector is a Calico selector over node labels: the selecting
	// nodes peer with every matching node, at that node's address and AS.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	PeerSelector string `json:"peerSelector,omitempty"`

	// Password is the TCP MD5 password of the session (RFC 2385).
	// +optional
	Password *BGPPassword `json:"password,omitempty"`

	// KeepaliveTime is the BGP keepalive interval (RFC 4271 section
	// 4.4), a Go duration such as 20s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// MaxRestartTime is the graceful-restart time (RFC 4724) the peer is
	// asked to keep our routes, a Go duration such as 120s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	MaxRestartTime *metav1.Duration `json:"maxRestartTime,omitempty"`

	// TTLSecurity enables GTSM (RFC 5082): the number of hops to the
	// peer; packets arriving with a TTL below 256 minus that are dropped.
	// 0 or unset disables it.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	TTLSecurity *int32 `json:"ttlSecurity,omitempty"`

	// SourceAddress is the session's local address: UseNodeIP (default)
	// binds to the node IP, None lets the kernel choose.
	// +optional
	SourceAddress SourceAddress `json:"sourceAddress,omitempty"`

	// MaxPrefixes is Wren's own field (Calico has none): the session is
	// cut, with a Cease NOTIFICATION "maximum number of prefixes reached"
	// (RFC 4486 subcode 1), when the peer sends more IPv4 unicast
	// prefixes than this, and stays down until the limit or the peer
	// changes. Prefixes the import policy rejects count too. Unset means
	// no limit.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxPrefixes *int32 `json:"maxPrefixes,omitempty"`
}

// SourceAddress chooses the local address of a BGP session.
//
// +kubebuilder:validation:Enum=UseNodeIP;None
type SourceAddress string

// Source address choices, as in Calico.
const (
	SourceAddressUseNodeIP SourceAddress = "UseNodeIP"
	SourceAddressNone      SourceAddress = "None"
)

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the peers.
	Items []BGPPeer `json:"items"`
}
