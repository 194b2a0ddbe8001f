//go:build linux

package nstest_test

// Interop with BIRD 2 as a top-of-rack router: three nodes, each running
// the wren-agent binary inside its namespace (BGP on, full mesh), peer
// over eBGP with TCP MD5 (password from a Secret) with a BIRD on their
// subnet, which originates one prefix inside the pool and one outside.
//
// Test addresses: a switch of its own, 198.18.2.0/24: the TOR (BIRD, AS
// 65001) 198.18.2.1, the nodes 198.18.2.11-13 (AS 64512, default route
// via the TOR), a second BIRD (AS 65002) 198.18.2.2 for the wrong
// password. Pods 10.244.0.0/16 in /26 blocks; the TOR originates
// 10.244.250.0/24 (inside the pool) and 192.168.77.0/24 (outside every
// pool), both blackholes in BIRD's own table only. The router namespace
// newAgentCluster attaches to its sw1 is not on this switch. Nothing is
// routed in the root namespace.

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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

const (
	torAS       = 65001
	torNodeAS   = 64512 // the default: no BGPConfiguration, no annotation
	torPassword = "wren-tor-md5"
	torSecret   = "bgp-secrets"
	torSecretNS = "kube-system"
)

var (
	torAddr     = netip.MustParsePrefix("198.18.2.1/24")
	torInPool   = netip.MustParsePrefix("10.244.250.0/24")
	torOutside  = netip.MustParsePrefix("192.168.77.0/24")
	torBadAddr  = netip.MustParsePrefix("198.18.2.2/24")
	torBadAS    = uint32(65002)
	torBadPwTOR = "wren-tor-md5-bird-side"
	torBadPwAPI = "wren-tor-md5-node-side"
)

// torCluster is the cluster of newTORCluster: the agents' processes by
// node name and the TOR's BIRD.
type torCluster struct {
	*agentCluster
	sw    *nstest.Switch
	procs map[string]*agentProc
	tor   *nstest.Bird
	conf  nstest.BirdConf
}

// torProto is the name of the TOR's BGP protocol towards a node.
func torProto(n *agentNode) string { return strings.ReplaceAll(n.name, "-", "_") }

// newTORCluster builds the switch, the TOR namespace with BIRD (sessions
// to every node configured, none up: there is no BGPPeer yet), the pool
// (no encapsulation), three binary agents in their namespaces with one pod
// each, and the Secret with the TOR's password.
func newTORCluster(t *testing.T) *torCluster {
	t.Helper()
	nstest.RequireBird(t)
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	tc := &torCluster{agentCluster: ac, sw: nstest.NewSwitch(t, "torsw"), procs: map[string]*agentProc{}}

	torNS := nstest.New(t, "tor")
	tc.sw.Attach(t, torNS, "eth0", torAddr.String(), 0)

	ac.pool(v1alpha1.EncapNever) // vxlanMode and ipipMode Never
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node-%d", i)
		// newNode's default route goes via 198.18.2.1: the TOR.
		_, tc.procs[name] = ac.addBinaryNodeInNS(name, tc.sw, fmt.Sprintf("198.18.2.%d/24", 10+i), bin,
			"--namespace", torSecretNS)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ac.dumpBGPState()
			for _, n := range ac.nodes {
				t.Logf("%s debug API:\n%s", n.name, tc.debugBGPRaw(n))
			}
		}
	})
	for _, n := range ac.nodes {
		ac.addBinaryPod(n, tc.procs[n.name], n.name+"-web")
	}

	tc.conf = nstest.BirdConf{RouterID: torAddr.Addr(), Originate: []netip.Prefix{torInPool, torOutside}}
	for _, n := range ac.nodes {
		tc.conf.BGP = append(tc.conf.BGP, nstest.BirdBGP{Name: torProto(n), LocalAS: torAS, Local: torAddr.Addr(),
			Neighbor: n.ip.Addr(), PeerAS: torNodeAS, Password: torPassword})
	}
	tc.tor = nstest.StartBird(t, torNS, tc.conf.String())

	ctx := context.Background()
	if err := ac.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: torSecretNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: torSecret, Namespace: torSecretNS},
		StringData: map[string]string{"tor": torPassword, "tor-bad": torBadPwAPI}}
	if err := ac.c.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	return tc
}

