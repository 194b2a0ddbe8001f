//go:build linux

package nstest_test

// peerSelector BGPPeers on real agents: three wren-agent binaries in their
// node namespaces (198.18.0.11-13/24, one switch), pods in 10.244.0.0/16,
// a real kube-apiserver. Nothing is routed in the root namespace.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentPeerSelector: with the mesh off, a BGPPeer "racks" (nodeSelector
// rack == 'r1', peerSelector rack == 'r2') gives node-1 (rack r1) sessions
// to node-2 and node-3 (rack r2), which peer back, and no session between
// node-2 and node-3: node-1 routes both their blocks, node-2 loses
// node-3's (no reflector passes it on). Deleting the BGPPeer leaves every
// node without a session: each gets a NoBGPSessions Warning on its Node
// while its routes are still in the kernel.
func TestAgentPeerSelector(t *testing.T) {
	ac, procs := binaryCluster(t, 3, "10.244.0.0/16", nil, nil)
	ctx := context.Background()
	ac.pollSessions("full mesh", 60*time.Second, ac.fullMesh())
	ac.assertBGPRoutes("mesh: every block routed")
	n1, n2, n3 := bgpRestartNode(t, ac, "node-1"), bgpRestartNode(t, ac, "node-2"), bgpRestartNode(t, ac, "node-3")

	for name, rack := range map[string]string{"node-1": "r1", "node-2": "r2", "node-3": "r2"} {
		var n corev1.Node
		if err := ac.c.Get(ctx, keyOf(name), &n); err != nil {
			t.Fatal(err)
		}
		orig := n.DeepCopy()
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels["rack"] = rack
		if err := ac.c.Patch(ctx, &n, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	racks := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "racks"}, Spec: v1alpha1.BGPPeerSpec{
		NodeSelector: "rack == 'r1'", PeerSelector: "rack == 'r2'"}}
	if err := ac.c.Create(ctx, racks); err != nil {
		t.Fatal(err)
	}
	off := false
	if err := ac.c.Create(ctx, &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BGPConfigurationName},
		Spec: v1alpha1.BGPConfigurationSpec{NodeToNodeMeshEnabled: &off}}); err != nil {
		t.Fatal(err)
	}
	// node-2 and node-3's mesh session retires (at most 30 s: nobody else
	// carries their blocks to each other).
	ac.pollSessions("rack r1 peers with rack r2, rack r2 does not peer within", 90*time.Second,
		map[string][]string{"node-1": {"node-2", "node-3"}, "node-2": {"node-1"}, "node-3": {"node-1"}})
	nstest.Poll(t, 10*time.Second, "node-2's session to node-1 named by the BGPPeer", func() error {
		st, err := nstest.DebugStatus(procs["node-2"].socket, 5*time.Second)
		if err != nil {
			return err
		}
		var got []string
		for _, p := range st.GetPeers() {
			got = append(got, p.GetType()+" "+p.GetName()+" "+p.GetAddress()+" "+p.GetState())
		}
		if want := []string{"node-specific racks/node-1 198.18.0.11 established"}; !slices.Equal(got, want) {
			return fmt.Errorf("node-2 peers %q, want %q", got, want)
		}
		return nil
	})
	if err := ac.checkBGPRoutes(n1); err != nil {
		t.Errorf("node-1 peers with both: %v", err)
	}
	blocks, _ := ac.clusterFacts()
	nstest.Poll(t, 30*time.Second, "node-2 without a route to node-3's block", func() error {
		for _, b := range blocks["node-3"] {
			if r := kernelRoute(t, n2, b); r != "" {
				return fmt.Errorf("node-2 still has %s", r)
			}
		}
		return nil
	})
	ac.pingDuring(n1.pods[0], n2.pods[0], 100, "node-1 to node-2 over the BGPPeer's session")()
	ac.pingDuring(n3.pods[0], n1.pods[0], 100, "node-3 to node-1 over the BGPPeer's session")()

	if err := ac.c.Delete(ctx, racks); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*agentNode{n1, n2, n3} {
		nstest.Poll(t, 20*time.Second, "NoBGPSessions Warning on Node "+n.name, func() error {
			var evs corev1.EventList
			if err := ac.c.List(ctx, &evs); err != nil {
				return err
			}
			for _, ev := range evs.Items {
				if ev.Reason == "NoBGPSessions" && ev.InvolvedObject.Kind == "Node" && ev.InvolvedObject.Name == n.name && ev.Type == corev1.EventTypeWarning {
					t.Logf("%s: %s", n.name, ev.Message)
					return nil
				}
			}
			return fmt.Errorf("no NoBGPSessions Event for %s", n.name)
		})
	}
	// The Events came from the runs that dropped the sessions: node-1's
	// routes to the others are still there.
	if err := ac.checkBGPRoutes(n1); err != nil {
		t.Errorf("node-1 lost routes before or with its warning: %v", err)
	}
}

// kernelRoute returns the node's route to exactly dst as "ip route"
// would print it, or "" when there is none.
func kernelRoute(t *testing.T, n *agentNode, dst netip.Prefix) string {
	t.Helper()
	out, err := n.ns.Run(context.Background(), "ip", "route", "show", "exact", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	return out
}
