package bgpspeaker

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
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
//
// GoBGP reports best paths one prefix at a time, so the learned table is
// on the hot path of a peer's whole table: it is kept without pointers (a
// prefix key and an index into a slice of compact slots), which the
// garbage collector never scans and which hashes a word instead of a
// netip.Prefix.
type feed struct {
	mu       sync.Mutex
	index    map[uint64]int32 // prefix key → slots
	slots    []slot
	free     []int32  // unused slots
	dirty    []uint64 // prefixes changed since the last Drain, each once
	learned  int      // slots with a best path now
	sessions map[netip.Addr]*Session
	changed  chan struct{}
	now      func() time.Time
	logPeer  func(addr netip.Addr, state, why string)
	// gen is the generation of the GoBGP server whose watch the feed
	// takes: SetGlobal replaces the server, and the old one's last events
	// (the withdrawals of its peers' routes as it stops) must not reach
	// the table.
	gen uint64
}

// anyGen marks a call that is not from a watch (tests feed events
// directly).
const anyGen = ^uint64(0)

// watch returns the callbacks for the watch of server generation gen.
func (f *feed) watch(gen uint64) server.WatchEventMessageCallbacks {
	return server.WatchEventMessageCallbacks{
		OnBestPath:   func(p []*apiutil.Path, _ time.Time) { f.bestPath(gen, p) },
		OnPathEor:    func(p *apiutil.Path, _ time.Time) { f.eor(gen, p) },
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) { f.peer(gen, ev) },
	}
}

// stale reports whether an event of generation gen comes from a replaced
// server. f.mu is held.
func (f *feed) stale(gen uint64) bool { return gen != anyGen && gen != f.gen }

// reset empties the learned table and the session table for the server of
// generation gen, without marking anything changed: the routes the old
// server learned stay in the kernel (the agent holds them in a new
// start-up window) until the new server's sessions confirm or withdraw
// them.
func (f *feed) reset(gen uint64) {
	f.mu.Lock()
	f.gen = gen
	f.index = make(map[uint64]int32)
	f.slots, f.free, f.dirty = nil, nil, nil
	f.learned = 0
	f.sessions = make(map[netip.Addr]*Session)
	f.mu.Unlock()
	f.poke()
}

// slot is one prefix: its best path now (live), or, until the next Drain,
// the last one it had.
type slot struct {
	key       uint64
	nextHop   addr16
	peer      addr16
	asPathLen int32
	live      bool
	dirty     bool
}

// addr16 is a netip.Addr without the pointer netip keeps for zones.
type addr16 struct {
	a   [16]byte
	is4 bool
	ok  bool
}

func pack(a netip.Addr) addr16 {
	if !a.IsValid() {
		return addr16{}
	}
	return addr16{a: a.As16(), is4: a.Is4(), ok: true}
}

func (a addr16) addr() netip.Addr {
	switch {
	case !a.ok:
		return netip.Addr{}
	case a.is4:
		return netip.AddrFrom16(a.a).Unmap()
	}
	return netip.AddrFrom16(a.a)
}

// prefixKey packs an IPv4 prefix (the feed takes IPv4 unicast only).
func prefixKey(p netip.Prefix) uint64 {
	a := p.Addr().As4()
	return uint64(a[0])<<40 | uint64(a[1])<<32 | uint64(a[2])<<24 | uint64(a[3])<<16 | uint64(p.Bits())
}

func keyPrefix(k uint64) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16)}), int(k&0xff))
}

func (s *slot) route() Route {
	return Route{Prefix: keyPrefix(s.key), NextHop: s.nextHop.addr(), PeerAddr: s.peer.addr(), ASPathLen: int(s.asPathLen)}
}

