//go:build linux

package nstest_test

// BGP end to end: the real wren-agent binary runs inside each node's
// namespace ("ip netns exec"), so its GoBGP speaker listens on :179 and
// dials its peers there, over the test's switch. Its API traffic goes
// through an APIProxy on the namespace's loopback to envtest's
// kube-apiserver on the root namespace's loopback.
//
// Test addresses: nodes 198.18.0.11-14/24 on one switch (router
// 198.18.0.1), pods 10.244.0.0/16 in /26 blocks, route reflector cluster
// ID 10.0.0.9 (a BGP attribute only, never an address). Nothing is routed
// in the root namespace.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
	nstest "github.com/wren-net/wren/test/netns"
)

// labelRR is the node label that makes a node a BGP route reflector.
const labelRR = "wren.network/route-reflector"

// TestAgentBinaryInNS checks the in-namespace launch mode the BGP tests
// rely on, with VXLAN so that it does not depend on BGP: two wren-agent
// binaries inside their node namespaces reach the API through their
// proxies, wire pods that ping each other, and one survives a kill -9 and
// a restart.
func TestAgentBinaryInNS(t *testing.T) {
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	ac.pool(v1alpha1.EncapAlways)
	a, pa := ac.addBinaryNodeInNS("node-a", ac.sw1, "198.18.0.11/24", bin)
	b, pb := ac.addBinaryNodeInNS("node-b", ac.sw1, "198.18.0.12/24", bin)
	ac.addBinaryPod(a, pa, "node-a-web")
	ac.addBinaryPod(b, pb, "node-b-web")
	ac.pingMatrix(20 * time.Second)
	ac.assertStates(false)

	old := pb.cmd.Process.Pid
	pb.kill9()
	pb.start()
	pb.waitReady(30 * time.Second)
	pb.checkInNS()
	t.Logf("node-b's wren-agent: pid %d killed, pid %d ready", old, pb.cmd.Process.Pid)
	ac.assertStates(false)
	ac.pingMatrix(10 * time.Second)
}

// bgpCluster is four nodes on one subnet, each running the wren-agent
// binary inside its namespace with BGP on, a pool without encapsulation
// and one pod per node.
func newBGPCluster(t *testing.T) *agentCluster {
	t.Helper()
	ac, _ := bgpRestartCluster(t, 4, nil)
	return ac
}

// dumpBGPState logs what each node's kernel holds: BGP TCP sessions and
// the routing table.
func (ac *agentCluster) dumpBGPState() {
	t := ac.t
	for _, n := range ac.nodes {
		ss, _ := n.ns.Run(context.Background(), "ss", "-tna", "( sport = :179 or dport = :179 )")
		rt, _ := n.ns.Run(context.Background(), "ip", "-d", "route", "show", "table", "main")
		t.Logf("%s (%s):\n-- ss -tna port 179:\n%s-- ip -d route:\n%s", n.name, n.ip, ss, rt)
	}
}

// bgpPeers returns the remote addresses of the node's established TCP
// connections to or from port 179, sorted (twice if there are two).
func bgpPeers(n *agentNode) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.ns.Run(ctx, "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )")
	if err != nil {
		return nil, err
	}
	var peers []netip.Addr
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var aps []netip.AddrPort
		for _, f := range strings.Fields(l) {
			if ap, err := netip.ParseAddrPort(f); err == nil {
				aps = append(aps, ap)
			}
		}
		if len(aps) == 0 {
			continue
		}
		if len(aps) != 2 {
			return nil, fmt.Errorf("%s: unexpected ss line %q", n.name, l)
		}
		peers = append(peers, aps[1].Addr())
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	return peers, nil
}

// checkSessions compares every node's BGP sessions with want (node name
// to the names of the nodes it should have exactly one session with).
func (ac *agentCluster) checkSessions(want map[string][]string) error {
	byName := map[string]*agentNode{}
	for _, n := range ac.nodes {
		byName[n.name] = n
	}
	for _, n := range ac.nodes {
		var w []netip.Addr
		for _, p := range want[n.name] {
			w = append(w, byName[p].ip.Addr())
		}
		slices.SortFunc(w, netip.Addr.Compare)
		got, err := bgpPeers(n)
		if err != nil {
			return err
		}
		if !slices.Equal(got, w) {
			return fmt.Errorf("%s: established BGP sessions with %v; want %v", n.name, got, w)
		}
	}
	return nil
}

// fullMesh is every node peering once with every other.
func (ac *agentCluster) fullMesh() map[string][]string {
	want := map[string][]string{}
	for _, n := range ac.nodes {
		for _, p := range ac.nodes {
			if p != n {
				want[n.name] = append(want[n.name], p.name)
			}
		}
	}
	return want
}

// rrShape is the sessions with the named nodes as route reflectors: a
// plain node peers with the reflectors only, a reflector with every node.
func (ac *agentCluster) rrShape(rrs ...string) map[string][]string {
	want := map[string][]string{}
	for _, n := range ac.nodes {
		for _, p := range ac.nodes {
			if p != n && (slices.Contains(rrs, n.name) || slices.Contains(rrs, p.name)) {
				want[n.name] = append(want[n.name], p.name)
			}
		}
	}
	return want
}

