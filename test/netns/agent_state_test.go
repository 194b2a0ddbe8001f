//go:build linux

package nstest_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
	nstest "github.com/wren-net/wren/test/netns"
)

// clusterFacts reads what the API says: blocks by node and each node's
// tunnel address, as an operator would with kubectl.
func (ac *agentCluster) clusterFacts() (map[string][]netip.Prefix, map[string]netip.Addr) {
	t := ac.t
	t.Helper()
	var bl v1alpha1.IPAMBlockList
	if err := ac.c.List(context.Background(), &bl); err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]netip.Prefix{}
	for _, b := range bl.Items {
		if b.Spec.State != v1alpha1.BlockConfirmed {
			continue
		}
		p, err := b.Spec.CIDR.Prefix()
		if err != nil {
			t.Fatal(err)
		}
		blocks[b.Spec.Affinity] = append(blocks[b.Spec.Affinity], p)
	}
	var nl corev1.NodeList
	if err := ac.c.List(context.Background(), &nl); err != nil {
		t.Fatal(err)
	}
	tun := map[string]netip.Addr{}
	for _, n := range nl.Items {
		if a, err := netip.ParseAddr(n.Annotations["wren.network/ipv4-vxlan-tunnel-addr"]); err == nil {
			tun[n.Name] = a
		}
	}
	return blocks, tun
}

// checkAgentState compares one node's kernel with the API: a blackhole
// per own block, a /32 per local pod, a route per remote block through
// VXLAN (or direct onlink for same-subnet CrossSubnet), and a permanent
// FDB entry per remote VTEP. It returns the first difference.
func (ac *agentCluster) checkAgentState(n *agentNode, crossSubnet bool) error {
	blocks, tun := ac.clusterFacts()
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	got := map[string]netlink.Route{}
	for _, r := range rs {
		got[r.Dst.String()] = r
	}
	want := 0
	for _, b := range blocks[n.name] {
		want++
		if r, ok := got[b.String()]; !ok || r.Type != unix.RTN_BLACKHOLE {
			return fmt.Errorf("%s: no blackhole for own block %s", n.name, b)
		}
	}
	for _, p := range n.pods {
		want++
		r, ok := got[p.ip.String()+"/32"]
		if !ok || r.Scope != netlink.SCOPE_LINK {
			return fmt.Errorf("%s: no scope-link route to pod %s", n.name, p.ip)
		}
	}
	vx, err := n.ns.NL.LinkByName(tunnel.VXLANName)
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	fdb, _ := n.ns.NL.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	for _, peer := range ac.nodes {
		if peer == n {
			continue
		}
		for _, b := range blocks[peer.name] {
			want++
			r, ok := got[b.String()]
			if !ok {
				return fmt.Errorf("%s: no route to %s's block %s", n.name, peer.name, b)
			}
			direct := crossSubnet && peer.ip.Masked() == n.ip.Masked()
			switch {
			case direct && (r.Gw.String() != peer.ip.Addr().String() || r.Flags&unix.RTNH_F_ONLINK == 0):
				return fmt.Errorf("%s: route %s = via %s flags %d; want via %s onlink", n.name, b, r.Gw, r.Flags, peer.ip.Addr())
			case !direct && (r.Gw.String() != tun[peer.name].String() || r.LinkIndex != vx.Attrs().Index || r.Flags&unix.RTNH_F_ONLINK == 0):
				return fmt.Errorf("%s: route %s = via %s oif %d; want via %s dev vxlan.calico onlink", n.name, b, r.Gw, r.LinkIndex, tun[peer.name])
			}
		}
		mac := tunnel.VTEPMAC(peer.name).String()
		found := false
		for _, f := range fdb {
			found = found || (f.HardwareAddr.String() == mac && f.IP.String() == peer.ip.Addr().String())
		}
		if !found {
			return fmt.Errorf("%s: no FDB entry %s dst %s for %s", n.name, mac, peer.ip.Addr(), peer.name)
		}
	}
	if len(got) != want {
		var ds []string
		for d := range got {
			ds = append(ds, d)
		}
		return fmt.Errorf("%s: %d own routes %v; want %d", n.name, len(got), ds, want)
	}
	return nil
}

func (ac *agentCluster) assertStates(crossSubnet bool) {
	ac.t.Helper()
	nstest.Poll(ac.t, 10*time.Second, "kernel state matches the API on every node", func() error {
		for _, n := range ac.nodes {
			if err := ac.checkAgentState(n, crossSubnet); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestAgentJoinLeave: a node joining becomes reachable from every node; a
// node leaving (its Node deleted) is cleaned up everywhere.
func TestAgentJoinLeave(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapAlways)
	for _, name := range []string{"node-a", "node-b"} {
		n := ac.addNode(name, ac.sw1, map[string]string{"node-a": "198.18.0.11/24", "node-b": "198.18.0.12/24"}[name])
		ac.addPod(n, name+"-web")
	}
	ac.pingMatrix(20 * time.Second)
	c := ac.addNode("node-c", ac.sw2, "198.18.1.13/24")
	ac.addPod(c, "node-c-web")
	ac.pingMatrix(20 * time.Second)
	ac.assertStates(false)

	// node-c leaves: its agent stops and its Node object is deleted.
	cBlocks, _ := ac.clusterFacts()
	c.stop()
	if err := ac.c.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}}); err != nil {
		t.Fatal(err)
	}
	ac.nodes = ac.nodes[:2]
	nstest.Poll(t, 10*time.Second, "node-c cleaned up on node-a and node-b", func() error {
		for _, n := range ac.nodes {
			for _, b := range cBlocks["node-c"] {
				if out, _ := n.ns.Run(context.Background(), "ip", "route", "show", b.String()); strings.TrimSpace(out) != "" {
					return fmt.Errorf("%s still routes %s: %s", n.name, b, out)
				}
			}
			out, _ := n.ns.Run(context.Background(), "bridge", "fdb", "show", "dev", tunnel.VXLANName)
			if strings.Contains(out, tunnel.VTEPMAC("node-c").String()) {
				return fmt.Errorf("%s still has node-c's FDB entry: %s", n.name, out)
			}
			out, _ = n.ns.Run(context.Background(), "ip", "neigh", "show", "dev", tunnel.VXLANName)
			if strings.Contains(out, tunnel.VTEPMAC("node-c").String()) {
				return fmt.Errorf("%s still has node-c's neighbour: %s", n.name, out)
			}
		}
		return nil
	})
	ac.assertStates(false)
	ac.pingMatrix(10 * time.Second)
}

