package bgpspeaker

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// Pure tests of the best-path fold: events are built as GoBGP v3.37.0 sends
// them (a local path has NeighborIp "<nil>" and SourceAsn 0). Addresses as in
// speaker_test.go.

func mkPath(t *testing.T, prefix, nextHop, neighbor string, sourceAS uint32, withdraw bool, asPath ...uint32) *api.Path {
	t.Helper()
	pfx := netip.MustParsePrefix(prefix)
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: pfx.Addr().String(), PrefixLen: uint32(pfx.Bits())})
	if err != nil {
		t.Fatal(err)
	}
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: nextHop})
	ap, _ := anypb.New(&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: api.AsSegment_AS_SEQUENCE, Numbers: asPath}}})
	return &api.Path{
		Family:     ipv4Unicast,
		Nlri:       nlri,
		Pattrs:     []*anypb.Any{nh, ap},
		IsWithdraw: withdraw,
		NeighborIp: neighbor,
		SourceAsn:  sourceAS,
	}
}

func tableEvent(paths ...*api.Path) *api.WatchEventResponse {
	return &api.WatchEventResponse{Event: &api.WatchEventResponse_Table{Table: &api.WatchEventResponse_TableEvent{Paths: paths}}}
}

func TestOnEventFold(t *testing.T) {
	s, err := New(Config{RouterID: nodeA, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p1 := netip.MustParsePrefix("10.244.1.0/26")
	p2 := netip.MustParsePrefix("10.244.2.0/26")
	peer2 := netip.MustParseAddr("127.0.0.3")
	node3 := netip.MustParseAddr("198.18.0.13")

	steps := []struct {
		name  string
		ev    *api.WatchEventResponse
		want  map[netip.Prefix]Route
		poked bool
	}{
		{"learn two", tableEvent(
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, false),
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, false, 64513, 64514),
		), map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: nodeB, PeerAddr: addrB},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, true},
		{"local, IPv6 and empty paths are skipped", tableEvent(
			mkPath(t, "10.244.3.0/26", "198.18.0.11", "<nil>", 0, false),
			func() *api.Path {
				p := mkPath(t, "10.244.4.0/26", "198.18.0.12", "127.0.0.2", 64512, false)
				p.Family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
				return p
			}(),
			mkPath(t, "10.244.5.0/26", "198.18.0.12", "", 64512, false),
		), map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: nodeB, PeerAddr: addrB},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, false},
		{"withdraw then update of the same prefix in one event: update wins", tableEvent(
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
			mkPath(t, "10.244.1.0/26", "198.18.0.13", "127.0.0.3", 64512, false),
		), map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, true},
		{"late withdraw of the replaced path keeps the replacement", tableEvent(
			mkPath(t, "10.244.1.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
		), map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
			p2: {Prefix: p2, NextHop: nodeB, PeerAddr: addrB, ASPathLen: 2},
		}, false},
		{"update then withdraw in one event: gone", tableEvent(
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, false),
			mkPath(t, "10.244.2.0/26", "198.18.0.12", "127.0.0.2", 64512, true),
		), map[netip.Prefix]Route{
			p1: {Prefix: p1, NextHop: node3, PeerAddr: peer2},
		}, true},
	}
	for _, st := range steps {
		s.onEvent(st.ev)
		if diff := cmp.Diff(st.want, s.Learned(), netipCmp); diff != "" {
			t.Errorf("%s: Learned (-want +got):\n%s", st.name, diff)
		}
		poked := false
		select {
		case <-s.Changed():
			poked = true
		default:
		}
		if poked != st.poked {
			t.Errorf("%s: Changed poked = %v, want %v", st.name, poked, st.poked)
		}
	}
}

// TestOnEventPeerState: a session state change pokes Changed (the agent
// re-checks its sessions then, instead of polling), without touching
// Learned.
func TestOnEventPeerState(t *testing.T) {
	s, err := New(Config{RouterID: nodeA, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.onEvent(&api.WatchEventResponse{Event: &api.WatchEventResponse_Peer{Peer: &api.WatchEventResponse_PeerEvent{
		Type: api.WatchEventResponse_PeerEvent_STATE,
		Peer: &api.Peer{State: &api.PeerState{NeighborAddress: "127.0.0.2", SessionState: api.PeerState_ESTABLISHED}},
	}}})
	select {
	case <-s.Changed():
	default:
		t.Error("a session state change did not poke Changed")
	}
	if n := len(s.Learned()); n != 0 {
		t.Errorf("Learned has %d routes after a peer event, want 0", n)
	}
}