// pollSessions waits until the sessions have the wanted shape.
func (ac *agentCluster) pollSessions(what string, deadline time.Duration, want map[string][]string) {
	ac.t.Helper()
	took := nstest.Poll(ac.t, deadline, what, func() error { return ac.checkSessions(want) })
	ac.t.Logf("%s after %s", what, took.Round(time.Millisecond))
}

// checkBGPRoutes compares one node's Wren routes with the API: a
// blackhole per own block, a scope-link /32 per local pod, and per other
// node's block a plain gateway route via that node's address on eth0
// (no encapsulation: not onlink, scope universe), and nothing else.
func (ac *agentCluster) checkBGPRoutes(n *agentNode) error {
	return ac.checkBGPRoutesIgnoring(n, netip.Prefix{}, netip.Addr{})
}

// checkBGPRoutesIgnoring is checkBGPRoutes for a node that may also hold
// routes to prefixes inside ignore (when valid: a peer's, which come and
// go with its sessions): every other Wren route must be what the API
// says, and the routes inside ignore must go via via.
func (ac *agentCluster) checkBGPRoutesIgnoring(n *agentNode, ignore netip.Prefix, via netip.Addr) error {
	blocks, _ := ac.clusterFacts()
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	got := map[string]netlink.Route{}
	for _, r := range rs {
		if p, err := netip.ParsePrefix(r.Dst.String()); err == nil && ignore.IsValid() && ignore.Overlaps(p) {
			if r.Gw.String() != via.String() {
				return fmt.Errorf("%s: route %s via %s; the prefixes inside %s can only go via %s", n.name, r.Dst, r.Gw, ignore, via)
			}
			continue
		}
		got[r.Dst.String()] = r
	}
	eth0, err := n.ns.NL.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
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
		if r, ok := got[p.ip.String()+"/32"]; !ok || r.Scope != netlink.SCOPE_LINK {
			return fmt.Errorf("%s: no scope-link route to pod %s", n.name, p.ip)
		}
	}
	for _, peer := range ac.nodes {
		if peer == n {
			continue
		}
		if len(blocks[peer.name]) == 0 {
			return fmt.Errorf("%s has no confirmed block yet", peer.name)
		}
		for _, b := range blocks[peer.name] {
			want++
			r, ok := got[b.String()]
			if !ok {
				return fmt.Errorf("%s: no route to %s's block %s", n.name, peer.name, b)
			}
			if r.Type != unix.RTN_UNICAST || r.Gw.String() != peer.ip.Addr().String() || r.LinkIndex != eth0.Attrs().Index ||
				r.Flags&unix.RTNH_F_ONLINK != 0 || r.Scope != netlink.SCOPE_UNIVERSE {
				return fmt.Errorf("%s: route %s = type %d via %s oif %d flags %#x scope %s; want unicast via %s dev eth0 (oif %d), not onlink, scope universe",
					n.name, b, r.Type, r.Gw, r.LinkIndex, r.Flags, r.Scope, peer.ip.Addr(), eth0.Attrs().Index)
			}
		}
	}
	if len(got) != want {
		var ds []string
		for d := range got {
			ds = append(ds, d)
		}
		slices.Sort(ds)
		return fmt.Errorf("%s: %d Wren routes %v; want %d", n.name, len(got), ds, want)
	}
	if _, err := n.ns.NL.LinkByName(tunnel.VXLANName); err == nil {
		return fmt.Errorf("%s: has %s although the pool never encapsulates", n.name, tunnel.VXLANName)
	}
	return nil
}

// assertBGPRoutes polls until every node's routes match the API.
func (ac *agentCluster) assertBGPRoutes(what string) {
	ac.t.Helper()
	ac.assertBGPRoutesIgnoring(what, netip.Prefix{}, netip.Addr{})
}

// assertBGPRoutesIgnoring polls until checkBGPRoutesIgnoring holds on
// every node.
func (ac *agentCluster) assertBGPRoutesIgnoring(what string, ignore netip.Prefix, via netip.Addr) {
	ac.t.Helper()
	nstest.Poll(ac.t, 15*time.Second, what, func() error {
		for _, n := range ac.nodes {
			if err := ac.checkBGPRoutesIgnoring(n, ignore, via); err != nil {
				return err
			}
		}
		return nil
	})
}

// setRR sets (value non-nil) or removes the route reflector label of the
// named nodes. A merge patch: the agents update the same Node objects.
func (ac *agentCluster) setRR(value *string, names ...string) {
	t := ac.t
	t.Helper()
	for _, name := range names {
		var n corev1.Node
		if err := ac.c.Get(context.Background(), keyOf(name), &n); err != nil {
			t.Fatal(err)
		}
		orig := n.DeepCopy()
		if value != nil {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[labelRR] = *value
		} else {
			delete(n.Labels, labelRR)
		}
		if err := ac.c.Patch(context.Background(), &n, client.MergeFrom(orig)); err != nil {
			t.Fatalf("label %s %s=%v: %v", name, labelRR, value, err)
		}
	}
}

