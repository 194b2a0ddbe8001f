package bgpspeaker

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

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

// Change is one prefix whose best path changed since the last Drain: its
// best path now, or, when Withdrawn, the last best path it had (so the
// consumer can still tell where it came from).
type Change struct {
	Prefix    netip.Prefix
	Route     Route
	Withdrawn bool
}

// Session is a neighbour's session as the peer watch saw it. Times are the
// speaker's own clock at the event, with full precision (GoBGP's uptime in
// Status has whole seconds).
type Session struct {
	Address netip.Addr
	// State is the BGP FSM state in lower case ("idle", "connect",
	// "active", "opensent", "openconfirm", "established").
	State string
	// Since is when the session last became established; zero while it is
	// not.
	Since time.Time
	// EndOfRIB is when the neighbour's IPv4 unicast End-of-RIB marker (RFC
	// 4724 §2) arrived in the current session: it has sent its whole
	// table. Zero until then.
	EndOfRIB time.Time
	// Flaps counts the times the session left Established.
	Flaps int
	// LastDown is why the session last left Established ("" if never).
	LastDown string
}

// feed folds GoBGP's watch events (best paths, peer states, End-of-RIB)
// into the learned table and the session table. Its callbacks run on
// GoBGP's watch goroutine: they take a short lock, never block and never
// do I/O; the consumer is poked through changed.
type feed struct {
	mu       sync.Mutex
	learned  map[netip.Prefix]Route
	dirty    map[netip.Prefix]Route // changed since the last Drain, with the last path it had
	sessions map[netip.Addr]*Session
	changed  chan struct{}
	now      func() time.Time
	logPeer  func(addr netip.Addr, state, why string)
}

func newFeed(logPeer func(netip.Addr, string, string)) *feed {
	return &feed{
		learned:  make(map[netip.Prefix]Route),
		dirty:    make(map[netip.Prefix]Route),
		sessions: make(map[netip.Addr]*Session),
		changed:  make(chan struct{}, 1),
		now:      time.Now,
		logPeer:  logPeer,
	}
}

// poke signals changed without blocking (one pending signal is enough).
func (f *feed) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// onBestPath applies best-path changes in order, so the last word on a
// prefix wins when one event carries both a withdraw and an update for it.
// A withdraw removes the entry only if it came from the peer the entry is
// from: a withdraw of an older best path must not remove its replacement.
func (f *feed) onBestPath(paths []*apiutil.Path, _ time.Time) {
	changed := false
	f.mu.Lock()
	for _, p := range paths {
		r, withdraw, ok := routeFromPath(p)
		if !ok {
			continue
		}
		cur, have := f.learned[r.Prefix]
		switch {
		case withdraw && have && cur.PeerAddr == r.PeerAddr:
			delete(f.learned, r.Prefix)
			f.dirty[r.Prefix] = cur
		case !withdraw && (!have || cur != r):
			f.learned[r.Prefix] = r
			f.dirty[r.Prefix] = r
		default:
			continue
		}
		changed = true
	}
	f.mu.Unlock()
	if changed {
		f.poke()
	}
}

// routeFromPath decodes an IPv4 unicast path learned from a peer. It
// reports ok=false for other families, End-of-RIB markers and locally
// originated paths (those have no source peer: PeerASN 0).
func routeFromPath(p *apiutil.Path) (r Route, withdraw, ok bool) {
	if p == nil || p.Family != bgp.RF_IPv4_UC || p.PeerASN == 0 || !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified() {
		return Route{}, false, false
	}
	nlri, isPrefix := p.Nlri.(*bgp.IPAddrPrefix)
	if !isPrefix || !nlri.Prefix.IsValid() {
		return Route{}, false, false
	}
	r = Route{Prefix: nlri.Prefix.Masked(), PeerAddr: p.PeerAddress.Unmap()}
	for _, a := range p.Attrs {
		switch v := a.(type) {
		case *bgp.PathAttributeNextHop:
			r.NextHop = v.Value.Unmap()
		case *bgp.PathAttributeMpReachNLRI:
			if v.Nexthop.IsValid() {
				r.NextHop = v.Nexthop.Unmap()
			}
		case *bgp.PathAttributeAsPath:
			for _, seg := range v.Value {
				r.ASPathLen += len(seg.GetAS())
			}
		}
	}
	return r, p.Withdrawal, true
}