// addPeer creates a global BGPPeer (every node) with the password in key
// of the Secret.
func (tc *torCluster) addPeer(name string, ip netip.Addr, as uint32, key string) {
	t := tc.t
	t.Helper()
	asn := v1alpha1.ASNumber(as)
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: ip.String(), ASNumber: &asn,
		Password: &v1alpha1.BGPPassword{SecretKeyRef: v1alpha1.SecretKeyRef{Name: torSecret, Key: key}}}}
	if err := tc.c.Create(context.Background(), p); err != nil {
		t.Fatalf("create BGPPeer %s: %v", name, err)
	}
}

// debugBGPRaw is a node's Status and Routes from its debug API, as
// JSON, for the log of a failed test.
func (tc *torCluster) debugBGPRaw(n *agentNode) string {
	v, err := tc.procs[n.name].bgpDebug()
	if err != nil {
		return err.Error()
	}
	return v.String()
}

// torPeer returns the agent's session to addr as its debug API's Status
// shows it; rejected is received minus accepted by the import policy.
func torPeer(st *debugv1.StatusReply, addr netip.Addr) (state string, since time.Time, received, rejected uint64, ok bool) {
	p, ok := nstest.DebugPeer(st, addr.String())
	return p.GetState(), nstest.PeerSince(p), p.GetReceived(), p.GetRejected(), ok
}

// torEstablished is nil when BIRD's protocol to every node and every
// node's session to the TOR are established.
func (tc *torCluster) torEstablished() error {
	ps := tc.tor.Protocols(tc.t)
	for _, n := range tc.nodes {
		if s := ps[torProto(n)]; s != "Established" {
			return fmt.Errorf("BIRD's protocol %s (to %s) is %q", torProto(n), n.ip.Addr(), s)
		}
	}
	for _, n := range tc.nodes {
		st, err := tc.procs[n.name].bgpStatus()
		if err != nil {
			return err
		}
		if s, _, _, _, ok := torPeer(st, torAddr.Addr()); !ok || s != "established" {
			return fmt.Errorf("%s's session to the TOR %s is %q (listed: %v)", n.name, torAddr.Addr(), s, ok)
		}
	}
	return nil
}

// birdLearnsBlocks is nil when BIRD's BGP routes are exactly the nodes'
// confirmed blocks, each once, from the owning node's protocol with the
// owner's address as next hop and AS path 64512.
func (tc *torCluster) birdLearnsBlocks() error {
	blocks, _ := tc.clusterFacts()
	rs := tc.tor.Routes(tc.t, "master4")
	want := map[netip.Prefix]bool{}
	for _, n := range tc.nodes {
		if len(blocks[n.name]) == 0 {
			return fmt.Errorf("%s has no confirmed block yet", n.name)
		}
		for _, b := range blocks[n.name] {
			want[b] = true
			got := rs[b]
			if len(got) != 1 {
				return fmt.Errorf("BIRD has %d routes for %s's block %s; want exactly 1 (from %s): %+v", len(got), n.name, b, torProto(n), got)
			}
			r := got[0]
			if !r.Primary || r.Protocol != torProto(n) || !slices.Equal(r.Vias(), []netip.Addr{n.ip.Addr()}) ||
				r.Attrs["BGP.next_hop"] != n.ip.Addr().String() || r.Attrs["BGP.as_path"] != fmt.Sprint(torNodeAS) {
				return fmt.Errorf("BIRD's route for %s's block %s: protocol %s vias %v next_hop %q as_path %q primary %v; want %s via %s, as_path %d",
					n.name, b, r.Protocol, r.Vias(), r.Attrs["BGP.next_hop"], r.Attrs["BGP.as_path"], r.Primary, torProto(n), n.ip.Addr(), torNodeAS)
			}
		}
	}
	for p, rr := range rs {
		for _, r := range rr {
			if r.Protocol != "static4" && !want[p] {
				return fmt.Errorf("BIRD learned %s from %s, which is no node's confirmed block: %+v", p, r.Protocol, r)
			}
		}
	}
	return nil
}

