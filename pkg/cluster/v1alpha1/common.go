package v1alpha1

import (
	"fmt"
	"net/netip"
)

// CIDR is an IPv4 network in CIDR notation with no host bits set, such as
// 10.244.0.0/16. Wren is IPv4-only for now.
//
// +kubebuilder:validation:MaxLength=18
// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",message="must be an IPv4 CIDR such as 10.244.0.0/16"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="has host bits set: write the network address, e.g. 10.244.0.0/16 rather than 10.244.0.1/16"
type CIDR string

// Prefix parses c; admission guarantees it parses for stored objects.
func (c CIDR) Prefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(string(c))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse cidr %q: %w", string(c), err)
	}
	if !p.Addr().Is4() || p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("cidr %q is not an IPv4 network address", string(c))
	}
	return p, nil
}

// ASNumber is a BGP autonomous system number (RFC 6793: 4 bytes; 0 is
// reserved by RFC 7607). Calico's dotted "asdot" string form is not
// accepted: write 65536.10 as 4259840010.
//
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=4294967295
type ASNumber int64

// EncapMode says when pod traffic between two nodes is encapsulated.
//
// +kubebuilder:validation:Enum=Always;CrossSubnet;Never
type EncapMode string

// Encapsulation modes, as in Calico.
const (
	// EncapAlways encapsulates traffic to every other node.
	EncapAlways EncapMode = "Always"
	// EncapCrossSubnet encapsulates only traffic to nodes outside this
	// node's subnet; same-subnet nodes are routed directly.
	EncapCrossSubnet EncapMode = "CrossSubnet"
	// EncapNever routes pod traffic natively: the underlay must know the
	// pod routes (BGP peering with the top-of-rack routers).
	EncapNever EncapMode = "Never"
)

// SecretKeyRef names one key of a Secret in the namespace the agent runs
// in (Calico's secretKeyRef, without "optional").
type SecretKeyRef struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key within the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// BGPPassword is a TCP MD5 password (RFC 2385) for BGP sessions, read from
// a Secret.
type BGPPassword struct {
	// SecretKeyRef is the Secret key that holds the password.
	// +required
	SecretKeyRef SecretKeyRef `json:"secretKeyRef"`
}
