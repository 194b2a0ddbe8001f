//go:build linux

package nstest_test

// BGP across agent restarts and peer loss, with the real wren-agent binary
// inside each node's namespace (as in agent_bgp_test.go):
//
//   - TestAgentBGPGracefulRestart: kill -9 one agent while pods ping across
//     nodes; no packet lost, no node deletes a Wren route during the
//     restart, the sessions come back, and the restarted node prunes only
//     what is really stale (the block of a node deleted while it was down).
//   - TestAgentBGPPeerLoss: an agent that stays down loses its routes
//     everywhere once the graceful-restart time (and the agent's hold for
//     routes the cluster still vouches for) has passed; bringing it back
//     restores them.
//
// Test addresses: nodes 198.18.0.11-14/24 on one switch (router
// 198.18.0.1), pods 10.244.0.0/16 in /26 blocks. Nothing is routed in the
// root namespace; every process the tests start is stopped by its PID.

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

// bgpRestartCluster is newBGPCluster with count nodes (node-1 ...,
// 198.18.0.11 ...) and the agents' processes returned by node name. setup,
// if set, runs after the pool is created and before any agent starts.
func bgpRestartCluster(t *testing.T, count int, setup func(ac *agentCluster)) (*agentCluster, map[string]*agentProc) {
	t.Helper()
	return binaryCluster(t, count, "10.244.0.0/16", setup, nil)
}

// binaryCluster is bgpRestartCluster with the pool's CIDR and, per node,
// extra wren-agent flags (flags may be nil).
func binaryCluster(t *testing.T, count int, cidr string, setup func(ac *agentCluster), flags func(node string) []string) (*agentCluster, map[string]*agentProc) {
	t.Helper()
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	if out, _ := exec.Command(bin, "--help").CombinedOutput(); !strings.Contains(string(out), "-bgp") {
		t.Fatalf("wren-agent has no --bgp flag: the BGP speaker is not wired into the agent yet\n%s", out)
	}
	ac.poolCIDR(v1alpha1.EncapNever, cidr) // vxlanMode and ipipMode Never
	if setup != nil {
		setup(ac)
	}
	procs := map[string]*agentProc{}
	for i := 1; i <= count; i++ {
		name := fmt.Sprintf("node-%d", i)
		var extra []string
		if flags != nil {
			extra = flags(name)
		}
		_, procs[name] = ac.addBinaryNodeInNS(name, ac.sw1, fmt.Sprintf("198.18.0.%d/24", 10+i), bin, extra...)
	}
	// Registered after the agents' cleanups, so it runs before them,
	// while every namespace and agent still exists.
	t.Cleanup(func() {
		if t.Failed() {
			ac.dumpBGPState()
		}
	})
	for _, n := range ac.nodes {
		ac.addBinaryPod(n, procs[n.name], n.name+"-web")
	}
	return ac, procs
}

// bgpRestartNode returns the cluster's node with that name.
func bgpRestartNode(t *testing.T, ac *agentCluster, name string) *agentNode {
	t.Helper()
	for _, n := range ac.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return nil
}

// bgpRestartGone follows, from its own goroutine and netlink handle, when
// the Wren routes to prefixes have all left a node's main table.
type bgpRestartGone struct {
	node string
	mu   sync.Mutex
	at   time.Time // zero while any is present
	err  error
}

