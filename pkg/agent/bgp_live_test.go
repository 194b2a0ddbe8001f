package agent

// The fake tier (agent_fake_test.go) across a live change of the node's
// AS: the loop restarts the speaker's global part, and the routes the
// speaker forgets with its old server stay in the kernel until the new
// sessions have sent End-of-RIB; then what no session announces again is
// pruned. Addresses as in agent_fake_test.go.

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// globalFakeSpeaker is the fake speaker with a global part: SetGlobal
// forgets the learned table and the sessions without reporting any
// withdrawal, as bgpspeaker.Speaker does when it replaces its server.
type globalFakeSpeaker struct {
	*fakeSpeaker
	global  bgpspeaker.Global
	changes []string
}

func (g *globalFakeSpeaker) Global() bgpspeaker.Global { return g.global }

func (g *globalFakeSpeaker) SetGlobal(_ context.Context, want bgpspeaker.Global) (bool, error) {
	want = want.Defaults()
	if want == g.global {
		return false, nil
	}
	g.changes = append(g.changes, g.global.String()+" → "+want.String())
	g.global = want
	clear(g.learned)
	clear(g.dirty)
	clear(g.sessions)
	return true, nil
}

const bgpsessionLossHold = bgpsession.DefaultLossHold

// TestLiveASChangeKeepsRoutes: node-1 learns node-2's and node-3's
// blocks; the BGPConfiguration's asNumber changes. The loop restarts the
// speaker's global part once (SetGlobal with the new AS), the peers follow
// the new AS, and neither the fast lane nor a full run removes a route
// while the speaker's table is empty. When both sessions are back with
// End-of-RIB, the block node-3 did not announce again goes (after the
// hold for routes the cluster vouches for). Without the new start-up
// window (followBGPGlobal keeping the old controller) the first full run
// after the change removes both routes.
func TestLiveASChangeKeepsRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent(t)
		ctx := context.Background()
		sp := &globalFakeSpeaker{fakeSpeaker: f.sp, global: wantGlobal(f.cluster.nodes[0], f.cluster.cfg)}
		f.bgp.speaker = sp
		f.bgp.kernelRoutes = func() ([]model.LearnedRoute, error) {
			var out []model.LearnedRoute
			for _, r := range f.kernel.routes {
				if r.Gw.IsValid() && r.Protocol == routes.Protocol {
					out = append(out, model.LearnedRoute{Prefix: r.Dst, NextHop: r.Gw})
				}
			}
			return out, nil
		}
		n2, n3 := fNode2.Addr(), fNode3.Addr()
		sync := func(what string) {
			t.Helper()
			time.Sleep(time.Second)
			if err := f.sync(ctx); err != nil {
				t.Fatalf("%s: sync: %v", what, err)
			}
		}
		routesOf := func() string {
			var out []string
			for _, l := range strings.Split(f.kernel.String(), "\n") {
				if strings.Contains(l, " via ") {
					out = append(out, l)
				}
			}
			return strings.Join(out, "\n")
		}
		const both = "route 10.244.0.64/26 via 198.18.0.12 dev eth0\nroute 10.244.0.128/26 via 198.18.0.13 dev eth0"

		sync("start")
		sp.up(n2, n3)
		sp.learn("10.244.0.64/26", n2)
		sp.learn("10.244.0.128/26", n3)
		sync("learned")
		if diff := cmp.Diff(both, routesOf()); diff != "" {
			t.Fatalf("before the change (-want +got):\n%s", diff)
		}

		// The cluster's AS changes: the speaker restarts, its table is
		// empty, and nothing leaves the kernel.
		f.cluster.cfg.AS = 64700
		sync("AS 64700")
		if want := []string{"router ID 198.18.0.11, AS 64512, port 179 → router ID 198.18.0.11, AS 64700, port 179"}; !cmp.Equal(sp.changes, want) {
			t.Errorf("SetGlobal calls %q; want %q", sp.changes, want)
		}
		if !strings.Contains(sp.String(), "peer 198.18.0.12 as 64700") {
			t.Errorf("the peers do not follow the new AS:\n%s", sp)
		}
		if f.bgpDelta(ctx); routesOf() != both {
			t.Errorf("the fast lane after the restart removed routes:\n%s", routesOf())
		}
		sync("no session yet")
		if diff := cmp.Diff(both, routesOf()); diff != "" {
			t.Errorf("while the sessions re-form (-want +got):\n%s", diff)
		}
		// The same again: no second restart.
		sync("unchanged")
		if len(sp.changes) != 1 {
			t.Errorf("SetGlobal calls %q; want exactly the one above", sp.changes)
		}

		// node-2 comes back with its block; node-3 comes back without
		// its block: once both sent End-of-RIB, node-3's goes.
		sp.up(n2, n3)
		sp.learn("10.244.0.64/26", n2)
		f.bgpDelta(ctx)
		sync("both sessions back, End-of-RIB from both")
		// node-3's block is confirmed, so the cluster still vouches for
		// the route: it stays the loss hold (15 s) longer.
		time.Sleep(bgpsessionLossHold)
		sync("the start-up window and the hold closed")
		if diff := cmp.Diff("route 10.244.0.64/26 via 198.18.0.12 dev eth0", routesOf()); diff != "" {
			t.Errorf("after End-of-RIB from both (-want +got):\n%s", diff)
		}
	})
}
