package cluster

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/model"
)

// Test addresses: nodes 198.18.0.0/15, tunnel addresses and route
// reflector cluster IDs from 10.244.0.0/16 and 198.18.0.0/15 (API
// objects only).

// TestParseNode: every annotation and label Wren reads, well-formed and
// malformed. A malformed one is reported naming the Node and the key and
// leaves its fact unset, except that a route-reflector label of any value
// still makes the node a reflector.
func TestParseNode(t *testing.T) {
	addr := netip.MustParseAddr
	mac, _ := net.ParseMAC("66:aa:bb:cc:dd:ee")
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		labels      map[string]string
		addresses   []corev1.NodeAddress
		want        model.NodeInfo // Name, Labels and Annotations filled in
		problems    []string       // "Reason: message"
	}{
		{name: "a bare Node", want: model.NodeInfo{}},
		{name: "everything the agent writes",
			annotations: map[string]string{AnnotationIPv4: "198.18.0.11/24", AnnotationVXLANIP: "10.244.1.0", AnnotationVXLANMAC: "66:aa:bb:cc:dd:ee",
				AnnotationIPIPIP: "10.244.1.1", "other.example/key": "kept"},
			addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-a"}, {Type: corev1.NodeInternalIP, Address: "fd00::11"},
				{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}},
			want: model.NodeInfo{Node: model.Node{IP: netip.MustParsePrefix("198.18.0.11/24"), VXLANTunnelIP: addr("10.244.1.0"), VTEPMAC: mac,
				IPIPTunnelIP: addr("10.244.1.1")}, InternalIP: addr("198.18.0.11")}},
		{name: "own AS number", annotations: map[string]string{AnnotationASNumber: "65010"}, want: model.NodeInfo{AS: 65010}},
		{name: "four-byte AS number", annotations: map[string]string{AnnotationASNumber: "4294967295"}, want: model.NodeInfo{AS: 4294967295}},
		{name: "empty AS annotation: none", annotations: map[string]string{AnnotationASNumber: ""}, want: model.NodeInfo{}},
		{name: "AS not a number", annotations: map[string]string{AnnotationASNumber: "abc"}, want: model.NodeInfo{},
			problems: []string{`BadAnnotation: annotation wren.network/as-number="abc" is not an AS number from 1 to 4294967295; the node uses the cluster's AS`}},
		{name: "AS 0 is reserved", annotations: map[string]string{AnnotationASNumber: "0"}, want: model.NodeInfo{},
			problems: []string{`BadAnnotation: annotation wren.network/as-number="0" is not an AS number`}},
		{name: "AS beyond four bytes", annotations: map[string]string{AnnotationASNumber: "4294967296"}, want: model.NodeInfo{},
			problems: []string{`BadAnnotation: annotation wren.network/as-number="4294967296" is not an AS number`}},
		{name: "AS in asdot form", annotations: map[string]string{AnnotationASNumber: "1.10"}, want: model.NodeInfo{},
			problems: []string{`BadAnnotation: annotation wren.network/as-number="1.10" is not an AS number`}},
		{name: "reflector: true", labels: map[string]string{LabelRouteReflector: "true"},
			want: model.NodeInfo{RouteReflector: true, RRClusterID: model.DefaultRRClusterID}},
		{name: "reflector: empty value", labels: map[string]string{LabelRouteReflector: ""},
			want: model.NodeInfo{RouteReflector: true, RRClusterID: model.DefaultRRClusterID}},
		{name: "reflector with its cluster ID", labels: map[string]string{LabelRouteReflector: "198.18.0.1"},
			want: model.NodeInfo{RouteReflector: true, RRClusterID: addr("198.18.0.1")}},
		{name: "reflector with a malformed cluster ID", labels: map[string]string{LabelRouteReflector: "10.0.0"},
			want:     model.NodeInfo{RouteReflector: true, RRClusterID: model.DefaultRRClusterID},
			problems: []string{`BadLabel: label wren.network/route-reflector="10.0.0" is neither true nor a cluster ID in dotted-quad form; the node is a route reflector with the default cluster ID 244.0.0.1`}},
		{name: "reflector label false is still the label", labels: map[string]string{LabelRouteReflector: "false"},
			want:     model.NodeInfo{RouteReflector: true, RRClusterID: model.DefaultRRClusterID},
			problems: []string{`BadLabel: label wren.network/route-reflector="false" is neither true nor`}},
		{name: "reflector with an IPv6 cluster ID", labels: map[string]string{LabelRouteReflector: "fd00--1"},
			want:     model.NodeInfo{RouteReflector: true, RRClusterID: model.DefaultRRClusterID},
			problems: []string{`BadLabel: label wren.network/route-reflector="fd00--1"`}},
		{name: "other labels are no reflector", labels: map[string]string{"rack": "r1"}, want: model.NodeInfo{}},
		{name: "malformed addresses",
			annotations: map[string]string{AnnotationIPv4: "198.18.0.11", AnnotationVXLANIP: "10.244.1.0/32", AnnotationVXLANMAC: "66:aa:bb",
				AnnotationIPIPIP: "fd00::1"},
			want: model.NodeInfo{},
			problems: []string{
				`BadAnnotation: annotation wren.network/ipv4-address="198.18.0.11" is not an IPv4 address in CIDR form (like 198.18.0.11/24)`,
				`BadAnnotation: annotation wren.network/ipv4-vxlan-tunnel-addr="10.244.1.0/32" is not an IPv4 address; ignored until the node's agent writes it again`,
				`BadAnnotation: annotation wren.network/ipv4-ipip-tunnel-addr="fd00::1" is not an IPv4 address`,
				`BadAnnotation: annotation wren.network/vxlan-tunnel-mac="66:aa:bb" is not a MAC address`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: tc.annotations, Labels: tc.labels},
				Status: corev1.NodeStatus{Addresses: tc.addresses}}
			got, problems := parseNode(n)
			tc.want.Name, tc.want.Labels = "node-a", tc.labels
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("NodeInfo (-want +got):\n%s", diff)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %+v, want %q", problems, tc.problems)
			}
			for i, w := range tc.problems {
				p := problems[i]
				if got := p.Reason + ": " + p.Message; p.Kind != "Node" || p.Name != "node-a" || len(got) < len(w) || got[:len(w)] != w {
					t.Errorf("problem %d = %s %s %q, want Node node-a %q", i, p.Kind, p.Name, got, w)
				}
			}
		})
	}
}