// bgpRestartWatchGone polls n's kernel every 20 ms until none of prefixes
// has a Wren route any more, or the test ends.
func bgpRestartWatchGone(t *testing.T, n *agentNode, prefixes []netip.Prefix) *bgpRestartGone {
	t.Helper()
	g := &bgpRestartGone{node: n.name}
	h, err := netlink.NewHandleAt(n.ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	t.Cleanup(func() { close(done); <-exited; h.Close() })
	go func() {
		defer close(exited)
		for {
			rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
			now := time.Now()
			if err != nil {
				g.mu.Lock()
				g.err = err
				g.mu.Unlock()
				return
			}
			present := false
			for _, r := range rs {
				if r.Dst != nil && slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.String() == r.Dst.String() }) {
					present = true
				}
			}
			if !present {
				g.mu.Lock()
				g.at = now
				g.mu.Unlock()
				return
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return g
}

// when returns when the routes were first seen gone (zero: not yet).
func (g *bgpRestartGone) when() (time.Time, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.at, g.err
}

// bgpRestartWaitGone polls until every tracker saw its routes gone and
// returns the times by node.
func bgpRestartWaitGone(t *testing.T, what string, deadline time.Duration, gs ...*bgpRestartGone) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	nstest.Poll(t, deadline, what, func() error {
		for _, g := range gs {
			at, err := g.when()
			if err != nil {
				t.Fatalf("route poll on %s: %v", g.node, err)
			}
			if at.IsZero() {
				return fmt.Errorf("%s still has the route", g.node)
			}
			out[g.node] = at
		}
		return nil
	})
	return out
}

// bgpRestartSettle waits until every node's debug API (Status) shows
// exactly one established session with each other node, each up for at
// least settled: the agents have seen BGP converge (every wanted session
// up for 2 s), which closes the windows in which they keep withdrawn
// routes (start-up, and 30 s after the set of sessions changed). The
// tests kill agents only in that steady state.
func bgpRestartSettle(t *testing.T, ac *agentCluster, procs map[string]*agentProc, settled time.Duration) {
	t.Helper()
	// Every 100 ms: each Status is a call into GoBGP's management loop.
	took := nstest.PollEvery(t, 100*time.Millisecond, 60*time.Second, fmt.Sprintf("every BGP session established for %s", settled), func() error {
		for _, n := range ac.nodes {
			st, err := procs[n.name].bgpStatus()
			if err == nil {
				err = bgpRestartUpFor(st, len(ac.nodes)-1, settled)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
		}
		return nil
	})
	t.Logf("every BGP session established for %s after %s", settled, took.Round(time.Millisecond))
}

// bgpRestartUpFor returns an error unless st has count peers, all
// established for at least d.
func bgpRestartUpFor(st *debugv1.StatusReply, count int, d time.Duration) error {
	if len(st.GetPeers()) != count {
		return fmt.Errorf("%d peers; want %d", len(st.GetPeers()), count)
	}
	for _, p := range st.GetPeers() {
		since := nstest.PeerSince(p)
		if p.GetState() != "established" || since.IsZero() || time.Since(since) < d {
			return fmt.Errorf("peer %s %s since %s", p.GetAddress(), p.GetState(), since.Format(time.RFC3339Nano))
		}
	}
	return nil
}

// bgpRestartCheckDebug checks a node's debug API: Status has exactly one
// established session with each node in peers, and Routes a learned
// route to each of their confirmed blocks via the node's address.
func bgpRestartCheckDebug(ac *agentCluster, p *agentProc, self string, peers []*agentNode) error {
	v, err := p.bgpDebug()
	if err != nil {
		return err
	}
	blocks, _ := ac.clusterFacts()
	var got, want []string
	for _, pv := range v.Status.GetPeers() {
		got = append(got, pv.GetAddress()+" "+pv.GetState())
	}
	for _, n := range peers {
		want = append(want, n.ip.Addr().String()+" established")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s debug API: peers %v; want %v", self, got, want)
	}
	for _, n := range peers {
		if len(blocks[n.name]) == 0 {
			return fmt.Errorf("%s has no confirmed block", n.name)
		}
		for _, b := range blocks[n.name] {
			if l := b.String() + " via " + n.ip.Addr().String(); !slices.Contains(v.Learned, l) {
				return fmt.Errorf("%s debug API: learned %v; want %q among them", self, v.Learned, l)
			}
		}
	}
	return nil
}

// bgpRestartDeletions reads a node's route watch and splits the Wren
// route deletions into those of allowed prefixes and the others.
func bgpRestartDeletions(t *testing.T, w *routeWatch, allowed []netip.Prefix) (ok, bad []string) {
	t.Helper()
	for _, d := range w.deletions(t) {
		p, err := netip.ParsePrefix(strings.Fields(d)[0])
		if err == nil && slices.Contains(allowed, p) {
			ok = append(ok, d)
		} else {
			bad = append(bad, d)
		}
	}
	return ok, bad
}

// bgpRestartStop ends an agent with SIGTERM (kill -9 if it is still there
// after 10 s), by its PID, and waits until it is gone.
func bgpRestartStop(t *testing.T, p *agentProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM wren-agent pid %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("wren-agent pid %d still running 10s after SIGTERM; killing it", p.cmd.Process.Pid)
		p.kill9()
	}
}

// TestAgentBGPGracefulRestart: the acceptance point "kill -9 one agent
// while pods ping across nodes: zero packets lost, zero own routes deleted
// on any node during the restart, sessions back, and the restarted node
// prunes only what is really stale". While node-2's agent is down, node-4
// leaves the cluster (agent stopped, Node deleted): the route to its block
// that node-2's kernel still has from the previous run is the stale one,
// which the restarted agent must prune after BGP converges, keeping every
// other route.
func TestAgentBGPGracefulRestart(t *testing.T) {
	ac, procs := bgpRestartCluster(t, 4, nil)
	ac.pingMatrix(30 * time.Second)
	ac.pollSessions("full mesh of BGP sessions", 20*time.Second, ac.fullMesh())
	ac.assertBGPRoutes("BGP routes match the API on every node")
	bgpRestartSettle(t, ac, procs, 5*time.Second)

	n1, n2, n3, n4 := bgpRestartNode(t, ac, "node-1"), bgpRestartNode(t, ac, "node-2"), bgpRestartNode(t, ac, "node-3"), bgpRestartNode(t, ac, "node-4")
	p2, p4 := procs["node-2"], procs["node-4"]
	blocks, _ := ac.clusterFacts()
	stale := blocks["node-4"]
	if len(stale) == 0 {
		t.Fatal("node-4 has no confirmed block")
	}
	survivors := []*agentNode{n1, n2, n3}
	watches := map[string]*routeWatch{}
	for _, n := range survivors {
		watches[n.name] = watchRoutes(t, n.ns)
	}
	// node-2's pod is the destination of both pings: its block's route
	// on node-1 and node-3 is the one graceful restart keeps.
	wait1 := ac.pingDuring(n1.pods[0], n2.pods[0], 1500, "across node-2's kill -9 and restart")
	wait3 := ac.pingDuring(n3.pods[0], n2.pods[0], 1500, "across node-2's kill -9 and restart")

	oldPID := p2.cmd.Process.Pid
	killed := time.Now()
	p2.kill9()
	t.Logf("node-2's wren-agent pid %d killed (gone in %s)", oldPID, time.Since(killed).Round(time.Millisecond))

	// node-4 leaves while node-2 is down.
	pid4 := p4.cmd.Process.Pid
	bgpRestartStop(t, p4)
	if err := ac.c.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-4"}}); err != nil {
		t.Fatalf("delete Node node-4: %v", err)
	}
	ac.nodes = slices.DeleteFunc(ac.nodes, func(n *agentNode) bool { return n == n4 })
	t.Logf("node-4's wren-agent pid %d stopped and its Node deleted; its block %v is stale now", pid4, stale)
	// node-2's kernel still routes node-4's block (nobody runs there).
	if err := bgpRestartHasRoutes(n2, stale); err != nil {
		t.Fatalf("before node-2's restart: %v", err)
	}

	gone := map[string]*bgpRestartGone{}
	for _, n := range survivors {
		gone[n.name] = bgpRestartWatchGone(t, n, stale)
	}
	started := time.Now()
	p2.start()
	ready := p2.waitReady(60 * time.Second)
	p2.checkInNS()
	t.Logf("node-2's wren-agent pid %d ready %s after its start, %s after the SIGKILL",
		p2.cmd.Process.Pid, ready.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	wait1()
	wait3()

	nstest.Poll(t, 60*time.Second, "node-2's BGP sessions back (ss)", func() error { return ac.checkSessions(ac.fullMesh()) })
	nstest.Poll(t, 30*time.Second, "node-2's debug API: sessions established and routes learned", func() error {
		return bgpRestartCheckDebug(ac, p2, "node-2", []*agentNode{n1, n3})
	})
	st, err := p2.bgpStatus()
	if err != nil {
		t.Fatal(err)
	}
	var lastUp time.Time // when node-2's last session came up
	for _, pv := range st.GetPeers() {
		since := nstest.PeerSince(pv)
		t.Logf("node-2's session with %s established %s after its agent started", pv.GetAddress(), since.Sub(started).Round(time.Millisecond))
		if since.After(lastUp) {
			lastUp = since
		}
	}

	// node-4's block goes everywhere: node-2 prunes it once BGP has
	// converged; node-1 and node-3 drop it once the retired session to
	// node-4 is gone (at most 30 s of make-before-break).
	at := bgpRestartWaitGone(t, "node-4's block route gone on every remaining node", 120*time.Second,
		gone["node-2"], gone["node-1"], gone["node-3"])
	t.Logf("node-2 pruned node-4's block %v %s after its agent started (%s after it was ready)",
		stale, at["node-2"].Sub(started).Round(time.Millisecond), at["node-2"].Sub(started.Add(ready)).Round(time.Millisecond))
	if at["node-2"].Before(lastUp) {
		t.Errorf("node-2 pruned node-4's block %s before its last BGP session came up: it must keep the previous run's routes until BGP has converged",
			lastUp.Sub(at["node-2"]).Round(time.Millisecond))
	}
	for _, n := range []string{"node-1", "node-3"} {
		t.Logf("%s dropped node-4's block %s after node-2's agent started", n, at[n].Sub(started).Round(time.Millisecond))
	}
	ac.assertBGPRoutes("BGP routes on node-1..3 match the API (no route to node-4's block)")

	for _, n := range survivors {
		okDels, bad := bgpRestartDeletions(t, watches[n.name], stale)
		for _, d := range bad {
			t.Errorf("%s deleted its route %s across node-2's restart; only node-4's block %v may go", n.name, d, stale)
		}
		if len(okDels) == 0 {
			t.Errorf("%s: the route watch saw no deletion of node-4's block %v, yet the route is gone", n.name, stale)
		}
		t.Logf("%s deleted %v (node-4's block) and nothing else", n.name, okDels)
	}
	ac.pingMatrix(20 * time.Second)
	for _, l := range errorLines(t, p2.log) {
		t.Logf("node-2 wren-agent log: %s", l)
	}
	select {
	case <-p2.exited:
		t.Errorf("node-2's new wren-agent exited: %s", p2.cmd.ProcessState)
	default:
	}
}

// bgpRestartHasRoutes returns an error unless n's kernel has a Wren route
// to each prefix.
func bgpRestartHasRoutes(n *agentNode, prefixes []netip.Prefix) error {
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, p := range prefixes {
		if !slices.ContainsFunc(rs, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == p.String() }) {
			return fmt.Errorf("%s has no route to %s", n.name, p)
		}
	}
	return nil
}

