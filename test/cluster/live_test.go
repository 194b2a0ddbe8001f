//go:build linux

package cluster_test

import (
	"fmt"
	"strings"
	"time"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster"
	nstest "github.com/wren-net/wren/test/netns"
)

// testLiveAS changes every node's AS from 64512 to 64700 while a workload pod on each node pings one on the next node
// every 10 ms and every node's Wren routes are watched. Every agent
// restarts its speaker's global part in place (no agent restart); every
// session re-forms in AS 64700 (wrenctl status in each agent pod: the
// node's AS, every peer established since after the change, from AS
// 64700, with End-of-RIB); no ping is lost and no node deletes a route.
// Without the live change the sessions never come back (the peers'
// configs expect 64700 while the speakers still send 64512): checked by
// hand with followBGPGlobal returning early, in test/netns
// TestAgentBGPLiveChanges.
func (e *env) testLiveAS() {
	t := e.t
	const newAS = 64700
	// Settled first: every session up (the lab has just rolled out).
	e.poll(60*time.Second, "every BGP session established", func() error { _, err := e.sessions(e.status); return err })
	pids := e.agentPIDs(e.agentPods())

	ws := e.watchAllRoutes()
	ps := e.ringPingers()
	// The lab gives every node its AS with the wren.network/as-number
	// annotation (which overrides the BGPConfiguration's asNumber), so
	// that is what changes, on every node.
	changed := time.Now()
	for _, n := range e.lab.Nodes() {
		e.kubectl("annotate", "--overwrite", "node", fmt.Sprintf("node-%d", n), fmt.Sprintf("%s=%d", cluster.AnnotationASNumber, newAS))
	}
	took := e.poll(90*time.Second, fmt.Sprintf("every session re-formed in AS %d", newAS), func() error {
		for _, n := range e.lab.Nodes() {
			st, err := e.status(n)
			if err != nil {
				return err
			}
			if st.GetAsNumber() != newAS {
				return fmt.Errorf("node-%d: AS %d", n, st.GetAsNumber())
			}
			if len(st.GetPeers()) != len(e.lab.Nodes())-1 {
				return fmt.Errorf("node-%d: %d peers", n, len(st.GetPeers()))
			}
			for _, p := range st.GetPeers() {
				if p.GetState() != "established" || !nstest.PeerSince(p).After(changed) || !p.GetEndOfRib() || p.GetAsNumber() != newAS {
					return fmt.Errorf("node-%d: peer %s %s since %s AS %d End-of-RIB %t", n, p.GetAddress(), p.GetState(),
						nstest.PeerSince(p).Format(time.RFC3339Nano), p.GetAsNumber(), p.GetEndOfRib())
				}
			}
		}
		return nil
	})
	t.Logf("every session re-formed in AS %d %s after the change", newAS, took.Round(time.Millisecond))
	// Until no agent holds a route any more: every route is learned again,
	// the start-up windows are closed, and a route pruned by mistake would
	// have shown in the watches.
	e.poll(60*time.Second, "no held routes", func() error {
		for node, p := range e.agentPods() {
			var rr debugv1.RoutesReply
			if err := e.wrenctl(p.Name, &rr, "routes"); err != nil {
				return err
			}
			for _, r := range rr.GetRoutes() {
				if r.GetHeld() {
					return fmt.Errorf("%s holds %s", node, r.GetPrefix())
				}
			}
		}
		return nil
	})
	e.stopPingers("across the AS change", ps)
	e.noRouteDeleted("across the AS change", ws)
	// Not by restarting: the same agent processes.
	for node, pid := range e.agentPIDs(e.agentPods()) {
		if pids[node] != pid {
			t.Errorf("%s: wren-agent pid %d → %d: the agent restarted", node, pids[node], pid)
		}
	}
	logs := e.kubectl("-n", "wren-system", "logs", "-l", "app.kubernetes.io/name=wren-agent", "--tail", "-1", "--prefix")
	if got := grepLines(logs, fmt.Sprintf("AS 64512 → %d", newAS)); len(got) != len(e.lab.Nodes()) {
		t.Errorf("agents' log lines naming the AS change: %d; want one per node:\n%s", len(got), strings.Join(got, "\n"))
	}
	e.poll(30*time.Second, "every workload pod reaching every other", func() error { return e.lab.AllReachable(e.ctx) })
}
