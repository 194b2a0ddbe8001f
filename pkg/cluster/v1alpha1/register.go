package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every Wren resource.
var GroupVersion = schema.GroupVersion{Group: "wren.network", Version: "v1alpha1"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers the Wren types with a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&IPPool{}, &IPPoolList{},
		&BGPConfiguration{}, &BGPConfigurationList{},
		&BGPPeer{}, &BGPPeerList{},
		&IPAMBlock{}, &IPAMBlockList{},
		&IPReservation{}, &IPReservationList{},
		&IPAMConfiguration{}, &IPAMConfigurationList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
