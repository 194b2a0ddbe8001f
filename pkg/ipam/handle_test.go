package ipam

import "testing"

// TestHandles: the stored formats, and that every string parses as at
// most one kind of handle.
func TestHandles(t *testing.T) {
	if got, want := PodHandle("default", "web-0", "c0ffee"), "default/web-0/c0ffee"; got != want {
		t.Errorf("PodHandle = %q, want %q", got, want)
	}
	if got, want := NodeHandle("node-a", NodeAddrVXLAN), "node/node-a/vxlan"; got != want {
		t.Errorf("NodeHandle = %q, want %q", got, want)
	}
	if got, want := NodeHandle("node-a", NodeAddrIPIP), "node/node-a/ipip"; got != want {
		t.Errorf("NodeHandle = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		h              string
		pod            [3]string // namespace, pod, container ID; "" parts: not a pod handle
		node, nodeKind string    // "": not a node handle
	}{
		{h: "default/web-0/c0ffee", pod: [3]string{"default", "web-0", "c0ffee"}},
		{h: "node/web-0/c0ffee", pod: [3]string{"node", "web-0", "c0ffee"}}, // a pod in namespace "node"
		{h: "node/node-a/vxlan", node: "node-a", nodeKind: NodeAddrVXLAN},
		{h: "node/node-a/ipip", node: "node-a", nodeKind: NodeAddrIPIP},
		{h: "node//vxlan"},
		{h: "node/node-a/vxlan/x"},
		{h: "default/web-0"},
		{h: "default//c0ffee"},
		{h: "/web-0/c0ffee"},
		{h: "default/web-0/"},
		{h: "a/b/c/d"},
		{h: ""},
	} {
		ns, pod, cid, ok := ParsePodHandle(tc.h)
		if wantOK := tc.pod[0] != ""; ok != wantOK || ok && [3]string{ns, pod, cid} != tc.pod {
			t.Errorf("ParsePodHandle(%q) = %q, %q, %q, %v; want %q, %v", tc.h, ns, pod, cid, ok, tc.pod, wantOK)
		}
		if ok && PodHandle(ns, pod, cid) != tc.h {
			t.Errorf("PodHandle(ParsePodHandle(%q)) = %q", tc.h, PodHandle(ns, pod, cid))
		}
		node, kind, ok := ParseNodeHandle(tc.h)
		if wantOK := tc.node != ""; ok != wantOK || node != tc.node || kind != tc.nodeKind {
			t.Errorf("ParseNodeHandle(%q) = %q, %q, %v; want %q, %q, %v", tc.h, node, kind, ok, tc.node, tc.nodeKind, wantOK)
		}
		if ok && NodeHandle(node, kind) != tc.h {
			t.Errorf("NodeHandle(ParseNodeHandle(%q)) = %q", tc.h, NodeHandle(node, kind))
		}
	}
}
