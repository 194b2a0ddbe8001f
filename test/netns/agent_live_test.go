//go:build linux

package nstest_test

// Live changes of the node's AS, the BGP listen port and the session
// timers (issue 11 point 3), with the real wren-agent binary in each of
// three nodes' namespaces (binaryCluster): nothing restarts, every session
// re-forms, and under a 10 ms ping between pods on different nodes no
// packet is lost and no node deletes a Wren route at any time (route
// watches on every node record every deletion).
//
// Test addresses: nodes 198.18.0.11-13/24 on one switch, pods
// 10.244.0.0/16 in /26 blocks. Nothing is routed in the root namespace.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// liveCluster is three BGP nodes with node-1 serving GoBGP's API (for the
// gobgp CLI) and a BGPConfiguration default to edit, settled: every
// session up, every route in place.
func liveCluster(t *testing.T) (*agentCluster, map[string]*agentProc) {
	t.Helper()
	ac, procs := binaryCluster(t, 3, "10.244.0.0/16", func(ac *agentCluster) {
		cfg := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BGPConfigurationName}}
		if err := ac.c.Create(context.Background(), cfg); err != nil {
			t.Fatalf("create BGPConfiguration default: %v", err)
		}
	}, func(node string) []string {
		if node == "node-1" {
			return []string{"--gobgp-api", "127.0.0.1:50051"}
		}
		return nil
	})
	ac.pingMatrix(30 * time.Second)
	ac.pollSessions("full mesh of BGP sessions", 20*time.Second, ac.fullMesh())
	ac.assertBGPRoutes("BGP routes match the API on every node")
	bgpRestartSettle(t, ac, procs, 2*time.Second)
	return ac, procs
}

// editBGPConfig changes the BGPConfiguration default with a merge patch.
func (ac *agentCluster) editBGPConfig(edit func(*v1alpha1.BGPConfigurationSpec)) {
	t := ac.t
	t.Helper()
	var cfg v1alpha1.BGPConfiguration
	if err := ac.c.Get(context.Background(), client.ObjectKey{Name: v1alpha1.BGPConfigurationName}, &cfg); err != nil {
		t.Fatal(err)
	}
	orig := cfg.DeepCopy()
	edit(&cfg.Spec)
	if err := ac.c.Patch(context.Background(), &cfg, client.MergeFrom(orig)); err != nil {
		t.Fatalf("patch BGPConfiguration default: %v", err)
	}
}

// setNodeAS sets (as > 0) or removes the wren.network/as-number
// annotation of a node.
func (ac *agentCluster) setNodeAS(name string, as uint32) {
	t := ac.t
	t.Helper()
	var n corev1.Node
	if err := ac.c.Get(context.Background(), keyOf(name), &n); err != nil {
		t.Fatal(err)
	}
	orig := n.DeepCopy()
	if as > 0 {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[wcluster.AnnotationASNumber] = fmt.Sprint(as)
	} else {
		delete(n.Annotations, wcluster.AnnotationASNumber)
	}
	if err := ac.c.Patch(context.Background(), &n, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("annotate %s %s=%d: %v", name, wcluster.AnnotationASNumber, as, err)
	}
}

// liveWatch is what every step of the test watches: a Wren route watch
// on every node and a 10 ms ping from a pod on each node to a pod on the
// next one.
type liveWatch struct {
	ac      *agentCluster
	watches map[string]*routeWatch
	pingers []*nstest.Pinger
}

func (ac *agentCluster) startLiveWatch() *liveWatch {
	t := ac.t
	t.Helper()
	w := &liveWatch{ac: ac, watches: map[string]*routeWatch{}}
	for _, n := range ac.nodes {
		w.watches[n.name] = watchRoutes(t, n.ns)
	}
	for i, n := range ac.nodes {
		dst := ac.nodes[(i+1)%len(ac.nodes)].pods[0]
		p, err := nstest.StartPinger(n.pods[0].ns.Handle, dst.ip, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop() })
		w.pingers = append(w.pingers, p)
	}
	// The pings flow before anything changes.
	nstest.Poll(t, 5*time.Second, "pings answered", func() error {
		for _, p := range w.pingers {
			if p.Received() < 10 {
				return fmt.Errorf("%s", p.Stats())
			}
		}
		return nil
	})
	return w
}

// check stops the pings and fails the test for every lost probe and every
// Wren route a node deleted while the watch ran.
func (w *liveWatch) check(what string) {
	t := w.ac.t
	t.Helper()
	for _, p := range w.pingers {
		st := p.Stop()
		if len(st.Lost) > 0 || st.Received == 0 {
			t.Errorf("ping to %s %s: %s (lost sequence numbers %v)", st.Dst, what, st, st.Lost)
		} else {
			t.Logf("ping to %s %s: %s", st.Dst, what, st)
		}
	}
	w.ac.noRouteDeleted(w.watches, what)
}

