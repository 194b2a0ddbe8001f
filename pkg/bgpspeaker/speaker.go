package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Route is a best path learned from a peer.
type Route struct {
	Prefix netip.Prefix
	// NextHop is the path's NEXT_HOP (for Wren peers, the other node's IP).
	NextHop netip.Addr
	// PeerAddr is the neighbour the path came from.
	PeerAddr netip.Addr
	// ASPathLen is the number of AS numbers in AS_PATH (0 for iBGP routes).
	ASPathLen int
}

// Speaker is an embedded BGP speaker. Its methods are safe for concurrent
// use.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	mu      sync.Mutex // serialises Start, Close and the Set methods
	started bool
	closed  bool
	stop    context.CancelFunc // ends the watch goroutine
	peers   map[netip.Addr]Peer
	adverts map[netip.Prefix]netip.Addr // prefix -> next hop as added

	policy    Policy // the assigned policy (SetPolicy)
	policySet bool
	policyGen int

	learnedMu sync.Mutex
	learned   map[netip.Prefix]Route
	changed   chan struct{}
}

// New checks cfg (after Defaults) and returns a speaker that is not yet
// running.
func New(cfg Config) (*Speaker, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp speaker config: %w", err)
	}
	log := cfg.Logger.With("component", "bgpspeaker")
	return &Speaker{
		cfg:     cfg,
		log:     log,
		srv:     server.NewBgpServer(server.LoggerOption(newSlogAdapter(cfg.Logger.With("component", "gobgp")))),
		peers:   make(map[netip.Addr]Peer),
		adverts: make(map[netip.Prefix]netip.Addr),
		learned: make(map[netip.Prefix]Route),
		changed: make(chan struct{}, 1),
	}, nil
}

// Start runs the BGP server and registers the best-path and peer watches.
// The watches are registered before any neighbour or path can exist (SetPeers
// and SetAdvertisements refuse to run before Start), so no best-path change
// is missed. ctx bounds only the start-up calls.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("start bgp speaker: already started")
	}
	// Serve runs GoBGP's management loop; every API call below goes through
	// it. In v3 it has no way to return: the goroutine lives as long as the
	// process, which is what the agent wants (see the package doc).
	go s.srv.Serve()
	listenAddrs := s.cfg.ListenAddresses
	if s.cfg.ListenPort < 0 {
		listenAddrs = nil
	}
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             s.cfg.AS,
		RouterId:        s.cfg.RouterID.String(),
		ListenPort:      s.cfg.ListenPort,
		ListenAddresses: listenAddrs,
		// Families holds indexes into GoBGP's oc.AfiSafiTypeToIntMap, not
		// AFI<<16|SAFI route-family codes: 0 is "ipv4-unicast". (A route
		// family code here silently leaves the global RIB without IPv4
		// unicast, and AddPath then fails only in ListPath.)
		Families: []uint32{0},
	}})
	if err != nil {
		return fmt.Errorf("start bgp: %w", err)
	}
	watchCtx, stop := context.WithCancel(context.Background())
	err = s.srv.WatchEvent(watchCtx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true},
		}},
	}, s.onEvent)
	if err != nil {
		stop()
		return fmt.Errorf("watch bgp events: %w", err)
	}
	s.stop = stop
	s.started = true
	s.log.Info("bgp speaker started", "routerID", s.cfg.RouterID, "as", s.cfg.AS, "listenPort", s.cfg.ListenPort)
	return nil
}

// Close deletes every neighbour with a Cease and closes the listeners
// (GoBGP's StopBgp). It is for tests and deliberate teardown only: the agent
// must not call it on shutdown, because the Cease makes the peers drop this
// node's routes instead of keeping them for the graceful-restart time (see
// the package doc). GoBGP's management goroutine keeps running afterwards.
func (s *Speaker) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closed {
		s.closed = true
		return nil
	}
	s.closed = true
	s.started = false
	err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	s.stop()
	if err != nil {
		return fmt.Errorf("stop bgp: %w", err)
	}
	return nil
}

// SetAdvertisements makes the locally originated IPv4 unicast paths equal to
// desired, all with next hop nextHop and origin IGP: it adds the missing (or
// those whose next hop changed, which replaces the path) and withdraws the
// rest. Calling it twice with the same input does nothing the second time.
func (s *Speaker) SetAdvertisements(ctx context.Context, desired []netip.Prefix, nextHop netip.Addr) error {
	if !nextHop.Is4() {
		return fmt.Errorf("set advertisements: next hop %s is not IPv4", nextHop)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set advertisements: speaker not started")
	}
	want := make(map[netip.Prefix]struct{}, len(desired))
	var errs []error
	for _, p := range desired {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("advertise %s: not an IPv4 prefix", p))
			continue
		}
		want[p.Masked()] = struct{}{}
	}
	// Add before withdraw: a replacement covering prefix is out before the
	// old one goes.
	for p := range want {
		if nh, ok := s.adverts[p]; ok && nh == nextHop {
			continue
		}
		path, err := localPath(p, nextHop, false)
		if err == nil {
			_, err = s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		s.adverts[p] = nextHop
		s.log.Debug("advertised", "prefix", p, "nextHop", nextHop)
	}
	for p, nh := range s.adverts {
		if _, ok := want[p]; ok {
			continue
		}
		path, err := localPath(p, nh, true)
		if err == nil {
			err = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.adverts, p)
		s.log.Debug("withdrawn", "prefix", p)
	}
	return errors.Join(errs...)
}

