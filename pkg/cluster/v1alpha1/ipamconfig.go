package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IPAMConfigurationName is the only IPAMConfiguration the agent reads.
const IPAMConfigurationName = "default"

// IPReservation holds addresses that IPAM never hands out, as Calico's
// IPReservation: a pod gets none of them, whichever pool or block they
// fall in. Addresses already allocated when a reservation is made stay
// with their pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:printcolumn:name="Reserved",type=string,JSONPath=`.spec.reservedCIDRs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPReservation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the reservation.
	// +required
	Spec IPReservationSpec `json:"spec"`
}

// IPReservationSpec lists the reserved addresses.
type IPReservationSpec struct {
	// ReservedCIDRs are IPv4 networks (10.244.0.0/30) or single addresses
	// (10.244.0.7) that are never handed out.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=18
	// +kubebuilder:validation:items:XValidation:rule="(isCIDR(self) && cidr(self).ip().family() == 4) || (isIP(self) && ip(self).family() == 4)",message="must be an IPv4 address or CIDR such as 10.244.0.7 or 10.244.0.0/30"
	ReservedCIDRs []string `json:"reservedCIDRs"`
}

// IPReservationList is a list of IPReservations.
//
// +kubebuilder:object:root=true
type IPReservationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the reservations.
	Items []IPReservation `json:"items"`
}

// IPAMConfiguration holds the cluster-wide IPAM settings. Exactly one,
// named "default", is used, as in Calico.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="metadata.name must be default: Wren reads only the IPAMConfiguration named default"
// +kubebuilder:printcolumn:name="Strict Affinity",type=boolean,JSONPath=`.spec.strictAffinity`
// +kubebuilder:printcolumn:name="Max Blocks",type=integer,JSONPath=`.spec.maxBlocksPerHost`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAMConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the configuration.
	// +optional
	// +kubebuilder:default={}
	Spec IPAMConfigurationSpec `json:"spec,omitempty"`
}

// IPAMConfigurationSpec is the cluster-wide IPAM configuration (Calico's
// IPAMConfigurationSpec fields that Wren implements).
type IPAMConfigurationSpec struct {
	// StrictAffinity forbids borrowing: a node whose blocks are full and
	// that may claim no more fails the pod's address request instead of
	// taking an address from another node's block.
	// +optional
	StrictAffinity bool `json:"strictAffinity,omitempty"`

	// MaxBlocksPerHost caps the blocks one node may hold affinity for; 0
	// or unset means no cap.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxBlocksPerHost int32 `json:"maxBlocksPerHost,omitempty"`
}

// IPAMConfigurationList is a list of IPAMConfigurations.
//
// +kubebuilder:object:root=true
type IPAMConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the configurations.
	Items []IPAMConfiguration `json:"items"`
}
