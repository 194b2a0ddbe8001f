package bgpsession

// The session controller driven against a fake speaker under
// testing/synctest: time is the bubble's fake clock, so the 30 s and 120 s
// windows pass in microseconds. Addresses: nodes 198.18.0.11-14 (A is this
// node), blocks in 10.244.0.0/16.

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
)

var (
	nodeB  = netip.MustParseAddr("198.18.0.12")
	nodeC  = netip.MustParseAddr("198.18.0.13")
	nodeD  = netip.MustParseAddr("198.18.0.14")
	blockB = netip.MustParsePrefix("10.244.2.0/26")
	blockC = netip.MustParsePrefix("10.244.3.0/26")
	blockD = netip.MustParsePrefix("10.244.4.0/26")
)

// fakeSpeaker keeps the configured peers and a session per peer that the
// test moves by hand, as the peer watch would report it.
type fakeSpeaker struct {
	peers    map[netip.Addr]bgpspeaker.Peer
	sessions map[netip.Addr]*bgpspeaker.Session
	adjIn    map[netip.Addr]map[netip.Prefix]bool
	sets     int
}

func newFake() *fakeSpeaker {
	return &fakeSpeaker{peers: map[netip.Addr]bgpspeaker.Peer{}, sessions: map[netip.Addr]*bgpspeaker.Session{}, adjIn: map[netip.Addr]map[netip.Prefix]bool{}}
}

func (f *fakeSpeaker) SetPeers(_ context.Context, ps []bgpspeaker.Peer) error {
	f.sets++
	want := map[netip.Addr]bgpspeaker.Peer{}
	for _, p := range ps {
		want[p.Address] = p
	}
	for a, old := range f.peers {
		p, ok := want[a]
		if reset, _ := bgpspeaker.NeedsReset(old, p); !ok || reset {
			delete(f.sessions, a) // deleted or re-created: the session is gone
			delete(f.adjIn, a)
		}
	}
	f.peers = want
	return nil
}

func (f *fakeSpeaker) Sessions() []bgpspeaker.Session {
	var out []bgpspeaker.Session
	for _, s := range f.sessions {
		out = append(out, *s)
	}
	return out
}

func (f *fakeSpeaker) AdjIn(_ context.Context, peer netip.Addr) (map[netip.Prefix]bool, error) {
	return maps.Clone(f.adjIn[peer]), nil
}

// up establishes the session to a configured peer now and fills its
// Adj-RIB-In; eor marks its End-of-RIB.
func (f *fakeSpeaker) up(t *testing.T, a netip.Addr, prefixes ...netip.Prefix) {
	t.Helper()
	if _, ok := f.peers[a]; !ok {
		t.Fatalf("session to %s comes up, but the peer is not configured", a)
	}
	f.sessions[a] = &bgpspeaker.Session{Address: a, State: "established", Since: time.Now()}
	f.adjIn[a] = map[netip.Prefix]bool{}
	for _, p := range prefixes {
		f.adjIn[a][p] = true
	}
}

func (f *fakeSpeaker) eor(a netip.Addr) { f.sessions[a].EndOfRIB = time.Now() }

func (f *fakeSpeaker) down(a netip.Addr) { delete(f.sessions, a); delete(f.adjIn, a) }

func (f *fakeSpeaker) configured() []netip.Addr {
	out := slices.Collect(maps.Keys(f.peers))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func want(kind model.SessionKind, addrs ...netip.Addr) []Want {
	var out []Want
	for _, a := range addrs {
		p := bgpspeaker.Peer{Address: a, AS: 64512, GracefulRestartSeconds: 120}
		if kind == model.SessionRRClient {
			p.RouteReflectorClient = true
		}
		out = append(out, Want{Name: string(kind) + "/" + a.String(), Kind: kind, Peer: p})
	}
	return out
}

func apply(t *testing.T, c *Controller) Result {
	t.Helper()
	res, err := c.Apply(context.Background())
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func assertPeers(t *testing.T, f *fakeSpeaker, what string, want ...netip.Addr) {
	t.Helper()
	if got := f.configured(); !slices.Equal(got, want) {
		t.Errorf("%s: speaker peers %v, want %v", what, got, want)
	}
}

func route(p netip.Prefix, via netip.Addr) bgpspeaker.Route {
	return bgpspeaker.Route{Prefix: p, NextHop: via, PeerAddr: via}
}

func prefixes(rs []model.LearnedRoute) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, r.Prefix)
	}
	return out
}