// checkTORRoutes is nil when n's kernel has Wren's route to the TOR's
// in-pool prefix via the TOR on eth0, routes to the other nodes' blocks
// via their addresses (the mesh), and no route at all for the prefix
// outside the pool.
func (tc *torCluster) checkTORRoutes(n *agentNode) error {
	blocks, _ := tc.clusterFacts()
	eth0, err := n.ns.NL.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	all, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	got := map[string]netlink.Route{}
	for _, r := range all {
		if r.Dst == nil {
			continue
		}
		if d, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			if ones >= torOutside.Bits() && torOutside.Contains(d.Unmap()) {
				return fmt.Errorf("%s: kernel route for %s although it is outside every pool: %s (proto %d, table %d)", n.name, torOutside, r, r.Protocol, r.Table)
			}
		}
		if r.Table == unix.RT_TABLE_MAIN && r.Protocol == routes.Protocol {
			got[r.Dst.String()] = r
		}
	}
	r, ok := got[torInPool.String()]
	if !ok {
		return fmt.Errorf("%s: no Wren route for the TOR's %s", n.name, torInPool)
	}
	if r.Type != unix.RTN_UNICAST || r.Gw.String() != torAddr.Addr().String() || r.LinkIndex != eth0.Attrs().Index ||
		r.Flags&unix.RTNH_F_ONLINK != 0 || r.Scope != netlink.SCOPE_UNIVERSE {
		return fmt.Errorf("%s: route %s = type %d via %s oif %d flags %#x scope %s; want unicast via %s dev eth0 (oif %d) proto %d",
			n.name, torInPool, r.Type, r.Gw, r.LinkIndex, r.Flags, r.Scope, torAddr.Addr(), eth0.Attrs().Index, routes.Protocol)
	}
	for _, peer := range tc.nodes {
		if peer == n {
			continue
		}
		for _, b := range blocks[peer.name] {
			r, ok := got[b.String()]
			if !ok {
				return fmt.Errorf("%s: no route to %s's block %s", n.name, peer.name, b)
			}
			if r.Type != unix.RTN_UNICAST || r.Gw.String() != peer.ip.Addr().String() || r.LinkIndex != eth0.Attrs().Index {
				return fmt.Errorf("%s: route %s = type %d via %s oif %d; want via %s (%s) dev eth0", n.name, b, r.Type, r.Gw, r.LinkIndex, peer.ip.Addr(), peer.name)
			}
		}
	}
	return nil
}

// checkDebugTOR is nil when n's debug API shows the TOR session
// established with one prefix rejected (Status), has learned the
// in-pool prefix via the TOR, and has not learned the one outside every
// pool (Routes).
func (tc *torCluster) checkDebugTOR(n *agentNode) error {
	v, err := tc.procs[n.name].bgpDebug()
	if err != nil {
		return err
	}
	if v.Status.GetRouterId() != n.ip.Addr().String() || v.Status.GetAsNumber() != torNodeAS {
		return fmt.Errorf("%s debug API: router ID %s AS %d; want %s AS %d", n.name, v.Status.GetRouterId(), v.Status.GetAsNumber(), n.ip.Addr(), torNodeAS)
	}
	s, _, recv, rej, ok := torPeer(v.Status, torAddr.Addr())
	if !ok || s != "established" {
		return fmt.Errorf("%s debug API: TOR session %q (listed %v)", n.name, s, ok)
	}
	// The TOR also passes each node the other nodes' blocks, with the
	// node's own AS in the path: those are dropped before the import
	// policy and count as received, not rejected (docs/bgp.md). The policy
	// refuses exactly one prefix, the one outside every pool.
	if rej != 1 || recv < 2 {
		return fmt.Errorf("%s debug API: TOR sent %d prefixes, %d rejected; want >= 2 received and 1 rejected by the import policy (%s)", n.name, recv, rej, torOutside)
	}
	if want := torInPool.String() + " via " + torAddr.Addr().String(); !slices.Contains(v.Learned, want) {
		return fmt.Errorf("%s debug API: learned %v lacks %q", n.name, v.Learned, want)
	}
	if v.HasLearned(torOutside.String()) {
		return fmt.Errorf("%s debug API: learned %v, with %s although it is outside every pool", n.name, v.Learned, torOutside)
	}
	return nil
}