// TestAgentBGPPeerLoss: with a graceful-restart time of 5 s, an agent
// that is killed and stays down loses its routes on every other node
// (after the restart time plus the agent's 15 s hold for routes the
// cluster still vouches for); starting it again restores them.
func TestAgentBGPPeerLoss(t *testing.T) {
	const restartTime = 5 * time.Second
	ac, procs := bgpRestartCluster(t, 3, func(ac *agentCluster) {
		cfg := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BGPConfigurationName},
			Spec: v1alpha1.BGPConfigurationSpec{NodeMeshMaxRestartTime: &metav1.Duration{Duration: restartTime}}}
		if err := ac.c.Create(context.Background(), cfg); err != nil {
			t.Fatalf("create BGPConfiguration default: %v", err)
		}
	})
	ac.pingMatrix(30 * time.Second)
	ac.pollSessions("full mesh of BGP sessions", 20*time.Second, ac.fullMesh())
	ac.assertBGPRoutes("BGP routes match the API on every node")
	bgpRestartSettle(t, ac, procs, 5*time.Second)

	n1, n2 := bgpRestartNode(t, ac, "node-1"), bgpRestartNode(t, ac, "node-2")
	p3 := procs["node-3"]
	blocks, _ := ac.clusterFacts()
	lost := blocks["node-3"]
	if len(lost) == 0 {
		t.Fatal("node-3 has no confirmed block")
	}
	watches := map[string]*routeWatch{}
	for _, n := range []*agentNode{n1, n2} {
		watches[n.name] = watchRoutes(t, n.ns)
	}
	g1, g2 := bgpRestartWatchGone(t, n1, lost), bgpRestartWatchGone(t, n2, lost)

	killed := time.Now()
	p3.kill9()
	at := bgpRestartWaitGone(t, "node-3's block route gone on node-1 and node-2", 60*time.Second, g1, g2)
	for _, n := range []string{"node-1", "node-2"} {
		d := at[n].Sub(killed)
		t.Logf("%s removed node-3's block %v %s after the kill -9 (restart time %s + hold 15 s expected)", n, lost, d.Round(time.Millisecond), restartTime)
		if d < restartTime {
			t.Errorf("%s removed node-3's block %s after the kill -9: before the graceful-restart time %s ran out", n, d.Round(time.Millisecond), restartTime)
		}
	}
	for _, n := range []*agentNode{n1, n2} {
		okDels, bad := bgpRestartDeletions(t, watches[n.name], lost)
		for _, d := range bad {
			t.Errorf("%s deleted its route %s while node-3 was down; only node-3's block %v may go", n.name, d, lost)
		}
		t.Logf("%s deleted %v while node-3 was down", n.name, okDels)
	}
	// node-1 and node-2 still reach each other.
	if err := n1.pods[0].ns.Ping(n2.pods[0].ip, 3); err != nil {
		t.Errorf("node-1's pod -> node-2's pod while node-3 is down: %v", err)
	}

	started := time.Now()
	p3.start()
	ready := p3.waitReady(60 * time.Second)
	p3.checkInNS()
	t.Logf("node-3's wren-agent pid %d ready %s after its start", p3.cmd.Process.Pid, ready.Round(time.Millisecond))
	ac.pollSessions("full mesh of BGP sessions after node-3's restart", 60*time.Second, ac.fullMesh())
	nstest.Poll(t, 60*time.Second, "node-3's block routed again on node-1 and node-2", func() error {
		for _, n := range []*agentNode{n1, n2} {
			if err := bgpRestartHasRoutes(n, lost); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("node-3's block %v back on node-1 and node-2 %s after its agent started", lost, time.Since(started).Round(time.Millisecond))
	ac.assertBGPRoutes("BGP routes match the API on every node after node-3's restart")
	ac.pingMatrix(20 * time.Second)
	for _, n := range []*agentNode{n1, n2} {
		for _, d := range watches[n.name].deletions(t) {
			t.Errorf("%s deleted its route %s when node-3 came back", n.name, d)
		}
	}
}
