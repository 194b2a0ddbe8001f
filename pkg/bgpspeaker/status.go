package bgpspeaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// PeerStatus describes one configured neighbour.
type PeerStatus struct {
	Address netip.Addr
	AS      uint32
	// State is the BGP FSM state in lower case ("idle", "connect", "active",
	// "opensent", "openconfirm", "established").
	State string
	// Since is when the session last became established (zero if it is not
	// established), and EndOfRIB when the neighbour's End-of-RIB arrived
	// in it (zero if not yet); both from the peer watch (see Session).
	Since    time.Time
	EndOfRIB time.Time
	// Flaps counts the times the session left Established; LastDown says
	// why it last did.
	Flaps    int
	LastDown string
	// NegotiatedHoldSeconds and KeepaliveSeconds are the session's values;
	// ConfiguredHold/KeepaliveSeconds are what this side offers.
	NegotiatedHoldSeconds      uint64
	KeepaliveSeconds           uint64
	ConfiguredHoldSeconds      uint64
	ConfiguredKeepaliveSeconds uint64
	// Received, Accepted and Advertised count IPv4 unicast prefixes.
	Received, Accepted, Advertised uint64
}

// Status is a snapshot of the speaker.
type Status struct {
	RouterID netip.Addr
	AS       uint32
	Peers    []PeerStatus
}

// Status lists the neighbours with their session state and prefix counts.
// It asks GoBGP's management loop once, so it is for the debug API and
// readiness, not for hot paths (Sessions is the cheap view).
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	s.mu.Lock()
	started, srv := s.started, s.srv
	st := Status{RouterID: s.cfg.RouterID, AS: s.cfg.AS}
	s.mu.Unlock()
	if !started {
		return st, nil
	}
	sessions := map[netip.Addr]Session{}
	for _, x := range s.Sessions() {
		sessions[x.Address] = x
	}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		ps := PeerStatus{
			AS:    p.GetState().GetPeerAsn(),
			State: apiSessionState(p.GetState().GetSessionState()),
		}
		ps.Address, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if ps.AS == 0 {
			ps.AS = p.GetConf().GetPeerAsn()
		}
		if x, ok := sessions[ps.Address]; ok {
			ps.Flaps, ps.LastDown = x.Flaps, x.LastDown
			if ps.State == "established" {
				ps.Since, ps.EndOfRIB = x.Since, x.EndOfRIB
			}
		}
		if ts := p.GetTimers().GetState(); ts != nil {
			ps.NegotiatedHoldSeconds = ts.GetNegotiatedHoldTime()
			ps.KeepaliveSeconds = ts.GetKeepaliveInterval()
			if up := ts.GetUptime(); up != nil && ps.State == "established" && ps.Since.IsZero() {
				ps.Since = up.AsTime()
			}
		}
		if tc := p.GetTimers().GetConfig(); tc != nil {
			ps.ConfiguredHoldSeconds = tc.GetHoldTime()
			ps.ConfiguredKeepaliveSeconds = tc.GetKeepaliveInterval()
		}
		for _, af := range p.GetAfiSafis() {
			as := af.GetState()
			if as.GetFamily().GetAfi() == api.Family_AFI_IP && as.GetFamily().GetSafi() == api.Family_SAFI_UNICAST {
				ps.Received, ps.Accepted, ps.Advertised = as.GetReceived(), as.GetAccepted(), as.GetAdvertised()
			}
		}
		st.Peers = append(st.Peers, ps)
	})
	if err != nil {
		return st, fmt.Errorf("list peers: %w", err)
	}
	return st, nil
}

func apiSessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// adjIn walks a peer's IPv4 unicast Adj-RIB-In (with the paths the import
// policy filtered) inside GoBGP's management loop.
func (s *Speaker) adjIn(peer netip.Addr, fn func(p netip.Prefix, filtered bool)) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	return srv.ListPath(apiutil.ListPathRequest{
		TableType:      api.TableType_TABLE_TYPE_ADJ_IN,
		Name:           peer.String(),
		Family:         bgp.RF_IPv4_UC,
		EnableFiltered: true,
	}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
		pfx, ok := nlri.(*bgp.IPAddrPrefix)
		if !ok {
			return
		}
		for _, p := range paths {
			if !p.Withdrawal {
				fn(pfx.Prefix.Masked(), p.Filtered)
			}
		}
	})
}

// Rejected counts, per peer, the IPv4 unicast prefixes it sent that the
// import policy rejected. It walks each peer's Adj-RIB-In inside GoBGP's
// management loop: for the debug API and tests, never a hot path.
func (s *Speaker) Rejected(ctx context.Context) (map[netip.Addr]int, error) {
	peers := s.peerAddrs()
	out := make(map[netip.Addr]int, len(peers))
	for _, a := range peers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := 0
		if err := s.adjIn(a, func(_ netip.Prefix, filtered bool) {
			if filtered {
				n++
			}
		}); err != nil {
			return nil, fmt.Errorf("list paths from %s: %w", a, err)
		}
		out[a] = n
	}
	return out, nil
}

// peerAddrs is the configured neighbours' addresses, sorted.
func (s *Speaker) peerAddrs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Keys(s.peers), netip.Addr.Compare)
}

// RejectedPath is a prefix a peer sent that the import policy refused.
type RejectedPath struct {
	Prefix netip.Prefix
	Peer   netip.Addr
}

// RejectedPaths lists, for every peer, the IPv4 unicast prefixes inside
// within (all when within is the zero Prefix) that the import policy
// refused: at most most of them (by peer, then prefix), and how many there
// are in all. It walks each peer's Adj-RIB-In like Rejected.
func (s *Speaker) RejectedPaths(ctx context.Context, within netip.Prefix, most int) ([]RejectedPath, int, error) {
	peers := s.peerAddrs()
	var out []RejectedPath
	total := 0
	for _, a := range peers {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		var mine []netip.Prefix
		if err := s.adjIn(a, func(p netip.Prefix, filtered bool) {
			if filtered && (!within.IsValid() || within.Overlaps(p) && within.Bits() <= p.Bits()) {
				total++
				if len(out)+len(mine) < most {
					mine = append(mine, p)
				}
			}
		}); err != nil {
			return nil, 0, fmt.Errorf("list paths from %s: %w", a, err)
		}
		slices.SortFunc(mine, netip.Prefix.Compare)
		for _, p := range mine {
			out = append(out, RejectedPath{Prefix: p, Peer: a})
		}
	}
	return out, total, nil
}

// AdjIn returns the IPv4 unicast prefixes a peer sent that the import
// policy accepted. Like Rejected it walks the peer's Adj-RIB-In inside
// GoBGP's management loop: the agent calls it only while sessions are
// being reshaped.
func (s *Speaker) AdjIn(ctx context.Context, peer netip.Addr) (map[netip.Prefix]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[netip.Prefix]bool{}
	if err := s.adjIn(peer, func(p netip.Prefix, filtered bool) {
		if !filtered {
			out[p] = true
		}
	}); err != nil {
		return nil, fmt.Errorf("list paths from %s: %w", peer, err)
	}
	return out, nil
}
