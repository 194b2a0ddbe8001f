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
// back). Outside such a window a withdrawn route goes at once, so a node
// that is really gone is unrouted everywhere.
//
// It is not safe for concurrent use; the loop owns it.
type routeHold struct {
	until time.Time                           // end of the current window; zero: none
	held  map[netip.Prefix]model.LearnedRoute // last known path per prefix
	seen  map[netip.Prefix]bool               // announced at the last Merge
}

func newRouteHold() *routeHold {
	return &routeHold{held: map[netip.Prefix]model.LearnedRoute{}, seen: map[netip.Prefix]bool{}}
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

// Holding reports whether a window is open at now.
func (h *routeHold) Holding(now time.Time) bool { return now.Before(h.until) }

// Merge returns the routes to install: every learned route, plus, while a
// window is open, the held routes BGP does not announce (any more). A
// learned path replaces a held one for the same prefix.
func (h *routeHold) Merge(now time.Time, learned []model.LearnedRoute) []model.LearnedRoute {
	clear(h.seen)
	out := make([]model.LearnedRoute, 0, len(learned))
	for _, r := range learned {
		h.seen[r.Prefix] = true
		h.held[r.Prefix] = r
		out = append(out, r)
	}
	holding := h.Holding(now)
	for p, r := range h.held {
		switch {
		case h.seen[p]:
		case holding:
			out = append(out, r)
		default:
			delete(h.held, p)
		}
	}
	slices.SortFunc(out, func(a, b model.LearnedRoute) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}