func newFeed(logPeer func(netip.Addr, string, string)) *feed {
	return &feed{
		index:    make(map[uint64]int32),
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
func (f *feed) onBestPath(paths []*apiutil.Path, _ time.Time) { f.bestPath(anyGen, paths) }

func (f *feed) bestPath(gen uint64, paths []*apiutil.Path) {
	changed := false
	f.mu.Lock()
	if f.stale(gen) {
		f.mu.Unlock()
		return
	}
	for _, p := range paths {
		r, withdraw, ok := routeFromPath(p)
		if !ok {
			continue
		}
		if f.apply(r, withdraw) {
			changed = true
		}
	}
	f.mu.Unlock()
	if changed {
		f.poke()
	}
}

// apply folds one best path (or its withdrawal) into the table and reports
// whether it changed anything. f.mu is held.
func (f *feed) apply(r Route, withdraw bool) bool {
	key := prefixKey(r.Prefix)
	peer := pack(r.PeerAddr)
	i, have := f.index[key]
	var s *slot
	if have {
		s = &f.slots[i]
	}
	switch {
	case withdraw:
		if !have || !s.live || s.peer != peer {
			return false
		}
		s.live = false
		f.learned--
	case have:
		nh := pack(r.NextHop)
		if s.live && s.nextHop == nh && s.peer == peer && s.asPathLen == int32(r.ASPathLen) {
			return false
		}
		if !s.live {
			f.learned++
		}
		s.nextHop, s.peer, s.asPathLen, s.live = nh, peer, int32(r.ASPathLen), true
	default:
		if n := len(f.free); n > 0 {
			i, f.free = f.free[n-1], f.free[:n-1]
		} else {
			i = int32(len(f.slots))
			f.slots = append(f.slots, slot{})
		}
		f.index[key] = i
		s = &f.slots[i]
		*s = slot{key: key, nextHop: pack(r.NextHop), peer: peer, asPathLen: int32(r.ASPathLen), live: true}
		f.learned++
	}
	if !s.dirty {
		s.dirty = true
		f.dirty = append(f.dirty, key)
	}
	return true
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
func (f *feed) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) { f.peer(anyGen, ev) }

func (f *feed) peer(gen uint64, ev *apiutil.WatchEventMessage_PeerEvent) {
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
	if f.stale(gen) {
		f.mu.Unlock()
		return
	}
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
func (f *feed) onEOR(p *apiutil.Path, _ time.Time) { f.eor(anyGen, p) }

func (f *feed) eor(gen uint64, p *apiutil.Path) {
	if p == nil || p.Family != bgp.RF_IPv4_UC || !p.PeerAddress.IsValid() {
		return
	}
	addr := p.PeerAddress.Unmap()
	f.mu.Lock()
	s, ok := f.sessions[addr]
	if f.stale(gen) || !ok || s.State != "established" || !s.EndOfRIB.IsZero() {
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
	out := make(map[netip.Prefix]Route, f.learned)
	for _, i := range f.index {
		if sl := &f.slots[i]; sl.live {
			r := sl.route()
			out[r.Prefix] = r
		}
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
	for _, key := range f.dirty {
		i := f.index[key]
		sl := &f.slots[i]
		sl.dirty = false
		c := Change{Prefix: keyPrefix(key), Route: sl.route(), Withdrawn: !sl.live}
		buf = append(buf, c)
		if !sl.live {
			delete(f.index, key)
			*sl = slot{}
			f.free = append(f.free, i)
		}
	}
	f.dirty = f.dirty[:0]
	if cap(f.dirty) > 4096 {
		// A peer's whole table went through: give the memory back.
		f.dirty = nil
	}
	f.compact()
	f.mu.Unlock()
	return buf
}

// compact gives memory back after a big table went away: when at most a
// quarter of the slots are used, they are packed into a new slice (and
// the index into a new map, since a map keeps its buckets). f.mu is held.
func (f *feed) compact() {
	if len(f.slots) < 4096 || len(f.index)*4 > len(f.slots) {
		return
	}
	slots := make([]slot, 0, len(f.index))
	index := make(map[uint64]int32, len(f.index))
	for _, i := range f.index {
		index[f.slots[i].key] = int32(len(slots))
		slots = append(slots, f.slots[i])
	}
	f.slots, f.index, f.free = slots, index, nil
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
