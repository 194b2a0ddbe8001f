package v1alpha1

import (
	"net/netip"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAMBlock is one block of an IPPool: a CIDR (a /26 by default) with an
// affinity to the node that claimed it, and the addresses allocated from
// it. The object is the unit of IPAM concurrency:
//
//   - claim: a node creates the block with state pending and its own name
//     as affinity. The create is the linearisation point: the name is
//     derived from the CIDR, so exactly one creator of a CIDR wins and the
//     others get AlreadyExists.
//   - confirm: the winner updates state to confirmed, conditional on the
//     resourceVersion it created (compare-and-swap). Only confirmed blocks
//     are advertised and blackholed.
//   - allocate / release: an update of spec.allocations, conditional on
//     the resourceVersion read; a conflict means re-read and retry.
//   - borrow: a node allocates in another node's confirmed block when its
//     pools have no free block; the allocation's node field says so.
//   - release: the owner stamps spec.emptySince when the last address is
//     released and deletes the block (conditional on resourceVersion) once
//     it has stayed empty for the grace period.
//
// The name is the CIDR with '.' and '/' replaced by '-' (BlockName):
// "10-244-3-64-26" for 10.244.3.64/26.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=wren
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.spec.cidr) || self.metadata.name == self.spec.cidr.replace('.', '-').replace('/', '-')",messageExpression="'metadata.name must be ' + self.spec.cidr.replace('.', '-').replace('/', '-') + ', the name derived from spec.cidr ' + self.spec.cidr"
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Affinity",type=string,JSONPath=`.spec.affinity`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.spec.state`
// +kubebuilder:printcolumn:name="Empty Since",type=date,JSONPath=`.spec.emptySince`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the block.
	// +required
	Spec IPAMBlockSpec `json:"spec"`
}

// IPAMBlockSpec is a block's state. There is no status: every field is
// written by the agents, conditionally on resourceVersion.
//
// +kubebuilder:validation:XValidation:rule="!has(self.allocations) || !isCIDR(self.cidr) || self.allocations.all(a, !isIP(a.ip) || cidr(self.cidr).containsIP(a.ip))",message="every spec.allocations[].ip must be inside spec.cidr",fieldPath=".allocations"
type IPAMBlockSpec struct {
	// CIDR is the block's network, inside one IPPool's cidr, with that
	// pool's blockSize as prefix length.
	// +required
	CIDR CIDR `json:"cidr"`

	// Affinity is the name of the node that claimed the block and routes
	// it; empty when no node owns it (its node left while addresses were
	// still allocated).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Affinity string `json:"affinity,omitempty"`

	// State is the claim state of the affinity: pending from the create
	// until the claiming node confirms it, then confirmed.
	// +optional
	// +kubebuilder:default=pending
	State BlockState `json:"state,omitempty"`

	// Allocations are the allocated addresses, at most one entry per
	// address (the API server rejects duplicates), sorted by address.
	// +optional
	// +listType=map
	// +listMapKey=ip
	// +kubebuilder:validation:MaxItems=4096
	Allocations []IPAllocation `json:"allocations,omitempty"`

	// EmptySince is when the owner first saw the block without
	// allocations; the owner deletes the block once it has stayed empty
	// for the grace period. Cleared by the next allocation. Second
	// precision.
	// +optional
	EmptySince *metav1.Time `json:"emptySince,omitempty"`
}

// BlockState is the claim state of a block's affinity.
//
// +kubebuilder:validation:Enum=pending;confirmed
type BlockState string

// Block claim states.
const (
	// BlockPending: created by a node, not yet confirmed; not routed.
	BlockPending BlockState = "pending"
	// BlockConfirmed: owned by its affinity node; advertised and
	// blackholed there.
	BlockConfirmed BlockState = "confirmed"
)

// IPAllocation is one allocated address and its owner.
type IPAllocation struct {
	// IP is the address, inside the block's cidr.
	// +required
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address such as 10.244.3.70"
	IP string `json:"ip"`

	// Handle identifies the owner: "namespace/pod/containerID" for a pod,
	// or a fixed handle such as "node/<node>/vxlan" for a node's tunnel
	// address. Releasing is by handle.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Handle string `json:"handle"`

	// Namespace of the pod; empty for node addresses.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// Pod is the pod's name; empty for node addresses.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Pod string `json:"pod,omitempty"`

	// ContainerID is the CNI container ID of the pod sandbox.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ContainerID string `json:"containerID,omitempty"`

	// Node is the node the address was allocated for. It differs from the
	// block's affinity for a borrowed address, which that node advertises
	// as a /32.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
}

// IPAMBlockList is a list of IPAMBlocks.
//
// +kubebuilder:object:root=true
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the blocks.
	Items []IPAMBlock `json:"items"`
}

// BlockName is the object name of the IPAMBlock for cidr: the address
// with '.' (and ':') replaced by '-', then '-' and the prefix length, e.g.
// "10-244-3-64-26" for 10.244.3.64/26 (an object name cannot contain '/').
// It is the only definition of the name (pkg/ipam knows blocks by CIDR),
// and the CRD rejects an IPAMBlock whose name is not BlockName of its
// spec.cidr.
func BlockName(cidr netip.Prefix) string {
	a := strings.NewReplacer(".", "-", ":", "-").Replace(cidr.Addr().String())
	return a + "-" + strconv.Itoa(cidr.Bits())
}