func localPath(p netip.Prefix, nextHop netip.Addr, withdraw bool) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	nh, err := anypb.New(&api.NextHopAttribute{NextHop: nextHop.String()})
	if err != nil {
		return nil, err
	}
	return &api.Path{
		Family:     ipv4Unicast,
		Nlri:       nlri,
		Pattrs:     []*anypb.Any{origin, nh},
		IsWithdraw: withdraw,
	}, nil
}

// Learned returns a copy of the current best paths learned from peers,
// as folded from the best-path watch (GoBGP's table is never walked for it).
func (s *Speaker) Learned() map[netip.Prefix]Route {
	s.learnedMu.Lock()
	defer s.learnedMu.Unlock()
	out := make(map[netip.Prefix]Route, len(s.learned))
	for k, v := range s.learned {
		out[k] = v
	}
	return out
}

// Changed receives a value (coalesced) after Learned has changed or a
// session changed state. The consumer reads Learned (and Status) when
// poked; several changes may arrive as one poke.
func (s *Speaker) Changed() <-chan struct{} { return s.changed }

// onEvent runs on GoBGP's watch goroutine. It only folds the event into the
// learned map under a short lock and pokes Changed; it never blocks.
func (s *Speaker) onEvent(ev *api.WatchEventResponse) {
	if pe := ev.GetPeer(); pe != nil {
		st := pe.GetPeer().GetState()
		if pe.GetType() == api.WatchEventResponse_PeerEvent_STATE {
			s.log.Info("peer state", "peer", st.GetNeighborAddress(), "state", sessionState(st.GetSessionState()))
			s.poke()
		}
		return
	}
	paths := ev.GetTable().GetPaths()
	if len(paths) == 0 {
		return
	}
	changed := false
	s.learnedMu.Lock()
	// Paths are applied in order, so the last word on a prefix wins when one
	// event carries both a withdraw and an update for it. A withdraw removes
	// the entry only if it came from the peer the entry is from: a withdraw
	// of an older best path must not remove its replacement.
	for _, p := range paths {
		r, withdraw, ok := s.routeFromPath(p)
		if !ok {
			s.log.Debug("best path skipped", "neighbor", p.GetNeighborIp(), "sourceAS", p.GetSourceAsn(), "family", p.GetFamily().String())
			continue
		}
		cur, have := s.learned[r.Prefix]
		switch {
		case withdraw && have && cur.PeerAddr == r.PeerAddr:
			delete(s.learned, r.Prefix)
			changed = true
		case !withdraw && (!have || cur != r):
			s.learned[r.Prefix] = r
			changed = true
		}
	}
	s.learnedMu.Unlock()
	if changed {
		s.poke()
	}
}

// poke signals Changed without blocking (one pending signal is enough).
func (s *Speaker) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// routeFromPath decodes an IPv4 unicast path learned from a peer. It reports
// ok=false for other families, End-of-RIB markers, locally originated paths
// (those have no source neighbour: GoBGP v3 leaves NeighborIp empty and
// SourceAsn 0 for paths added through AddPath) and undecodable paths.
func (s *Speaker) routeFromPath(p *api.Path) (r Route, withdraw, ok bool) {
	f := p.GetFamily()
	if f.GetAfi() != api.Family_AFI_IP || f.GetSafi() != api.Family_SAFI_UNICAST || p.GetNlri() == nil {
		return Route{}, false, false
	}
	peer, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil || peer.IsUnspecified() || p.GetSourceAsn() == 0 {
		return Route{}, false, false
	}
	var nlri api.IPAddressPrefix
	if err := p.GetNlri().UnmarshalTo(&nlri); err != nil {
		s.log.Debug("skip path: nlri", "err", err)
		return Route{}, false, false
	}
	addr, err := netip.ParseAddr(nlri.GetPrefix())
	if err != nil {
		return Route{}, false, false
	}
	prefix, err := addr.Prefix(int(nlri.GetPrefixLen()))
	if err != nil {
		return Route{}, false, false
	}
	r = Route{Prefix: prefix, PeerAddr: peer.Unmap()}
	for _, a := range p.GetPattrs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			r.NextHop, _ = netip.ParseAddr(v.GetNextHop())
		case *api.MpReachNLRIAttribute:
			if nh := v.GetNextHops(); len(nh) > 0 {
				r.NextHop, _ = netip.ParseAddr(nh[0])
			}
		case *api.AsPathAttribute:
			for _, seg := range v.GetSegments() {
				r.ASPathLen += len(seg.GetNumbers())
			}
		}
	}
	return r, p.GetIsWithdraw(), true
}

// PeerStatus describes one configured neighbour.
type PeerStatus struct {
	Address netip.Addr
	AS      uint32
	// State is the BGP FSM state in lower case ("idle", "connect", "active",
	// "opensent", "openconfirm", "established").
	State string
	// Since is when the session last became established (zero if never).
	Since time.Time
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

// Status lists the neighbours with their session state. It asks GoBGP's
// management loop once, so it is for the debug API and readiness, not for
// hot paths.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	st := Status{RouterID: s.cfg.RouterID, AS: s.cfg.AS}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return st, nil
	}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		ps := PeerStatus{
			AS:    p.GetState().GetPeerAsn(),
			State: sessionState(p.GetState().GetSessionState()),
		}
		ps.Address, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if ps.AS == 0 {
			ps.AS = p.GetConf().GetPeerAsn()
		}
		if ts := p.GetTimers().GetState(); ts != nil {
			ps.NegotiatedHoldSeconds = ts.GetNegotiatedHoldTime()
			ps.KeepaliveSeconds = ts.GetKeepaliveInterval()
			if up := ts.GetUptime(); up != nil && ps.State == "established" {
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

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}
