//go:build linux

package nstest_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/agent"
	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentIPIPTunnelAddress: with an IPIP pool, each agent allocates its
// tunl0 address from IPAM (handle node/<node>/ipip), announces it in the
// wren.network/ipv4-ipip-tunnel-addr annotation, and keeps the same one
// across a restart. (The tunl0 device itself needs the ipip module, which
// this machine's kernel lacks: that part is covered where the kernel has
// it, see TestIPIPAlways.)
func TestAgentIPIPTunnelAddress(t *testing.T) {
	ac := newAgentCluster(t)
	// Without the ipip module no tunl0 can be made, so the nodes are
	// rightly not ready (their dataplane fails); the tunnel addresses come
	// before that. Wait for the first full sync instead.
	ac.started = func(a *agent.Agent) error {
		if a.LastSnapshot() == nil {
			return errors.New("no full sync yet")
		}
		return nil
	}
	ctx := context.Background()
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 26, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapAlways}}
	if err := ac.c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	a := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	b := ac.addNode("node-b", ac.sw1, "198.18.0.12/24")
	tunnelAddr := func(node string) (netip.Addr, error) {
		var n corev1.Node
		if err := ac.c.Get(ctx, keyOf(node), &n); err != nil {
			return netip.Addr{}, err
		}
		s, ok := n.Annotations[wcluster.AnnotationIPIPIP]
		if !ok {
			return netip.Addr{}, fmt.Errorf("node %s has no %s annotation", node, wcluster.AnnotationIPIPIP)
		}
		return netip.ParseAddr(s)
	}
	addrs := map[string]netip.Addr{}
	for _, n := range []*agentNode{a, b} {
		nstest.Poll(t, 20*time.Second, "IPIP tunnel address of "+n.name, func() error {
			ip, err := tunnelAddr(n.name)
			if err != nil {
				return err
			}
			addrs[n.name] = ip
			return nil
		})
	}
	if addrs["node-a"] == addrs["node-b"] || !netip.MustParsePrefix("10.244.0.0/16").Contains(addrs["node-a"]) {
		t.Fatalf("tunnel addresses %v: want two different addresses from the pool", addrs)
	}
	var blocks v1alpha1.IPAMBlockList
	if err := ac.c.List(ctx, &blocks); err != nil {
		t.Fatal(err)
	}
	for node, ip := range addrs {
		found := false
		for _, bl := range blocks.Items {
			for _, al := range bl.Spec.Allocations {
				if al.IP == ip.String() && al.Handle == ipam.NodeHandle(node, ipam.NodeAddrIPIP) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s's tunnel address %s is not recorded in IPAM with handle node/%s/ipip", node, ip, node)
		}
	}
	// A restart keeps the address.
	a.stop()
	ac.startAgent(a)
	if ip, err := tunnelAddr("node-a"); err != nil || ip != addrs["node-a"] {
		t.Fatalf("after a restart node-a has %v (%v), want %s", ip, err, addrs["node-a"])
	}
}