// onPeer tracks session states. Only state changes matter; GoBGP's INIT
// and END_OF_INIT events (the current table of a new watch) carry none.
func (f *feed) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev == nil || ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	addr := st.NeighborAddress.Unmap()
	if !addr.IsValid() {
		addr = ev.Peer.Conf.NeighborAddress.Unmap()
	}
	if !addr.IsValid() {
		return
	}
	state := sessionState(st.SessionState)
	now := f.now()
	f.mu.Lock()
	s, ok := f.sessions[addr]
	if !ok {
		s = &Session{Address: addr}
		f.sessions[addr] = s
	}
	if s.State == state {
		f.mu.Unlock()
		return
	}
	why := ""
	switch {
	case state == "established":
		s.Since, s.EndOfRIB = now, time.Time{}
	case s.State == "established":
		s.Flaps++
		s.Since, s.EndOfRIB = time.Time{}, time.Time{}
		why = disconnectReason(st)
		s.LastDown = why
	}
	s.State = state
	f.mu.Unlock()
	f.logPeer(addr, state, why)
	f.poke()
}

// onEOR records the neighbour's IPv4 unicast End-of-RIB. GoBGP delivers it
// on the same watch, after the best-path changes of the UPDATEs before it.
func (f *feed) onEOR(p *apiutil.Path, _ time.Time) {
	if p == nil || p.Family != bgp.RF_IPv4_UC || !p.PeerAddress.IsValid() {
		return
	}
	addr := p.PeerAddress.Unmap()
	f.mu.Lock()
	s, ok := f.sessions[addr]
	if !ok || s.State != "established" || !s.EndOfRIB.IsZero() {
		f.mu.Unlock()
		return
	}
	s.EndOfRIB = f.now()
	f.mu.Unlock()
	f.poke()
}

// forget drops a deconfigured neighbour's session record.
func (f *feed) forget(addr netip.Addr) {
	f.mu.Lock()
	delete(f.sessions, addr)
	f.mu.Unlock()
}

func sessionState(s bgp.FSMState) string {
	switch s {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

func disconnectReason(st apiutil.PeerState) string {
	if st.DisconnectMessage != "" {
		return st.DisconnectMessage
	}
	return st.DisconnectReason.String()
}

// Learned returns a copy of the current best paths learned from peers, as
// folded from the best-path watch (GoBGP's table is never walked for it).
// It is for full rebuilds; Drain hands out what changed (and what was
// withdrawn, which a copy of the table cannot show).
func (s *Speaker) Learned() map[netip.Prefix]Route {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[netip.Prefix]Route, len(f.learned))
	for k, v := range f.learned {
		out[k] = v
	}
	return out
}

// Drain appends to buf the prefixes whose best path changed since the last
// Drain, each once with its current state, and forgets them. Several
// changes of one prefix between two Drains arrive as one. The order is
// unspecified: the consumer's writes do not depend on it, and sorting a
// 100k burst would be wasted work on the hot path.
func (s *Speaker) Drain(buf []Change) []Change {
	f := s.feed
	f.mu.Lock()
	for p, last := range f.dirty {
		if r, ok := f.learned[p]; ok {
			buf = append(buf, Change{Prefix: p, Route: r})
		} else {
			buf = append(buf, Change{Prefix: p, Route: last, Withdrawn: true})
		}
	}
	f.resetDirty()
	f.mu.Unlock()
	return buf
}

// resetDirty forgets the pending changes. A map keeps its buckets after
// clear, so after a big burst (a peer's whole table) it is replaced and
// the memory goes back to the heap. f.mu is held.
func (f *feed) resetDirty() {
	if len(f.dirty) > 4096 {
		f.dirty = make(map[netip.Prefix]Route)
		return
	}
	clear(f.dirty)
}

// Sessions returns the session table kept from the peer watch, sorted by
// address. It does not ask GoBGP: the loop may call it on every run.
func (s *Speaker) Sessions() []Session {
	f := s.feed
	f.mu.Lock()
	out := make([]Session, 0, len(f.sessions))
	for _, x := range f.sessions {
		out = append(out, *x)
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int { return a.Address.Compare(b.Address) })
	return out
}

// Changed receives a value (coalesced) after a best path, a session state
// or an End-of-RIB changed. The consumer then calls Drain and Sessions;
// several changes may arrive as one poke.
func (s *Speaker) Changed() <-chan struct{} { return s.feed.changed }
