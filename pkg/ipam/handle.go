package ipam

import "strings"

// An allocation's handle names its owner. Release is by handle, and an
// Allocate with a handle that already holds an address returns that
// address (a repeated CNI ADD, an agent restart). Two formats exist:
//
//	"<namespace>/<pod>/<containerID>"  a pod's address (PodHandle)
//	"node/<node>/<kind>"               a node's own address (NodeHandle)
//
// Handles are stored in IPAMBlock objects, so neither format can change
// without migrating the blocks. No part of either can contain '/'
// (Kubernetes names cannot, nor can CNI container IDs). The two formats
// overlap only for a pod in namespace "node" whose container ID is
// "vxlan" or "ipip", which no container runtime produces (their IDs are
// 64 hex digits); such a string parses as a node handle.

// Kinds of node address (NodeHandle).
const (
	NodeAddrVXLAN = "vxlan" // the VXLAN tunnel address (annotation wren.network/ipv4-vxlan-tunnel-addr)
	NodeAddrIPIP  = "ipip"  // the address of tunl0 (annotation wren.network/ipv4-ipip-tunnel-addr)
)

// nodeHandlePrefix starts every node handle.
const nodeHandlePrefix = "node/"

// PodHandle is the handle of a pod's address: "namespace/pod/containerID".
// The container ID makes it unique per sandbox, so a pod recreated under
// the same name never releases its predecessor's address by mistake.
func PodHandle(namespace, pod, containerID string) string {
	return namespace + "/" + pod + "/" + containerID
}

// NodeHandle is the handle of a node's own address of kind (NodeAddrVXLAN
// or NodeAddrIPIP): "node/<node>/<kind>".
func NodeHandle(node, kind string) string { return nodeHandlePrefix + node + "/" + kind }

// ParsePodHandle splits a pod handle. ok is false unless h has three
// non-empty parts and is not a node handle.
func ParsePodHandle(h string) (namespace, pod, containerID string, ok bool) {
	if _, _, isNode := ParseNodeHandle(h); isNode {
		return "", "", "", false
	}
	parts := strings.Split(h, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// ParseNodeHandle splits a node handle. ok is false unless h is
// "node/<node>/<kind>" with a non-empty node and a known kind.
func ParseNodeHandle(h string) (node, kind string, ok bool) {
	rest, found := strings.CutPrefix(h, nodeHandlePrefix)
	if !found {
		return "", "", false
	}
	node, kind, found = strings.Cut(rest, "/")
	if !found || node == "" || strings.Contains(kind, "/") || kind != NodeAddrVXLAN && kind != NodeAddrIPIP {
		return "", "", false
	}
	return node, kind, true
}
