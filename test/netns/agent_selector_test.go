//go:build linux

package nstest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentPoolNodeSelector: IPAM takes addresses only from pools whose
// nodeSelector matches the node's labels; a selector that does not parse
// selects no node and is reported on the pool.
func TestAgentPoolNodeSelector(t *testing.T) {
	ac := newAgentCluster(t)
	ctx := context.Background()
	for _, p := range []struct{ name, cidr, sel string }{
		{"rack-1", "10.244.0.0/20", "rack == 'r1'"},
		{"rack-2", "10.244.16.0/20", "rack == 'r2' && has(wren.network/route-reflector)"},
		{"broken", "10.244.32.0/20", "rack == "},
	} {
		pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: p.name}, Spec: v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(p.cidr),
			BlockSize: 26, VXLANMode: v1alpha1.EncapAlways, IPIPMode: v1alpha1.EncapNever, NodeSelector: p.sel}}
		if err := ac.c.Create(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	var nodes []*agentNode
	for i, rack := range []string{"r1", "r2"} {
		an := ac.newNode(fmt.Sprintf("node-%d", i+1), ac.sw1, fmt.Sprintf("198.18.0.%d/24", 11+i))
		var n corev1.Node
		if err := ac.c.Get(ctx, keyOf(an.name), &n); err != nil {
			t.Fatal(err)
		}
		n.Labels = map[string]string{"rack": rack, "wren.network/route-reflector": ""}
		if err := ac.c.Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
		ac.startAgent(an)
		ac.nodes = append(ac.nodes, an)
		nodes = append(nodes, an)
	}
	p1, p2 := ac.addPod(nodes[0], "web-1"), ac.addPod(nodes[1], "web-2")
	if !strings.HasPrefix(p1.ip.String(), "10.244.") || p1.ip.As4()[2] >= 16 {
		t.Errorf("pod on rack r1 got %s, want one from rack-1 (10.244.0.0/20)", p1.ip)
	}
	if b := p2.ip.As4()[2]; b < 16 || b >= 32 {
		t.Errorf("pod on rack r2 got %s, want one from rack-2 (10.244.16.0/20)", p2.ip)
	}
	ac.pingMatrix(20 * time.Second)
	nstest.Poll(t, 10*time.Second, "Event InvalidNodeSelector on IPPool broken", func() error {
		var evs corev1.EventList
		if err := ac.c.List(ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "IPPool" && e.InvolvedObject.Name == "broken" && e.Reason == "InvalidNodeSelector" &&
				strings.Contains(e.Message, "spec.nodeSelector") && strings.Contains(e.Message, "position") {
				t.Logf("event: %s", e.Message)
				return nil
			}
		}
		return fmt.Errorf("not among %d events", len(evs.Items))
	})
}