// TestAgentRestart: node-b's agent dies without any cleanup (as with
// kill -9) while a pod on node-a pings a pod on node-b every 10 ms; a new
// agent takes over. No packet is lost, node-b's kernel sees no deletion
// of a Wren route, and its blocks and pod addresses are unchanged.
func TestAgentRestart(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapAlways)
	a := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	b := ac.addNode("node-b", ac.sw1, "198.18.0.12/24")
	src, dst := ac.addPod(a, "client"), ac.addPod(b, "server")
	ac.pingMatrix(20 * time.Second)
	before, _ := ac.clusterFacts()

	// Watch node-b's kernel for deletions of our routes.
	updates := make(chan netlink.RouteUpdate, 4096)
	doneW := make(chan struct{})
	defer close(doneW)
	if err := netlink.RouteSubscribeWithOptions(updates, doneW, netlink.RouteSubscribeOptions{Namespace: &b.ns.Handle}); err != nil {
		t.Fatal(err)
	}
	pingOut := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, _ := src.ns.Run(ctx, "ping", "-i", "0.01", "-c", "600", "-W", "1", "-n", "-q", dst.ip.String())
		pingOut <- out
	}()
	rx := func() uint64 {
		l, err := dst.ns.NL.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.RxPackets
	}
	rx0 := rx()
	nstest.Poll(t, 5*time.Second, "ping reaching the server pod", func() error {
		if rx()-rx0 < 20 {
			return fmt.Errorf("only %d packets so far", rx()-rx0)
		}
		return nil
	})
	b.stop()
	restart := time.Now()
	ac.startAgent(b)
	t.Logf("node-b agent restarted and ready in %s", time.Since(restart).Round(time.Millisecond))
	out := <-pingOut
	if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("packets lost across the restart:\n%s", out)
	} else {
		t.Logf("ping across the restart: %s", strings.TrimSpace(out[strings.Index(out, "600 packets"):]))
	}
	deleted := 0
	for {
		select {
		case u := <-updates:
			if u.Type == unix.RTM_DELROUTE && u.Protocol == routes.Protocol {
				deleted++
				t.Errorf("node-b deleted own route %s during the restart", u.Dst)
			}
			continue
		default:
		}
		break
	}
	after, _ := ac.clusterFacts()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("blocks changed across the restart: %v -> %v", before, after)
	}
	ac.assertStates(false)
	ac.pingMatrix(10 * time.Second)
}

// TestAgentBorrow: a /25 pool has two /26 blocks; node-a and node-b claim
// them, so node-c borrows its tunnel address and its pod's address from
// them. The borrowed pod is reachable from every node although the
// owner blackholes its block: the /32 to node-c wins by longest prefix.
func TestAgentBorrow(t *testing.T) {
	ac := newAgentCluster(t)
	ac.poolCIDR(v1alpha1.EncapAlways, "10.244.7.0/25")
	a := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	ac.addPod(a, "node-a-web")
	b := ac.addNode("node-b", ac.sw1, "198.18.0.12/24")
	ac.addPod(b, "node-b-web")
	c := ac.addNode("node-c", ac.sw2, "198.18.1.13/24")
	borrowed := ac.addPod(c, "node-c-web")
	blocks, _ := ac.clusterFacts()
	if len(blocks["node-c"]) != 0 {
		t.Fatalf("node-c claimed %v; the pool should have no free block", blocks["node-c"])
	}
	var owner *agentNode
	for _, n := range []*agentNode{a, b} {
		for _, bl := range blocks[n.name] {
			if bl.Contains(borrowed.ip) {
				owner = n
			}
		}
	}
	if owner == nil {
		t.Fatalf("borrowed %s is in no block of node-a or node-b: %v", borrowed.ip, blocks)
	}
	t.Logf("node-c's pod borrowed %s from %s's block", borrowed.ip, owner.name)
	ac.pingMatrix(20 * time.Second)
	// On the owner: blackhole for the block and a /32 to node-c over VXLAN.
	out := owner.ns.MustRun(t, "ip", "route", "get", borrowed.ip.String())
	if !strings.Contains(out, "dev "+tunnel.VXLANName) {
		t.Fatalf("owner %s routes the borrowed %s as: %s", owner.name, borrowed.ip, out)
	}
	own := map[string]netlink.Route{}
	rs, err := owner.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		own[r.Dst.String()] = r
	}
	for _, bl := range blocks[owner.name] {
		if r, ok := own[bl.String()]; !ok || r.Type != unix.RTN_BLACKHOLE {
			t.Errorf("owner %s: no blackhole for its block %s", owner.name, bl)
		}
	}
	if r, ok := own[borrowed.ip.String()+"/32"]; !ok || r.Flags&unix.RTNH_F_ONLINK == 0 || r.Gw == nil {
		t.Errorf("owner %s: no onlink /32 to node-c for the borrowed %s: %+v", owner.name, borrowed.ip, r)
	}
}
