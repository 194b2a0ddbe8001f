// Package v1alpha1 holds the Go types of Wren's custom resources,
// wren.network/v1alpha1: IPPool, BGPConfiguration, BGPPeer and IPAMBlock.
// All are cluster-scoped.
//
// Field names follow Calico's projectcalico.org/v3 so operators port their
// YAML by changing apiVersion. The kubebuilder markers on the fields are
// the admission-time validation: controller-gen turns them into the
// OpenAPI schemas and CEL rules of deploy/crds (see docs/crds.md). What
// admission cannot catch (overlapping pools, selector syntax, unreachable
// peers) the agent validates and reports with an Event.
//
// The CEL rules use the Kubernetes IP/CIDR library (isCIDR, cidr(), ip()),
// so the CRDs need a kube-apiserver of 1.31 or later.
//
// Regenerate deepcopy and CRDs after editing (see docs/crds.md):
//
//	go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./pkg/cluster/v1alpha1/... crd paths=./pkg/cluster/v1alpha1/... output:crd:dir=./deploy/crds
//
// +kubebuilder:object:generate=true
// +groupName=wren.network
package v1alpha1