// startMesh brings up a mesh to B and C with their blocks, past start-up.
func startMesh(t *testing.T) (*Controller, *fakeSpeaker) {
	f := newFake()
	c := New(Config{Logger: quiet()}, f)
	c.Set(want(model.SessionMesh, nodeB, nodeC))
	apply(t, c)
	time.Sleep(300 * time.Millisecond)
	f.up(t, nodeB, blockB)
	f.up(t, nodeC, blockC)
	f.eor(nodeB)
	f.eor(nodeC)
	if res := apply(t, c); !res.Settled || res.Holding {
		t.Fatalf("mesh up with End-of-RIB from both: %+v", res)
	}
	return c, f
}

// TestMeshToRouteReflector: C gets the reflector label. The mesh session
// to B stays until C reflects B's block, then goes; B's withdrawal arrives
// after that and is not held.
func TestMeshToRouteReflector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f := startMesh(t)
		c.Set(want(model.SessionRouteReflector, nodeC))
		res := apply(t, c)
		assertPeers(t, f, "C became a reflector, it does not yet carry B's block", nodeB, nodeC)
		if !res.Holding || res.Settled || res.Wake.IsZero() {
			t.Errorf("reshape started: %+v", res)
		}
		if got := c.Retiring(); !slices.Equal(got, []netip.Addr{nodeB}) {
			t.Errorf("retiring %v, want [B]", got)
		}
		// While B retires, a withdrawal through it is held.
		up, down := c.Filter([]bgpspeaker.Change{{Prefix: blockB, Route: route(blockB, nodeB), Withdrawn: true}}, nil)
		if len(up) != 0 || len(down) != 0 {
			t.Errorf("withdrawal through the retiring B: up %v down %v, want it held", up, down)
		}
		if got := prefixes(c.Merge(map[netip.Prefix]bgpspeaker.Route{blockC: route(blockC, nodeC)}, nil)); !slices.Equal(got, []netip.Prefix{blockB, blockC}) {
			t.Errorf("routes while B retires: %v", got)
		}

		time.Sleep(time.Second)
		f.adjIn[nodeC][blockB] = true // C now reflects B's block
		res = apply(t, c)
		assertPeers(t, f, "C carries B's block", nodeC)
		if !res.Settled || res.Holding {
			t.Errorf("reshape done: %+v", res)
		}
		// B's block now comes through C; a late withdrawal of B's old path
		// is not held.
		_, down = c.Filter([]bgpspeaker.Change{{Prefix: blockD, Route: route(blockD, nodeB), Withdrawn: true}}, nil)
		if !slices.Equal(down, []netip.Prefix{blockD}) {
			t.Errorf("withdrawal after the reshape: down %v, want [%s]", down, blockD)
		}
	})
}

// TestReshapeCap: a reflector that never carries B's block does not keep
// the old session forever: ReshapeHold ends it.
func TestReshapeCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f := startMesh(t)
		c.Set(want(model.SessionRouteReflector, nodeC))
		res := apply(t, c)
		start := time.Now()
		for range 40 {
			if res.Wake.IsZero() {
				break
			}
			time.Sleep(time.Until(res.Wake))
			res = apply(t, c)
			if len(f.configured()) == 1 {
				break
			}
		}
		assertPeers(t, f, "after the cap", nodeC)
		if d := time.Since(start); d < DefaultReshapeHold || d > DefaultReshapeHold+recheck {
			t.Errorf("the retiring session went after %s, want %s", d, DefaultReshapeHold)
		}
	})
}