// waitLive polls every node's debug API until its Status shows the AS
// wantAS(node) and a session with each other node, from that node's AS
// wantAS(peer), established and past End-of-RIB; a session for which
// reformed(node, peer) holds must be established since after: it re-formed
// after the change, under the new configuration.
func (ac *agentCluster) waitLive(procs map[string]*agentProc, what string, after time.Time, reformed func(node, peer string) bool, wantAS func(node string) uint32) {
	t := ac.t
	t.Helper()
	byIP := map[string]string{}
	for _, n := range ac.nodes {
		byIP[n.ip.Addr().String()] = n.name
	}
	took := nstest.PollEvery(t, 100*time.Millisecond, 60*time.Second, what, func() error {
		for _, n := range ac.nodes {
			st, err := procs[n.name].bgpStatus()
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if st.GetAsNumber() != wantAS(n.name) {
				return fmt.Errorf("%s: status AS %d; want %d", n.name, st.GetAsNumber(), wantAS(n.name))
			}
			if len(st.GetPeers()) != len(ac.nodes)-1 {
				return fmt.Errorf("%s: %d peers", n.name, len(st.GetPeers()))
			}
			for _, p := range st.GetPeers() {
				peer := byIP[p.GetAddress()]
				if p.GetState() != "established" || reformed(n.name, peer) && !nstest.PeerSince(p).After(after) || !p.GetEndOfRib() {
					return fmt.Errorf("%s: peer %s %s since %s, End-of-RIB %t", n.name, peer, p.GetState(), nstest.PeerSince(p).Format(time.RFC3339Nano), p.GetEndOfRib())
				}
				if p.GetAsNumber() != wantAS(peer) {
					return fmt.Errorf("%s: peer %s AS %d; want %d", n.name, peer, p.GetAsNumber(), wantAS(peer))
				}
			}
		}
		return nil
	})
	t.Logf("%s after %s", what, took.Round(time.Millisecond))
}

// holdSettled waits until no node holds a route any more (the new
// start-up windows closed) and every route matches the API: the change is
// over, and what the route watches saw covers it all.
func (ac *agentCluster) holdSettled(procs map[string]*agentProc, what string) {
	t := ac.t
	t.Helper()
	nstest.Poll(t, 60*time.Second, what, func() error {
		for _, n := range ac.nodes {
			v, err := procs[n.name].bgpDebug()
			if err != nil {
				return err
			}
			var held []string
			for _, r := range v.Routes.GetRoutes() {
				if r.GetHeld() {
					held = append(held, r.GetPrefix())
				}
			}
			if len(held) > 0 {
				return fmt.Errorf("%s still holds %v", n.name, held)
			}
		}
		return nil
	})
	ac.assertBGPRoutes(what)
}

// logsSay fails the test unless the node's agent logged a line containing
// every part.
func logsSay(t *testing.T, p *agentProc, parts ...string) {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(l, s)
		}
		if all {
			t.Logf("log: %s", l)
			return
		}
	}
	t.Errorf("no log line of %s has %q", p.log, parts)
}

// gobgpHold reads, with the gobgp CLI inside node-1's namespace, the
// negotiated hold time and keepalive interval of each of its sessions.
func gobgpHold(t *testing.T, cli string, n *agentNode) (map[string][2]uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.ns.Run(ctx, cli, "-u", "127.0.0.1", "-p", "50051", "neighbor", "-j")
	if err != nil {
		return nil, fmt.Errorf("gobgp neighbor -j: %w\n%s", err, out)
	}
	var neighbors []struct {
		Conf struct {
			NeighborAddress string `json:"neighbor_address"`
		} `json:"conf"`
		Timers struct {
			State struct {
				NegotiatedHoldTime uint64 `json:"negotiated_hold_time"`
				KeepaliveInterval  uint64 `json:"keepalive_interval"`
			} `json:"state"`
		} `json:"timers"`
	}
	if err := json.Unmarshal([]byte(out), &neighbors); err != nil {
		return nil, fmt.Errorf("gobgp neighbor -j: %w\n%s", err, out)
	}
	res := map[string][2]uint64{}
	for _, nb := range neighbors {
		res[nb.Conf.NeighborAddress] = [2]uint64{nb.Timers.State.NegotiatedHoldTime, nb.Timers.State.KeepaliveInterval}
	}
	return res, nil
}

