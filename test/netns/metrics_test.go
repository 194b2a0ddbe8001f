//go:build linux

package nstest_test

// TestAgentMetrics: three wren-agent binaries in a full mesh
// (bgpRestartCluster), each scraped over HTTP inside its node's namespace
// at 127.0.0.1:9091 (the default --metrics-addr). The metrics follow
//
//   - a pool nearing exhaustion: the pool has 16 addresses in /30 blocks;
//     as pods are added on node-1, every agent's free-address count for
//     the pool drops one by one, node-1 claims the last block, then
//     borrows (counted as block exhaustion events) until less than 10 %
//     of the pool is free, the WrenIPPoolNearlyExhausted condition;
//   - a kernel route repaired: a Wren route deleted by hand in node-1's
//     namespace comes back and node-1's repair counter goes up by one;
//   - a peer going down: node-3's agent is killed (-9); node-1's and
//     node-2's session to it leaves Established, counted as a flap.
//
// Test addresses: nodes 198.18.0.11-13/24 on one switch, pool
// 10.244.0.0/28 with /30 blocks. Nothing is routed in the root namespace.

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

// metricsAddr is where the agents serve /metrics inside their namespace.
const metricsAddr = "127.0.0.1:9091"

// scrape is one scrape of an agent, by family name.
type scrape map[string]*dto.MetricFamily

// scrapeAgent GETs /metrics from p inside its node's namespace.
func scrapeAgent(p *agentProc) (scrape, error) {
	resp, err := p.ns.HTTPClient(5 * time.Second).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var parser expfmt.TextParser
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	return scrape(mfs), err
}