// TestTwoReflectorsAndBack: mesh → C reflector → C and D reflectors →
// mesh again, each step make-before-break.
func TestTwoReflectorsAndBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		c := New(Config{Logger: quiet()}, f)
		c.Set(want(model.SessionMesh, nodeB, nodeC, nodeD))
		apply(t, c)
		time.Sleep(10 * time.Millisecond)
		for _, a := range []netip.Addr{nodeB, nodeC, nodeD} {
			f.up(t, a, netip.PrefixFrom(a, 32))
			f.eor(a)
		}
		apply(t, c)

		// C and D become reflectors at once: B's mesh session must hand over.
		c.Set(want(model.SessionRouteReflector, nodeC, nodeD))
		apply(t, c)
		assertPeers(t, f, "two reflectors, B not yet reflected", nodeB, nodeC, nodeD)
		f.adjIn[nodeD][netip.PrefixFrom(nodeB, 32)] = true
		apply(t, c)
		assertPeers(t, f, "D reflects B", nodeC, nodeD)

		// Labels removed: back to the mesh. The new session to B must be
		// up with End-of-RIB before anything else changes; C and D stay
		// wanted (mesh), so nothing retires, but the kind change is seen.
		time.Sleep(5 * time.Second)
		c.Set(want(model.SessionMesh, nodeB, nodeC, nodeD))
		res := apply(t, c)
		assertPeers(t, f, "back to the mesh", nodeB, nodeC, nodeD)
		if res.Settled {
			t.Errorf("settled before the session to B is up: %+v", res)
		}
		time.Sleep(100 * time.Millisecond)
		f.up(t, nodeB, netip.PrefixFrom(nodeB, 32))
		if res := apply(t, c); res.Settled {
			t.Errorf("settled before B sent End-of-RIB: %+v", res)
		}
		f.eor(nodeB)
		if res := apply(t, c); !res.Settled || res.Holding {
			t.Errorf("mesh again: %+v", res)
		}
	})
}

// TestRecreatedSessionSettlesWithinTheSecond: a session re-created (route
// reflector client flag) and back within the same second settles at once
// (GoBGP's uptime has whole seconds; the watch's time does not), and
// withdrawals through it are held only until then.
func TestRecreatedSessionSettlesWithinTheSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		c := New(Config{Logger: quiet()}, f)
		c.Set(want(model.SessionMesh, nodeB))
		apply(t, c)
		time.Sleep(1500 * time.Millisecond) // mid-second
		f.up(t, nodeB, blockB)
		f.eor(nodeB)
		apply(t, c)

		c.Set(want(model.SessionRRClient, nodeB)) // this node became a reflector
		res := apply(t, c)
		if !res.Holding {
			t.Fatalf("a re-created topology session opens the window: %+v", res)
		}
		if _, ok := f.sessions[nodeB]; ok {
			t.Fatal("the fake did not re-create the session")
		}
		_, down := c.Filter([]bgpspeaker.Change{{Prefix: blockB, Route: route(blockB, nodeB), Withdrawn: true}}, nil)
		if len(down) != 0 {
			t.Errorf("withdrawal through the re-created session not held: %v", down)
		}
		time.Sleep(200 * time.Millisecond)
		f.up(t, nodeB, blockB)
		f.eor(nodeB)
		res = apply(t, c)
		if !res.Settled || res.Holding {
			t.Errorf("re-created session up with End-of-RIB 200 ms later: %+v", res)
		}
	})
}

// TestDeletedBGPPeerGoesAtOnce: removing an explicit peer is not a
// reshape: its session goes in the same Apply and its withdrawals are not
// held.
func TestDeletedBGPPeerGoesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		c := New(Config{Logger: quiet()}, f)
		tor := netip.MustParseAddr("198.18.0.1")
		c.Set(append(want(model.SessionMesh, nodeB), want(model.SessionGlobal, tor)...))
		apply(t, c)
		time.Sleep(10 * time.Millisecond)
		f.up(t, nodeB, blockB)
		f.up(t, tor, blockD)
		f.eor(nodeB)
		f.eor(tor)
		apply(t, c)

		c.Set(want(model.SessionMesh, nodeB))
		res := apply(t, c)
		assertPeers(t, f, "BGPPeer deleted", nodeB)
		if res.Holding {
			t.Errorf("deleting a BGPPeer opened a window: %+v", res)
		}
		_, down := c.Filter([]bgpspeaker.Change{{Prefix: blockD, Route: route(blockD, tor), Withdrawn: true}}, nil)
		if !slices.Equal(down, []netip.Prefix{blockD}) {
			t.Errorf("the deleted peer's route: down %v, want [%s]", down, blockD)
		}
	})
}

