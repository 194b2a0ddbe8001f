package agent

import (
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// routeHold keeps BGP-learned routes in the kernel while BGP is not
// settled: after the agent starts (its speaker has learned nothing yet,
// but the kernel still has the routes of the previous run) and while the
// session topology is being reshaped (mesh to route reflectors and
// back). Outside such a window a withdrawn route goes at once unless the
// cluster still vouches for it (the block is confirmed for the node at
// the next hop): such a route is kept for lossHold, which covers a peer
// re-creating its session (a route reflector's session to its clients
// changes with a Hard Reset, which graceful restart does not cover) but
// not a node that is really gone.
//
// It is not safe for concurrent use; the loop owns it.
type routeHold struct {
	until time.Time                           // end of the current window; zero: none
	held  map[netip.Prefix]model.LearnedRoute // last known path per prefix
	gone  map[netip.Prefix]time.Time          // since when BGP no longer announces it
	seen  map[netip.Prefix]bool               // announced at the last Merge
}

// lossHold is how long a withdrawn route the cluster still vouches for
// stays: a session re-created after a Hard Reset is back in about 7 s
// (5 s connect retry, then OPEN).
const lossHold = 15 * time.Second

func newRouteHold() *routeHold {
	return &routeHold{held: map[netip.Prefix]model.LearnedRoute{}, gone: map[netip.Prefix]time.Time{}, seen: map[netip.Prefix]bool{}}
}

// Seed adds routes found in the kernel at start (the previous run's), to
// be kept like learned ones until the window ends.
func (h *routeHold) Seed(rs []model.LearnedRoute) {
	for _, r := range rs {
		if _, ok := h.held[r.Prefix]; !ok {
			h.held[r.Prefix] = r
		}
	}
}

// Extend makes the window last at least until t.
func (h *routeHold) Extend(t time.Time) {
	if t.After(h.until) {
		h.until = t
	}
}

// End closes the window now: the next Merge drops what BGP no longer
// announces.
func (h *routeHold) End() { h.until = time.Time{} }

// NextExpiry is when the earliest held route runs out of lossHold after
// now (zero if none), for the loop to look again then.
func (h *routeHold) NextExpiry(now time.Time) time.Time {
	var t time.Time
	for _, since := range h.gone {
		if e := since.Add(lossHold); e.After(now) && (t.IsZero() || e.Before(t)) {
			t = e
		}
	}
	return t
}

// Holding reports whether a window is open at now.
func (h *routeHold) Holding(now time.Time) bool { return now.Before(h.until) }

// Merge returns the routes to install: every learned route, plus the
// held routes BGP does not announce (any more): while a window is open,
// those found in the kernel at start and those that came from a peer
// windowed reports (nil: none) — the sessions being reshaped; and for
// lossHold those vouched (nil: none) says the cluster still backs. A
// route from any other peer goes as soon as BGP withdraws it, so a dead
// node is not kept alive by a window that its own death holds open. A
// learned path replaces a held one for the same prefix.
func (h *routeHold) Merge(now time.Time, learned []model.LearnedRoute, windowed func(peer netip.Addr) bool, vouched func(model.LearnedRoute) bool) []model.LearnedRoute {
	clear(h.seen)
	out := make([]model.LearnedRoute, 0, len(learned))
	for _, r := range learned {
		h.seen[r.Prefix] = true
		h.held[r.Prefix] = r
		delete(h.gone, r.Prefix)
		out = append(out, r)
	}
	holding := h.Holding(now)
	for p, r := range h.held {
		if h.seen[p] {
			continue
		}
		since, ok := h.gone[p]
		if !ok {
			since = now
			h.gone[p] = now
		}
		inWindow := holding && (!r.Peer.IsValid() || windowed != nil && windowed(r.Peer))
		if inWindow || vouched != nil && now.Sub(since) < lossHold && vouched(r) {
			out = append(out, r)
			continue
		}
		delete(h.held, p)
		delete(h.gone, p)
	}
	slices.SortFunc(out, func(a, b model.LearnedRoute) int { return a.Prefix.Compare(b.Prefix) })
	return out
}