// get returns the value of the series of name whose labels include the
// given pairs (a histogram's sample count), and whether there is one.
func (s scrape) get(name string, labels ...string) (float64, bool) {
	for _, m := range s[name].GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == labels[i] && l.GetValue() == labels[i+1] }) {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// want is one expected value of a series.
type want struct {
	name   string
	labels []string
	value  float64
}

// check returns an error naming the first series of ws that differs.
func (s scrape) check(ws ...want) error {
	for _, w := range ws {
		v, ok := s.get(w.name, w.labels...)
		if !ok {
			return fmt.Errorf("no series %s%v", w.name, w.labels)
		}
		if v != w.value {
			return fmt.Errorf("%s%v = %v, want %v", w.name, w.labels, v, w.value)
		}
	}
	return nil
}

// pollMetrics scrapes p every 200 ms (a scrape asks GoBGP for its
// sessions) until cond accepts the scrape, and returns that scrape.
func pollMetrics(t *testing.T, p *agentProc, deadline time.Duration, what string, cond func(scrape) error) scrape {
	t.Helper()
	var last scrape
	nstest.PollEvery(t, 200*time.Millisecond, deadline, what, func() error {
		s, err := scrapeAgent(p)
		if err != nil {
			return err
		}
		last = s
		return cond(s)
	})
	return last
}

func TestAgentMetrics(t *testing.T) {
	ac, procs := bgpRestartCluster(t, 3, func(ac *agentCluster) {
		// A pool of four /30 blocks instead of the /16: three nodes claim
		// one each for their first pod, and a dozen pods exhaust it.
		ctx := context.Background()
		if err := ac.c.Delete(ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"}}); err != nil {
			t.Fatal(err)
		}
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/28", BlockSize: 30, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapNever}}
		if err := ac.c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	})
	n1, n2, n3 := bgpRestartNode(t, ac, "node-1"), bgpRestartNode(t, ac, "node-2"), bgpRestartNode(t, ac, "node-3")
	p1, p2, p3 := procs["node-1"], procs["node-2"], procs["node-3"]
	peer := func(n *agentNode) string { return n.ip.Addr().String() }

	// Every agent ready, with both mesh sessions Established.
	for _, n := range ac.nodes {
		pollMetrics(t, procs[n.name], 60*time.Second, n.name+": ready with two mesh sessions up", func(s scrape) error {
			if _, ok := s.get("wren_build_info", "node", n.name); !ok {
				return fmt.Errorf("no wren_build_info{node=%q}", n.name)
			}
			return s.check(
				want{"wren_agent_ready", nil, 1},
				want{"wren_bgp_peers", []string{"state", "established", "type", "mesh"}, 2},
				want{"wren_bgp_peers", []string{"state", "idle", "type", "mesh"}, 0},
			)
		})
	}

	// (b) A pool nearing exhaustion. One pod per node so far: three
	// blocks claimed, 13 of 16 addresses free, the same on every node.
	for _, n := range ac.nodes {
		pollMetrics(t, procs[n.name], 20*time.Second, n.name+": the pool with one pod per node", func(s scrape) error {
			return s.check(
				want{"wren_ipam_pool_addresses", []string{"pool", "default"}, 16},
				want{"wren_ipam_pool_free_addresses", []string{"pool", "default"}, 13},
				want{"wren_ipam_pool_unclaimed_blocks", []string{"pool", "default"}, 1},
				want{"wren_ipam_blocks", []string{"state", "confirmed"}, 1},
				want{"wren_ipam_borrowed_addresses", nil, 0},
			)
		})
	}
	// Twelve more pods on node-1: three fill its block, one claims the
	// last block and three fill it, five borrow from node-2's and
	// node-3's blocks. The free count drops with each.
	const more = 12
	for i := 1; i <= more; i++ {
		ac.addBinaryPod(n1, p1, fmt.Sprintf("node-1-fill-%d", i))
		pollMetrics(t, p1, 20*time.Second, fmt.Sprintf("node-1: free addresses after pod %d", i), func(s scrape) error {
			return s.check(want{"wren_ipam_pool_free_addresses", []string{"pool", "default"}, float64(13 - i)})
		})
	}
	s := pollMetrics(t, p1, 20*time.Second, "node-1: out of block space, borrowing", func(s scrape) error {
		return s.check(
			want{"wren_ipam_pool_free_addresses", []string{"pool", "default"}, 1},
			want{"wren_ipam_pool_unclaimed_blocks", []string{"pool", "default"}, 0},
			want{"wren_ipam_blocks", []string{"state", "confirmed"}, 2},
			want{"wren_ipam_allocated_addresses", nil, 1 + more},
			want{"wren_ipam_block_free_addresses", nil, 0},
			want{"wren_ipam_borrowed_addresses", nil, 5},
			want{"wren_ipam_block_exhaustion_total", []string{"outcome", "borrowed"}, 5},
			want{"wren_ipam_block_exhaustion_total", []string{"outcome", "exhausted"}, 0},
			// Every ADD answered once, none failed.
			want{"wren_cni_request_duration_seconds", []string{"command", "add"}, 1 + more},
			want{"wren_cni_failures_total", []string{"command", "add", "reason", "pool-exhausted"}, 0},
			want{"wren_cni_failures_total", []string{"command", "add", "reason", "internal"}, 0},
		)
	})
	// A run while an ADD builds its pod leaves the pod to the ADD: no
	// "link missing" or "device is down" failure for pods being created.
	for _, l := range errorLines(t, p1.log) {
		if strings.Contains(l, "sync failed") {
			t.Errorf("node-1 failed a run while its pods were being created:\n%s", l)
		}
	}
	free, _ := s.get("wren_ipam_pool_free_addresses", "pool", "default")
	size, _ := s.get("wren_ipam_pool_addresses", "pool", "default")
	if free/size >= 0.10 {
		t.Errorf("pool free share %v/%v; want below the alert's 10 %%", free, size)
	}
	// The other agents see the same pool, and lend what node-1 borrowed.
	lent := 0.0
	for _, p := range []*agentProc{p2, p3} {
		s := pollMetrics(t, p, 20*time.Second, p.ns.Name+": the pool as node-1 left it", func(s scrape) error {
			return s.check(
				want{"wren_ipam_pool_free_addresses", []string{"pool", "default"}, 1},
				want{"wren_ipam_borrowed_addresses", nil, 0},
			)
		})
		v, _ := s.get("wren_ipam_lent_addresses")
		lent += v
	}
	if lent != 5 {
		t.Errorf("node-2 and node-3 lend %v addresses; want the 5 node-1 borrowed", lent)
	}

	// (c) A kernel route repaired: node-2's block, deleted by hand on
	// node-1, comes back; node-1 counts one repair.
	h, err := netlink.NewHandleAt(n1.ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	remote := func() (netip.Prefix, error) {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.Protocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return netip.Prefix{}, err
		}
		for _, r := range rs {
			if r.Dst == nil || r.Gw == nil || r.Gw.String() != peer(n2) {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones == 30 {
				return netip.MustParsePrefix(r.Dst.String()), nil
			}
		}
		return netip.Prefix{}, fmt.Errorf("node-1 has no proto %d route to a /30 via %s", routes.Protocol, peer(n2))
	}
	var dst netip.Prefix
	nstest.Poll(t, 20*time.Second, "node-1's route to node-2's block", func() error { dst, err = remote(); return err })
	before, err := scrapeAgent(p1)
	if err != nil {
		t.Fatal(err)
	}
	repairs, _ := before.get("wren_kernel_route_repairs_total")
	direct, _ := before.get("wren_routes_programmed", "kind", "remote-direct")
	n1.ns.MustRun(t, "ip", "route", "del", dst.String(), "proto", fmt.Sprint(routes.Protocol))
	took := nstest.Poll(t, 10*time.Second, "node-1 writes "+dst.String()+" again", func() error {
		got, err := remote()
		if err == nil && got != dst {
			err = fmt.Errorf("route to %s, want %s", got, dst)
		}
		return err
	})
	t.Logf("node-1 repaired %s in %s", dst, took.Round(time.Millisecond))
	pollMetrics(t, p1, 10*time.Second, "node-1: one kernel route repaired", func(s scrape) error {
		return s.check(
			want{"wren_kernel_route_repairs_total", nil, repairs + 1},
			want{"wren_kernel_route_write_errors_total", nil, 0},
			want{"wren_routes_programmed", []string{"kind", "remote-direct"}, direct},
		)
	})

	// (a) A peer going down: node-3's agent is killed; node-1 and node-2
	// see their session to it leave Established, once.
	flaps := map[*agentProc]float64{}
	for _, p := range []*agentProc{p1, p2} {
		s := pollMetrics(t, p, 10*time.Second, p.ns.Name+": the session to node-3 up", func(s scrape) error {
			return s.check(want{"wren_bgp_peer_up", []string{"peer", peer(n3), "type", "mesh"}, 1})
		})
		flaps[p], _ = s.get("wren_bgp_session_flaps_total", "peer", peer(n3))
	}
	p3.kill9()
	for _, c := range []struct {
		p     *agentProc
		other *agentNode // the peer that stays up
	}{{p1, n2}, {p2, n1}} {
		took := time.Now()
		pollMetrics(t, c.p, 30*time.Second, c.p.ns.Name+": the session to the killed node-3 down", func(s scrape) error {
			return s.check(
				want{"wren_bgp_peer_up", []string{"peer", peer(n3), "type", "mesh"}, 0},
				want{"wren_bgp_peer_up", []string{"peer", peer(c.other), "type", "mesh"}, 1},
				want{"wren_bgp_peers", []string{"state", "established", "type", "mesh"}, 1},
				want{"wren_bgp_session_flaps_total", []string{"peer", peer(n3), "type", "mesh"}, flaps[c.p] + 1},
			)
		})
		t.Logf("%s: the metrics show node-3 down %s after the kill", c.p.ns.Name, time.Since(took).Round(time.Millisecond))
	}
	// Inside the first 30 s after start every configured peer must be up
	// for the node to be ready (Calico's bird-ready); after that one
	// established peer is enough, so both stay (or become) ready.
	for _, p := range []*agentProc{p1, p2} {
		pollMetrics(t, p, 40*time.Second, p.ns.Name+": ready with one of two peers, after the start window", func(s scrape) error {
			return s.check(want{"wren_agent_ready", nil, 1})
		})
	}
}
