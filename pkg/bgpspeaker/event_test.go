package bgpspeaker

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Pure tests of the watch fold: events are built as GoBGP v4.8.0 hands them
// to WatchEvent's callbacks (a locally originated path has no source, so
// PeerASN 0 and no PeerAddress). Addresses as in speaker_test.go.

func mkPath(t *testing.T, prefix, nextHop, neighbor string, sourceAS uint32, withdraw bool, asPath ...uint32) *apiutil.Path {
	t.Helper()
	nlri, err := bgp.NewIPAddrPrefix(netip.MustParsePrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	nh, err := bgp.NewPathAttributeNextHop(netip.MustParseAddr(nextHop))
	if err != nil {
		t.Fatal(err)
	}
	p := &apiutil.Path{
		Family:     bgp.RF_IPv4_UC,
		Nlri:       nlri,
		Attrs:      []bgp.PathAttributeInterface{nh, bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, asPath)})},
		Withdrawal: withdraw,
		PeerASN:    sourceAS,
	}
	if neighbor != "" {
		p.PeerAddress = netip.MustParseAddr(neighbor)
	}
	return p
}

func quietSpeaker(t *testing.T) *Speaker {
	t.Helper()
	s, err := New(Config{RouterID: nodeA, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func poked(s *Speaker) bool {
	select {
	case <-s.Changed():
		return true
	default:
		return false
	}
}

func TestBestPathFold(t *testing.T) {
	s := quietSpeaker(t)
	p1 := netip.MustParsePrefix("10.244.1.0/26")
	p2 := netip.MustParsePrefix("10.244.2.0/26")
	peer2 := netip.MustParseAddr("127.0.0.3")
	node3 := netip.MustParseAddr("198.18.0.13")

	steps := []struct {
		name      string
		paths     []*apiutil.Path
		want      map[netip.Prefix]Route
		wantDrain []Change
	}{
		{"learn two", []*apiutil.Path{
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, false),
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, false, 64513, 64514),
		}, map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: nodeB, PeerAddr: addrB},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, []Change{
			{Prefix: p1, Route: Route{Prefix: p1, NextHop: nodeB, PeerAddr: addrB}},
			{Prefix: p2, Route: Route{Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2}},
		}},
		{"local, IPv6 and sourceless paths are skipped", []*apiutil.Path{
			mkPath(t, "10.244.3.0/26", "198.18.0.11", "", 0, false),
			func() *apiutil.Path {
				p := mkPath(t, "10.244.4.0/26", "198.18.0.12", "127.0.0.2", 64512, false)
				p.Family = bgp.RF_IPv6_UC
				return p
			}(),
			mkPath(t, "10.244.5.0/26", "198.18.0.12", "", 64512, false),
		}, map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: nodeB, PeerAddr: addrB},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, nil},
		{"withdraw then update of the same prefix in one event: update wins", []*apiutil.Path{
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
			mkPath(t, "10.244.1.0/26", "198.18.0.13", "127.0.0.3", 64512, false),
		}, map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, []Change{{Prefix: p1, Route: Route{Prefix: p1, NextHop: node3, PeerAddr: peer2}}}},
		{"late withdraw of the replaced path keeps the replacement", []*apiutil.Path{
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
		}, map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, nil},
		{"update then withdraw in one event: gone", []*apiutil.Path{
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, false),
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
		}, map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
		}, []Change{{Prefix: p2, Route: Route{Prefix: p2, NextHop: nodeB, PeerAddr: addrB}, Withdrawn: true}}},
	}
	for _, st := range steps {
		s.feed.onBestPath(st.paths, time.Now())
		if diff := cmp.Diff(st.want, s.Learned(), netipCmp); diff != "" {
			t.Errorf("%s: Learned (-want +got):\n%s", st.name, diff)
		}
		if got, want := poked(s), st.wantDrain != nil; got != want {
			t.Errorf("%s: Changed poked = %v, want %v", st.name, got, want)
		}
		byPrefix := cmpopts.SortSlices(func(a, b Change) bool { return a.Prefix.Compare(b.Prefix) < 0 })
		if diff := cmp.Diff(st.wantDrain, s.Drain(nil), netipCmp, byPrefix); diff != "" {
			t.Errorf("%s: Drain (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestDrainCoalesces: many changes of one prefix between two Drains are
// one change with the latest state, and a Drain empties the pending set.
func TestDrainCoalesces(t *testing.T) {
	s := quietSpeaker(t)
	p1 := netip.MustParsePrefix("10.244.1.0/26")
	for range 3 {
		s.feed.onBestPath([]*apiutil.Path{mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, false)}, time.Now())
		s.feed.onBestPath([]*apiutil.Path{mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, true)}, time.Now())
	}
	s.feed.onBestPath([]*apiutil.Path{mkPath(t, "10.244.1.0/26", "198.18.0.13", "127.0.0.3", 64512, false)}, time.Now())
	want := []Change{{Prefix: p1, Route: Route{Prefix: p1, NextHop: netip.MustParseAddr("198.18.0.13"), PeerAddr: netip.MustParseAddr("127.0.0.3")}}}
	if diff := cmp.Diff(want, s.Drain(nil), netipCmp); diff != "" {
		t.Errorf("Drain (-want +got):\n%s", diff)
	}
	s.feed.onBestPath([]*apiutil.Path{mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, false)}, time.Now())
	if n := len(s.Learned()); n != 2 {
		t.Errorf("Learned has %d routes, want 2", n)
	}
	if got := s.Drain(nil); len(got) != 1 {
		t.Errorf("second Drain = %v, want the one new prefix", got)
	}
	if got := s.Drain(nil); len(got) != 0 {
		t.Errorf("third Drain = %v, want nothing", got)
	}
}