// TestAgentBGPLiveChanges: on a running 3-node cluster, one after the
// other, each under a 10 ms ping between pods on different nodes and a
// watch of every node's Wren routes:
//
//  1. the BGPConfiguration's asNumber 64512 → 64700: every speaker restarts
//     its global part in place, every session re-forms in AS 64700;
//  2. node-2's wren.network/as-number annotation 64800: node-2 alone
//     restarts, its sessions re-form as eBGP (64800 ↔ 64700);
//  3. listenPort 179 → 1790: the sessions re-form on port 1790;
//  4. keepaliveTime 10s / holdTime 30s: the sessions re-form with them,
//     as the gobgp CLI shows (negotiated hold 30 s, keepalive 10 s).
//
// No packet is lost and no route is deleted at any time; each agent logs
// the change (old → new) and its debug Status shows the new AS. Without
// the live change (bgp_live.go's followBGPGlobal returning early), step 1
// fails: the agents keep speaking AS 64512 while their peers' configs
// expect 64700, and no session comes back.
func TestAgentBGPLiveChanges(t *testing.T) {
	cli := nstest.RequireGoBGPCLI(t)
	ac, procs := liveCluster(t)
	n1, n2 := ac.nodes[0], ac.nodes[1]
	all := func(string, string) bool { return true }

	// 1. The cluster's AS.
	as := map[string]uint32{"node-1": 64700, "node-2": 64700, "node-3": 64700}
	w := ac.startLiveWatch()
	changed := time.Now()
	ac.editBGPConfig(func(s *v1alpha1.BGPConfigurationSpec) { a := v1alpha1.ASNumber(64700); s.ASNumber = &a })
	ac.waitLive(procs, "every session re-formed in AS 64700", changed, all, func(n string) uint32 { return as[n] })
	ac.holdSettled(procs, "routes settled after the AS change")
	w.check("across the cluster AS change 64512 → 64700")
	for _, n := range ac.nodes {
		logsSay(t, procs[n.name], "level=INFO", "AS 64512 → 64700", "speaker restarted in place")
	}
	ac.pingMatrix(10 * time.Second)

	// 2. One node's own AS (annotation): eBGP between it and the others.
	as["node-2"] = 64800
	w = ac.startLiveWatch()
	changed = time.Now()
	ac.setNodeAS(n2.name, 64800)
	ac.waitLive(procs, "node-2's sessions re-formed in AS 64800", changed, func(n, p string) bool { return n == "node-2" || p == "node-2" },
		func(n string) uint32 { return as[n] })
	ac.holdSettled(procs, "routes settled after node-2's AS change")
	w.check("across node-2's AS change 64700 → 64800")
	logsSay(t, procs[n2.name], "level=INFO", "AS 64700 → 64800")
	ac.pingMatrix(10 * time.Second)

	// 3. The listen port.
	w = ac.startLiveWatch()
	changed = time.Now()
	ac.editBGPConfig(func(s *v1alpha1.BGPConfigurationSpec) { p := int32(1790); s.ListenPort = &p })
	ac.waitLive(procs, "every session re-formed on port 1790", changed, all, func(n string) uint32 { return as[n] })
	ac.holdSettled(procs, "routes settled after the port change")
	w.check("across the listen port change 179 → 1790")
	for _, n := range ac.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := n.ns.Run(ctx, "ss", "-Htn", "state", "established", "( sport = :1790 or dport = :1790 )")
		cancel()
		if err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
			t.Errorf("%s: established connections on port 1790: %v\n%s", n.name, err, out)
		}
		logsSay(t, procs[n.name], "level=INFO", "listen port 179 → 1790")
	}
	ac.pingMatrix(10 * time.Second)

	// 4. Timers of the existing sessions.
	w = ac.startLiveWatch()
	changed = time.Now()
	ac.editBGPConfig(func(s *v1alpha1.BGPConfigurationSpec) {
		s.KeepaliveTime = &metav1.Duration{Duration: 10 * time.Second}
		s.HoldTime = &metav1.Duration{Duration: 30 * time.Second}
	})
	ac.waitLive(procs, "every session re-formed with the new timers", changed, all, func(n string) uint32 { return as[n] })
	nstest.Poll(t, 20*time.Second, "node-1's sessions negotiated hold 30 s, keepalive 10 s (gobgp neighbor)", func() error {
		got, err := gobgpHold(t, cli, n1)
		if err != nil {
			return err
		}
		if len(got) != 2 {
			return fmt.Errorf("gobgp neighbor: %v", got)
		}
		for addr, v := range got {
			if v != [2]uint64{30, 10} {
				return fmt.Errorf("neighbor %s: negotiated hold %d s, keepalive %d s", addr, v[0], v[1])
			}
		}
		return nil
	})
	ac.holdSettled(procs, "routes settled after the timer change")
	w.check("across the keepalive/hold change")
	ac.pingMatrix(10 * time.Second)
}
