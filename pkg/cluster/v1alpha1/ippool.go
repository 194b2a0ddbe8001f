package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IPPool is a range of pod addresses. Nodes claim blocks of blockSize
// addresses from it (IPAMBlock) and advertise one route per block.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Block",type=integer,JSONPath=`.spec.blockSize`
// +kubebuilder:printcolumn:name="IPIP",type=string,JSONPath=`.spec.ipipMode`
// +kubebuilder:printcolumn:name="VXLAN",type=string,JSONPath=`.spec.vxlanMode`
// +kubebuilder:printcolumn:name="NAT",type=boolean,JSONPath=`.spec.natOutgoing`
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disabled`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the pool.
	// +required
	Spec IPPoolSpec `json:"spec"`
}

// IPPoolSpec is an IPPool's configuration (Calico's IPPoolSpec fields).
//
// +kubebuilder:validation:XValidation:rule="!(has(self.ipipMode) && has(self.vxlanMode) && self.ipipMode != 'Never' && self.vxlanMode != 'Never')",message="spec.ipipMode and spec.vxlanMode cannot both be enabled: set at least one of them to Never"
// +kubebuilder:validation:XValidation:rule="!has(self.blockSize) || !isCIDR(self.cidr) || cidr(self.cidr).ip().family() != 4 || self.blockSize >= cidr(self.cidr).prefixLength()",message="spec.blockSize must be at least the prefix length of spec.cidr: a block cannot be larger than its pool",fieldPath=".blockSize"
type IPPoolSpec struct {
	// CIDR is the pool's IPv4 network, e.g. 10.244.0.0/16.
	// +required
	CIDR CIDR `json:"cidr"`

	// BlockSize is the prefix length of the blocks nodes claim from the
	// pool: 26 (64 addresses) by default, 20 to 32.
	// +optional
	// +kubebuilder:default=26
	// +kubebuilder:validation:Minimum=20
	// +kubebuilder:validation:Maximum=32
	BlockSize int32 `json:"blockSize,omitempty"`

	// IPIPMode encapsulates pod traffic between nodes in IP-in-IP (tunl0):
	// Always, CrossSubnet or Never (default). At most one of ipipMode and
	// vxlanMode may be other than Never.
	// +optional
	// +kubebuilder:default=Never
	IPIPMode EncapMode `json:"ipipMode,omitempty"`

	// VXLANMode encapsulates pod traffic between nodes in VXLAN
	// (vxlan.calico, VNI 4096, port 4789): Always, CrossSubnet or Never
	// (default).
	// +optional
	// +kubebuilder:default=Never
	VXLANMode EncapMode `json:"vxlanMode,omitempty"`

	// NATOutgoing masquerades traffic from the pool's pods to
	// destinations outside every pool.
	// +optional
	NATOutgoing bool `json:"natOutgoing,omitempty"`

	// DisableBGPExport keeps the pool's blocks out of BGP: no node
	// advertises them.
	// +optional
	DisableBGPExport bool `json:"disableBGPExport,omitempty"`

	// NodeSelector is a Calico selector expression over node labels
	// choosing the nodes that may claim blocks from the pool; empty or
	// "all()" selects every node. The agent validates its syntax.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	NodeSelector string `json:"nodeSelector,omitempty"`

	// Disabled stops new allocations from the pool; existing addresses
	// keep working.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the pools.
	Items []IPPool `json:"items"`
}