// TestAgentTORInterop: the "Interop with BIRD 2" acceptance. Three
// nodes peer over eBGP with MD5 (password from a Secret) with a BIRD TOR
// through one global BGPPeer; BIRD learns every node's blocks with the
// node as next hop; the nodes install the TOR's in-pool prefix via the TOR
// (proto wren) and reject, and count, the prefix outside every pool; pods
// keep reaching each other over the mesh routes.
func TestAgentTORInterop(t *testing.T) {
	tc := newTORCluster(t)
	tc.pingMatrix(30 * time.Second)

	start := time.Now()
	tc.addPeer("tor", torAddr.Addr(), torAS, "tor")
	nstest.Poll(t, 45*time.Second, "eBGP sessions TOR <-> every node established (BIRD and the debug API)", tc.torEstablished)
	t.Logf("TOR sessions established %s after the BGPPeer was created", time.Since(start).Round(time.Millisecond))

	nstest.Poll(t, 20*time.Second, "BIRD learns every node's blocks via the node", tc.birdLearnsBlocks)
	t.Logf("BIRD has every node's blocks %s after the BGPPeer", time.Since(start).Round(time.Millisecond))

	nstest.Poll(t, 20*time.Second, "nodes route the TOR's in-pool prefix via the TOR, not the outside one", func() error {
		for _, n := range tc.nodes {
			if err := tc.checkTORRoutes(n); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("every node routes %s via the TOR %s after the BGPPeer", time.Since(start).Round(time.Millisecond), torInPool)

	nstest.Poll(t, 20*time.Second, "debug API: TOR established, rejections counted", func() error {
		for _, n := range tc.nodes {
			if err := tc.checkDebugTOR(n); err != nil {
				return err
			}
		}
		return nil
	})
	for _, n := range tc.nodes {
		v, _ := tc.procs[n.name].bgpDebug()
		_, _, recv, rej, _ := torPeer(v.Status, torAddr.Addr())
		t.Logf("%s: TOR session: received %d, rejected %d; learned %v", n.name, recv, rej, v.Learned)
	}

	// BIRD's own table only: the TOR namespace's kernel never got routes.
	if out := tc.tor.NS.MustRun(t, "ip", "route", "show", "proto", "bird"); strings.TrimSpace(out) != "" {
		t.Errorf("BIRD installed kernel routes in the TOR namespace: %s", out)
	}
	// The mesh still carries pod traffic alongside the TOR sessions.
	tc.pingMatrix(15 * time.Second)
	tc.pollSessionsTOR()
}

// pollSessionsTOR checks, with ss, that every node has exactly one BGP
// TCP connection to each other node and one to the TOR.
func (tc *torCluster) pollSessionsTOR() {
	t := tc.t
	t.Helper()
	nstest.Poll(t, 15*time.Second, "BGP TCP connections: full mesh plus one to the TOR", func() error {
		for _, n := range tc.nodes {
			want := []netip.Addr{torAddr.Addr()}
			for _, p := range tc.nodes {
				if p != n {
					want = append(want, p.ip.Addr())
				}
			}
			slices.SortFunc(want, netip.Addr.Compare)
			got, err := bgpPeers(n)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s: established BGP connections with %v; want %v", n.name, got, want)
			}
		}
		return nil
	})
}

// TestAgentTORWrongPassword: with the TOR session up, a second global
// BGPPeer names a second BIRD whose password differs from the Secret's.
// For the whole window neither BIRD nor any agent reports that session
// Established, while the TOR sessions stay up without a reset.
func TestAgentTORWrongPassword(t *testing.T) {
	tc := newTORCluster(t)
	tc.addPeer("tor", torAddr.Addr(), torAS, "tor")
	start := time.Now()
	nstest.Poll(t, 45*time.Second, "eBGP sessions TOR <-> every node established", tc.torEstablished)
	t.Logf("TOR sessions established %s after the BGPPeer", time.Since(start).Round(time.Millisecond))

	badNS := nstest.New(t, "tor2")
	tc.sw.Attach(t, badNS, "eth0", torBadAddr.String(), 0)
	conf := nstest.BirdConf{RouterID: torBadAddr.Addr(), Originate: []netip.Prefix{netip.MustParsePrefix("10.244.251.0/24")}}
	for _, n := range tc.nodes {
		conf.BGP = append(conf.BGP, nstest.BirdBGP{Name: torProto(n), LocalAS: torBadAS, Local: torBadAddr.Addr(),
			Neighbor: n.ip.Addr(), PeerAS: torNodeAS, Password: torBadPwTOR})
	}
	bad := nstest.StartBird(t, badNS, conf.String())

	// The good sessions' start times, to prove they do not reset.
	since := map[string]time.Time{}
	for _, n := range tc.nodes {
		st, err := tc.procs[n.name].bgpStatus()
		if err != nil {
			t.Fatal(err)
		}
		_, s, _, _, _ := torPeer(st, torAddr.Addr())
		since[n.name] = s
	}

	tc.addPeer("tor-bad", torBadAddr.Addr(), torBadAS, "tor-bad")
	// Wait until every agent has configured the peer (so the window
	// below covers attempts, not just the agent not knowing the peer).
	nstest.Poll(t, 20*time.Second, "every agent lists the second peer", func() error {
		for _, n := range tc.nodes {
			st, err := tc.procs[n.name].bgpStatus()
			if err != nil {
				return err
			}
			if _, _, _, _, ok := torPeer(st, torBadAddr.Addr()); !ok {
				return fmt.Errorf("%s's debug API lists no session to %s yet", n.name, torBadAddr.Addr())
			}
		}
		return nil
	})

	const window = 8 * time.Second
	seen := map[string]map[string]int{} // "bird/node-1" or "agent/node-1" -> state -> samples
	note := func(who, state string) {
		if seen[who] == nil {
			seen[who] = map[string]int{}
		}
		seen[who][state]++
	}
	end := time.Now().Add(window)
	samples := 0
	for time.Now().Before(end) {
		samples++
		bps := bad.Protocols(t)
		gps := tc.tor.Protocols(t)
		for _, n := range tc.nodes {
			note("bird/"+n.name, bps[torProto(n)])
			if s := bps[torProto(n)]; s == "Established" {
				t.Fatalf("BIRD with the wrong password: protocol %s (to %s) Established after %s", torProto(n), n.name, window-time.Until(end))
			}
			if s := gps[torProto(n)]; s != "Established" {
				t.Fatalf("the TOR's (right password) protocol to %s went %q while the wrong peer was tried", n.name, s)
			}
			st, err := tc.procs[n.name].bgpStatus()
			if err != nil {
				t.Fatal(err)
			}
			bs, _, _, _, ok := torPeer(st, torBadAddr.Addr())
			note("agent/"+n.name, bs)
			if !ok || bs == "established" {
				t.Fatalf("%s debug API: session to the wrong-password peer %s is %q (listed %v)", n.name, torBadAddr.Addr(), bs, ok)
			}
			gs, gsince, _, _, _ := torPeer(st, torAddr.Addr())
			if gs != "established" || !gsince.Equal(since[n.name]) {
				t.Fatalf("%s debug API: TOR session %q since %s; want established since %s (no reset)", n.name, gs, gsince, since[n.name])
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%d samples over %s; states seen: %v", samples, window, seen)

	// The wrong peer's routes never arrived; the TOR's still do.
	for _, n := range tc.nodes {
		if err := tc.checkTORRoutes(n); err != nil {
			t.Error(err)
		}
		v, err := tc.procs[n.name].bgpDebug()
		if err != nil {
			t.Fatal(err)
		}
		if v.HasLearned("10.244.251.0/24") {
			t.Errorf("%s learned %v, with 10.244.251.0/24 from the peer with the wrong password", n.name, v.Learned)
		}
	}
	if out, err := badNS.Run(context.Background(), "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("the wrong-password BIRD has established TCP connections (%v): %s", err, out)
	}
	tc.pingMatrix(15 * time.Second)
}