// TestFeedTableGivesMemoryBack: a peer's whole table in, then out: every
// prefix drains once each way, and the slots are packed again (a table
// that shrank to nothing holds no slots), so memory follows the table.
func TestFeedTableGivesMemoryBack(t *testing.T) {
	s := quietSpeaker(t)
	const n = 10000
	paths := make([]*apiutil.Path, 0, n)
	for i := range n {
		paths = append(paths, mkPath(t, fmt.Sprintf("10.%d.%d.0/26", 64+i/256, i%256), "198.18.0.12", "127.0.0.2", 64512, false))
	}
	s.feed.onBestPath(paths, time.Now())
	if got := s.Drain(nil); len(got) != n || got[0].Withdrawn {
		t.Fatalf("first Drain: %d changes, want %d announcements", len(got), n)
	}
	if got := len(s.Learned()); got != n {
		t.Fatalf("Learned has %d routes, want %d", got, n)
	}
	for i, p := range paths[:n-10] {
		paths[i] = mkPath(t, p.Nlri.(*bgp.IPAddrPrefix).Prefix.String(), "198.18.0.12", "127.0.0.2", 64512, true)
	}
	s.feed.onBestPath(paths[:n-10], time.Now())
	got := s.Drain(nil)
	if len(got) != n-10 || !got[0].Withdrawn || got[0].Route.NextHop != netip.MustParseAddr("198.18.0.12") {
		t.Fatalf("second Drain: %d changes (first %+v), want %d withdrawals with their last path", len(got), got[0], n-10)
	}
	if l, sl := len(s.Learned()), len(s.feed.slots); l != 10 || sl != 10 {
		t.Errorf("after the withdrawal: %d learned in %d slots, want 10 in 10", l, sl)
	}
}

func peerEvent(addr string, state bgp.FSMState, reason string) *apiutil.WatchEventMessage_PeerEvent {
	a := netip.MustParseAddr(addr)
	return &apiutil.WatchEventMessage_PeerEvent{Type: apiutil.PEER_EVENT_STATE, Peer: apiutil.Peer{
		Conf:  apiutil.PeerConf{NeighborAddress: a},
		State: apiutil.PeerState{NeighborAddress: a, SessionState: state, DisconnectMessage: reason},
	}}
}

func eor(addr string, f bgp.Family) *apiutil.Path {
	return &apiutil.Path{Family: f, PeerAddress: netip.MustParseAddr(addr), PeerASN: 64512}
}

// TestSessionTable: the peer watch keeps since (full precision, from the
// speaker's clock), End-of-RIB per session, flaps and why the session went
// down; every change pokes Changed, and Learned is untouched.
func TestSessionTable(t *testing.T) {
	s := quietSpeaker(t)
	now := time.Date(2026, 11, 30, 12, 0, 0, 250_000_000, time.UTC)
	s.feed.now = func() time.Time { return now }
	session := func() Session {
		t.Helper()
		ss := s.Sessions()
		if len(ss) != 1 {
			t.Fatalf("Sessions = %+v, want one", ss)
		}
		return ss[0]
	}

	s.feed.onPeer(peerEvent("127.0.0.2", bgp.BGP_FSM_OPENCONFIRM, ""), now)
	s.feed.onPeer(peerEvent("127.0.0.2", bgp.BGP_FSM_ESTABLISHED, ""), now)
	if !poked(s) {
		t.Error("a session state change did not poke Changed")
	}
	if got := session(); got.State != "established" || !got.Since.Equal(now) || !got.EndOfRIB.IsZero() {
		t.Errorf("after Established: %+v", got)
	}
	s.feed.onEOR(eor("127.0.0.2", bgp.RF_IPv6_UC), now)
	if got := session(); !got.EndOfRIB.IsZero() {
		t.Errorf("an IPv6 End-of-RIB counted: %+v", got)
	}
	now = now.Add(300 * time.Millisecond)
	s.feed.onEOR(eor("127.0.0.2", bgp.RF_IPv4_UC), now)
	if got := session(); !got.EndOfRIB.Equal(now) {
		t.Errorf("End-of-RIB at %s not recorded: %+v", now, got)
	}
	if !poked(s) {
		t.Error("End-of-RIB did not poke Changed")
	}

	now = now.Add(time.Second)
	s.feed.onPeer(peerEvent("127.0.0.2", bgp.BGP_FSM_IDLE, "hold timer expired"), now)
	got := session()
	if got.State != "idle" || !got.Since.IsZero() || !got.EndOfRIB.IsZero() || got.Flaps != 1 || got.LastDown != "hold timer expired" {
		t.Errorf("after the session went down: %+v", got)
	}
	s.feed.onEOR(eor("127.0.0.2", bgp.RF_IPv4_UC), now)
	if got := session(); !got.EndOfRIB.IsZero() {
		t.Errorf("End-of-RIB outside a session recorded: %+v", got)
	}
	if n := len(s.Learned()); n != 0 {
		t.Errorf("Learned has %d routes after peer events, want 0", n)
	}
	s.feed.forget(netip.MustParseAddr("127.0.0.2"))
	if ss := s.Sessions(); len(ss) != 0 {
		t.Errorf("Sessions after forget = %+v", ss)
	}
}