// TestAgentBGPMesh: four nodes on one subnet, no encapsulation. Every
// agent peers with the three others (full mesh, one session per pair),
// learns their blocks over BGP and routes them natively via their node
// addresses on eth0; every pod reaches every other.
func TestAgentBGPMesh(t *testing.T) {
	ac := newBGPCluster(t)
	ac.pingMatrix(30 * time.Second)
	ac.assertBGPRoutes("BGP routes match the API on every node")
	ac.pollSessions("full mesh of BGP sessions", 10*time.Second, ac.fullMesh())
}

// pingDuring starts a ping of count packets every 10 ms from src to dst,
// waits until it flows, and returns a function that waits for its end and
// fails the test unless no packet was lost.
func (ac *agentCluster) pingDuring(src, dst *agentPod, count int, what string) (wait func()) {
	t := ac.t
	t.Helper()
	out := make(chan string, 1)
	// Cancelling kills the ping, by its PID, if the test ends first.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	go func() {
		o, err := src.ns.Run(ctx, "ping", "-i", "0.01", "-c", fmt.Sprint(count), "-W", "1", "-n", "-q", dst.ip.String())
		if err != nil {
			o += "\n" + err.Error()
		}
		out <- o
	}()
	rx := func() uint64 { return dst.ns.Link(t, "eth0").Attrs().Statistics.RxPackets }
	rx0 := rx()
	nstest.Poll(t, 5*time.Second, "ping reaching "+dst.name, func() error {
		if n := rx() - rx0; n < 20 {
			return fmt.Errorf("only %d packets so far", n)
		}
		return nil
	})
	return func() {
		t.Helper()
		select {
		case o := <-out:
			t.Fatalf("the ping %s -> %s ended before %s was over, so it does not cover it:\n%s", src.name, dst.name, what, o)
		default:
		}
		o := <-out
		if !strings.Contains(o, " 0% packet loss") {
			t.Errorf("ping %s -> %s lost packets %s:\n%s", src.name, dst.name, what, o)
		} else if i := strings.Index(o, fmt.Sprintf("%d packets", count)); i >= 0 {
			t.Logf("ping %s -> %s %s: %s", src.name, dst.name, what, strings.TrimSpace(o[i:]))
		}
	}
}

// noRouteDeleted fails the test for every Wren route a node's kernel
// deleted since the last call: re-shaping sessions changes neither blocks
// nor next hops (a reflector keeps the originator's), so with
// make-before-break no route ever goes away.
func (ac *agentCluster) noRouteDeleted(watches map[string]*routeWatch, what string) {
	ac.t.Helper()
	for _, n := range ac.nodes {
		for _, d := range watches[n.name].deletions(ac.t) {
			ac.t.Errorf("%s deleted its route %s %s", n.name, d, what)
		}
	}
}

// TestAgentBGPRouteReflector: while a pod on node-1 pings a pod on node-2
// every 10 ms, node-4 becomes a route reflector (node-1..3 then peer with
// it only) and stops being one (back to the full mesh); no packet may be
// lost and no node may delete a route. Then node-3 and node-4 become
// reflectors with one cluster ID, under the same ping: node-1 and node-2
// peer with both, the reflectors with each other, and every pod still
// reaches every other.
func TestAgentBGPRouteReflector(t *testing.T) {
	ac := newBGPCluster(t)
	ac.pingMatrix(30 * time.Second)
	ac.pollSessions("full mesh of BGP sessions", 10*time.Second, ac.fullMesh())
	ac.assertBGPRoutes("BGP routes match the API on every node")
	watches := map[string]*routeWatch{}
	for _, n := range ac.nodes {
		watches[n.name] = watchRoutes(t, n.ns)
	}
	src, dst := ac.nodes[0].pods[0], ac.nodes[1].pods[0]

	wait := ac.pingDuring(src, dst, 1500, "across node-4 becoming a reflector and back")
	empty := ""
	ac.setRR(&empty, "node-4")
	ac.pollSessions("sessions route-reflector shaped (node-4 the reflector)", 20*time.Second, ac.rrShape("node-4"))
	ac.assertBGPRoutes("BGP routes match the API with node-4 reflecting")
	ac.setRR(nil, "node-4")
	ac.pollSessions("back to the full mesh", 20*time.Second, ac.fullMesh())
	wait()
	ac.noRouteDeleted(watches, "while node-4 became a reflector and stopped")
	ac.assertBGPRoutes("BGP routes match the API after the full mesh is back")
	ac.pingMatrix(10 * time.Second)

	// Two reflectors in one cluster (same cluster ID).
	wait = ac.pingDuring(src, dst, 1500, "across node-3 and node-4 becoming reflectors")
	cid := "10.0.0.9"
	ac.setRR(&cid, "node-3", "node-4")
	ac.pollSessions("sessions shaped for reflectors node-3 and node-4", 20*time.Second, ac.rrShape("node-3", "node-4"))
	ac.assertBGPRoutes("BGP routes match the API with node-3 and node-4 reflecting")
	wait()
	ac.noRouteDeleted(watches, "while node-3 and node-4 became reflectors")
	ac.pingMatrix(10 * time.Second)
}