// TestRestartHoldEndOfRIB: after a restart the previous run's routes stay
// until every session has sent End-of-RIB; then what BGP does not announce
// is pruned.
func TestRestartHoldEndOfRIB(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		c := New(Config{Logger: quiet()}, f)
		stale := netip.MustParsePrefix("10.244.9.0/26") // withdrawn while the agent was down
		c.Seed([]model.LearnedRoute{{Prefix: blockB, NextHop: nodeB}, {Prefix: blockC, NextHop: nodeC}, {Prefix: stale, NextHop: nodeC}})
		c.Set(want(model.SessionMesh, nodeB, nodeC))
		res := apply(t, c)
		if !res.Holding {
			t.Fatalf("start-up window not open: %+v", res)
		}
		if got := prefixes(c.Merge(nil, nil)); len(got) != 3 {
			t.Errorf("before any session: routes %v, want the 3 seeded", got)
		}
		time.Sleep(2 * time.Second)
		f.up(t, nodeB, blockB)
		f.eor(nodeB)
		f.up(t, nodeC, blockC) // up, table still coming
		apply(t, c)
		learned := map[netip.Prefix]bgpspeaker.Route{blockB: route(blockB, nodeB), blockC: route(blockC, nodeC)}
		if got := prefixes(c.Merge(learned, nil)); !slices.Contains(got, stale) {
			t.Errorf("stale route pruned before C sent End-of-RIB: %v", got)
		}
		f.eor(nodeC)
		if res := apply(t, c); res.Holding {
			t.Errorf("every session sent End-of-RIB, window still open: %+v", res)
		}
		if got := prefixes(c.Merge(learned, nil)); !slices.Equal(got, []netip.Prefix{blockB, blockC}) {
			t.Errorf("after End-of-RIB from all: routes %v, want B's and C's blocks only", got)
		}
	})
}

// TestRestartHoldTimesOut: a peer that never comes back holds the previous
// run's routes for its restart time, not longer.
func TestRestartHoldTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		start := time.Now()
		c := New(Config{Logger: quiet()}, f)
		c.Seed([]model.LearnedRoute{{Prefix: blockC, NextHop: nodeC}})
		w := want(model.SessionMesh, nodeB, nodeC)
		w[1].Peer.GracefulRestartSeconds = 40
		c.Set(w)
		apply(t, c)
		time.Sleep(10 * time.Millisecond)
		f.up(t, nodeB, blockB)
		f.eor(nodeB)
		res := apply(t, c)
		if want := start.Add(40 * time.Second); !res.Wake.Equal(want) {
			t.Errorf("wake %s, want C's restart time %s", res.Wake, want)
		}
		time.Sleep(time.Until(res.Wake) - time.Millisecond)
		if res := apply(t, c); !res.Holding {
			t.Error("window closed before C's restart time")
		}
		time.Sleep(time.Millisecond)
		if res := apply(t, c); res.Holding {
			t.Error("window open after C's restart time")
		}
		if got := c.Merge(map[netip.Prefix]bgpspeaker.Route{blockB: route(blockB, nodeB)}, nil); len(got) != 1 {
			t.Errorf("routes after the restart time: %v, want B's only", got)
		}
	})
}

// TestPeerLoss: outside a window a withdrawal goes at once, unless the
// cluster vouches for the route: then it stays LossHold and goes at the
// wake-up after.
func TestPeerLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f := startMesh(t)
		f.down(nodeC)
		apply(t, c)
		vouched := func(r model.LearnedRoute) bool { return r.Prefix == blockB }
		_, down := c.Filter([]bgpspeaker.Change{
			{Prefix: blockB, Route: route(blockB, nodeB), Withdrawn: true},
			{Prefix: blockC, Route: route(blockC, nodeC), Withdrawn: true},
		}, vouched)
		if !slices.Equal(down, []netip.Prefix{blockC}) {
			t.Errorf("down %v, want only the unvouched %s", down, blockC)
		}
		res := apply(t, c)
		if want := time.Now().Add(DefaultLossHold); !res.Wake.Equal(want) {
			t.Errorf("wake %s, want the vouched route's expiry %s", res.Wake, want)
		}
		if got := prefixes(c.Merge(nil, vouched)); !slices.Equal(got, []netip.Prefix{blockB}) {
			t.Errorf("within LossHold: %v", got)
		}
		time.Sleep(DefaultLossHold)
		if got := c.Merge(nil, vouched); len(got) != 0 {
			t.Errorf("after LossHold: %v, want nothing", got)
		}
	})
}
