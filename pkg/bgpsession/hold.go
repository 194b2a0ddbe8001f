package bgpsession

import (
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
)

// hold keeps the routes BGP does not announce (any more) but the kernel
// should still have: those found in the kernel at start and those withdrawn
// while a window holds them or the cluster vouches for them. Routes BGP
// announces are not copied here; the speaker has them.
type hold struct {
	held map[netip.Prefix]heldRoute
}

type heldRoute struct {
	r     model.LearnedRoute
	since time.Time // since when BGP no longer announces it; zero: seeded, not yet looked at
}

func newHold() hold { return hold{held: map[netip.Prefix]heldRoute{}} }

func (h *hold) seed(rs []model.LearnedRoute) {
	for _, r := range rs {
		if _, ok := h.held[r.Prefix]; !ok {
			h.held[r.Prefix] = heldRoute{r: r}
		}
	}
}

// nextExpiry is when the earliest vouched route runs out of lossHold after
// now (zero if none).
func (h *hold) nextExpiry(now time.Time, lossHold time.Duration) time.Time {
	var t time.Time
	for _, x := range h.held {
		if x.since.IsZero() {
			continue
		}
		if e := x.since.Add(lossHold); e.After(now) && (t.IsZero() || e.Before(t)) {
			t = e
		}
	}
	return t
}

// keep decides whether a route BGP no longer announces stays: while a
// window is open if its peer is windowed, else for lossHold if the cluster
// vouches for it. A route from any other peer goes as soon as BGP
// withdraws it, so a dead node is not kept alive by a window its own death
// holds open.
func (c *Controller) keep(now time.Time, x heldRoute, vouched func(model.LearnedRoute) bool) bool {
	if c.holding(now) && c.windowed(now, x.r.Peer) {
		return true
	}
	return vouched != nil && now.Sub(x.since) < c.cfg.LossHold && vouched(x.r)
}

// Merge returns the routes to install on a full rebuild: every learned
// route plus the held routes that stay (see keep), sorted by prefix. The
// speaker's pending changes must have gone through Filter first: a copy
// of the table does not show what was withdrawn. A
// learned path replaces a held one for the same prefix. vouched reports
// whether the cluster still backs a route (nil: none).
func (c *Controller) Merge(learned map[netip.Prefix]bgpspeaker.Route, vouched func(model.LearnedRoute) bool) []model.LearnedRoute {
	now := c.cfg.Now()
	out := make([]model.LearnedRoute, 0, len(learned)+len(c.hold.held))
	for p, r := range learned {
		out = append(out, model.LearnedRoute{Prefix: p, NextHop: r.NextHop, Peer: r.PeerAddr})
	}
	for p, x := range c.hold.held {
		if _, ok := learned[p]; ok {
			delete(c.hold.held, p)
			continue
		}
		if x.since.IsZero() {
			x.since = now
			c.hold.held[p] = x
		}
		if c.keep(now, x, vouched) {
			out = append(out, x.r)
			continue
		}
		delete(c.hold.held, p)
	}
	slices.SortFunc(out, func(a, b model.LearnedRoute) int { return a.Prefix.Compare(b.Prefix) })
	return out
}

// HeldRoute is a learned route the controller keeps in the kernel though
// BGP no longer announces it (see Filter and Merge).
type HeldRoute struct {
	Route model.LearnedRoute
	// Since is when BGP stopped announcing it; zero for a route kept from
	// the previous run that no session has confirmed or withdrawn yet.
	Since time.Time
}

// Held lists the routes held now, by prefix.
func (c *Controller) Held() []HeldRoute {
	out := make([]HeldRoute, 0, len(c.hold.held))
	for _, h := range c.hold.held {
		out = append(out, HeldRoute{Route: h.r, Since: h.since})
	}
	slices.SortFunc(out, func(a, b HeldRoute) int { return a.Route.Prefix.Compare(b.Route.Prefix) })
	return out
}

// bigBatch is the size above which Filter's reused buffers are dropped
// rather than kept for the next batch: only a whole peer table is that big.
const bigBatch = 1 << 14

// Filter turns a batch of best-path changes (bgpspeaker.Speaker.Drain) into
// routes to install and prefixes to remove, holding withdrawals as Merge
// would. Held routes that expire later are removed by the full rebuild at
// Result.Wake. The slices it returns are valid until the next Filter.
func (c *Controller) Filter(changes []bgpspeaker.Change, vouched func(model.LearnedRoute) bool) (up []model.LearnedRoute, down []netip.Prefix) {
	now := c.cfg.Now()
	if cap(c.filterUp) > bigBatch || cap(c.filterDown) > bigBatch {
		c.filterUp, c.filterDown = nil, nil // a whole table went through: give it back
	}
	up, down = c.filterUp[:0], c.filterDown[:0]
	defer func() { c.filterUp, c.filterDown = up, down }()
	for _, ch := range changes {
		r := model.LearnedRoute{Prefix: ch.Prefix, NextHop: ch.Route.NextHop, Peer: ch.Route.PeerAddr}
		if !ch.Withdrawn {
			if len(c.hold.held) > 0 {
				delete(c.hold.held, ch.Prefix)
			}
			up = append(up, r)
			continue
		}
		x, ok := c.hold.held[ch.Prefix]
		if !ok || x.since.IsZero() {
			x = heldRoute{r: r, since: now}
		}
		if c.keep(now, x, vouched) {
			c.hold.held[ch.Prefix] = x
			continue
		}
		delete(c.hold.held, ch.Prefix)
		down = append(down, ch.Prefix)
	}
	return up, down
}
