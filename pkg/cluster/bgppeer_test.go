package cluster

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// TestParseBGPPeerRemoteSide: admission refuses a BGPPeer with both peerIP
// and peerSelector or neither, but one stored before the CRD had that rule
// (or by a client that skipped validation) must still be reported on the
// object, naming the fields and the fix, and left out.
func TestParseBGPPeerRemoteSide(t *testing.T) {
	as := v1alpha1.ASNumber(65001)
	cases := []struct {
		name string
		spec v1alpha1.BGPPeerSpec
		want string // the reported message's start; "" for a usable peer
	}{
		{"both", v1alpha1.BGPPeerSpec{PeerIP: "198.18.0.1", ASNumber: &as, PeerSelector: "all()"}, "spec.peerIP and spec.peerSelector are both set"},
		{"neither", v1alpha1.BGPPeerSpec{NodeSelector: "all()"}, "neither spec.peerIP nor spec.peerSelector is set"},
		{"bad peerIP", v1alpha1.BGPPeerSpec{PeerIP: "198.18.0.1:x", ASNumber: &as}, `spec.peerIP "198.18.0.1:x" is not ip or ip:port`},
		{"selector", v1alpha1.BGPPeerSpec{PeerSelector: "rack == 'r1'"}, ""},
		{"ip", v1alpha1.BGPPeerSpec{PeerIP: "198.18.0.1", ASNumber: &as}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "p-" + tc.name}, Spec: tc.spec}
			peer, prob, ok := parseBGPPeer(p)
			if tc.want == "" {
				if !ok || peer.Name != p.Name {
					t.Fatalf("usable peer refused: %+v", prob)
				}
				return
			}
			if ok {
				t.Fatalf("got peer %+v, want it refused with %q", peer, tc.want)
			}
			if prob.Kind != "BGPPeer" || prob.Name != p.Name || !strings.HasPrefix(prob.Message, tc.want) {
				t.Errorf("problem %+v; want BGPPeer %s with %q", prob, p.Name, tc.want)
			}
		})
	}
}
