// Package bgpsession decides, over time, which BGP sessions the node's
// speaker has and which learned routes stay in the kernel while BGP is not
// settled. It is the agent's BGP session controller:
//
//   - Set takes the sessions the cluster wants (node-to-node topology and
//     BGPPeer objects); it is pure.
//   - Apply compares them with what the speaker runs and what its peer
//     watch reports (established since when, End-of-RIB received), keeps
//     sessions the topology dropped until their replacements carry their
//     routes (make-before-break), hands the result to the speaker, and says
//     when it must run again (Result.Wake): the loop arms one timer.
//   - Merge (a full rebuild) and Filter (a batch of best-path changes)
//     decide which learned routes the kernel gets: what BGP announces, plus
//     what a window holds — the previous run's routes until every session
//     has sent End-of-RIB (RFC 4724 §4.1) or its restart time has passed,
//     the routes of sessions being reshaped, and for a short time a route
//     the cluster still vouches for.
//
// Time comes from Config.Now and nothing here arms a timer or starts a
// goroutine, so the fake-speaker tests run it under testing/synctest. It is
// not safe for concurrent use: the agent's loop owns it.
package bgpsession

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
)

// Speaker is what the controller needs of the BGP speaker
// (bgpspeaker.Speaker implements it).
type Speaker interface {
	SetPeers(ctx context.Context, peers []bgpspeaker.Peer) error
	// Sessions is the session table of the speaker's peer watch.
	Sessions() []bgpspeaker.Session
	// AdjIn lists the prefixes a peer sent that the import policy
	// accepted; asked only while sessions are being reshaped.
	AdjIn(ctx context.Context, peer netip.Addr) (map[netip.Prefix]bool, error)
}

// Defaults of Config.
const (
	// DefaultReshapeHold bounds make-before-break: sessions the topology
	// no longer wants, and the routes learned through them, stay at most
	// this long while the new sessions come up.
	DefaultReshapeHold = 30 * time.Second
	// DefaultLossHold is how long a withdrawn route the cluster still
	// vouches for stays: a session re-created after a Hard Reset (a route
	// reflector's session to its clients) is back in about 7 s (5 s
	// connect retry, then OPEN).
	DefaultLossHold = 15 * time.Second
	// DefaultRestartTime is the startup bound for a session that does not
	// say its own graceful-restart time.
	DefaultRestartTime = 120 * time.Second
	// recheck is how often a reshape looks at the new sessions' Adj-RIBs-In
	// again: paths that arrive there without becoming best raise no event.
	recheck = 2 * time.Second
)

// Config configures a Controller.
type Config struct {
	Now         func() time.Time
	ReshapeHold time.Duration
	LossHold    time.Duration
	Logger      *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ReshapeHold == 0 {
		c.ReshapeHold = DefaultReshapeHold
	}
	if c.LossHold == 0 {
		c.LossHold = DefaultLossHold
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Want is one session the cluster wants.
type Want struct {
	Name string
	Kind model.SessionKind
	Peer bgpspeaker.Peer
}

// Result is what one Apply decided.
type Result struct {
	// Wake is when Apply (and a full Merge) must run again even if nothing
	// pokes the loop; zero means no time-driven step is pending.
	Wake time.Time
	// Settled: every wanted session is established since it was last
	// (re)created and has sent End-of-RIB, and no session is retiring.
	Settled bool
	// Holding: a window is open (startup or reshape).
	Holding bool
}

type retiring struct {
	w     Want
	until time.Time
}

// Controller is the session controller; see the package doc.
type Controller struct {
	cfg Config
	log *slog.Logger
	sp  Speaker

	want     map[netip.Addr]Want // Set's input
	wanted   map[netip.Addr]Want // the last applied wanted sessions
	retiring map[netip.Addr]retiring
	applied  map[netip.Addr]bgpspeaker.Peer // the last SetPeers input
	created  map[netip.Addr]time.Time       // when SetPeers last (re)created the session

	start        time.Time
	starting     bool      // the startup window is open
	reshapeUntil time.Time // end of the reshape window; zero: none
	up           map[netip.Addr]bgpspeaker.Session
	hold         hold

	// Filter's results, reused from call to call.
	filterUp   []model.LearnedRoute
	filterDown []netip.Prefix
}

// New returns a controller for sp. The startup window opens now: routes
// given to Seed are kept until it closes.
func New(cfg Config, sp Speaker) *Controller {
	cfg.Defaults()
	return &Controller{
		cfg: cfg, log: cfg.Logger.With("component", "bgpsession"), sp: sp,
		want: map[netip.Addr]Want{}, wanted: map[netip.Addr]Want{}, retiring: map[netip.Addr]retiring{},
		applied: map[netip.Addr]bgpspeaker.Peer{}, created: map[netip.Addr]time.Time{},
		start: cfg.Now(), starting: true, up: map[netip.Addr]bgpspeaker.Session{},
		hold: newHold(),
	}
}

// Seed adds the routes found in the kernel at start (the previous run's):
// they stay until the startup window closes.
func (c *Controller) Seed(rs []model.LearnedRoute) { c.hold.seed(rs) }

// Set stores the wanted sessions; it does no I/O. The first Want for an
// address wins.
func (c *Controller) Set(want []Want) {
	c.want = make(map[netip.Addr]Want, len(want))
	for _, w := range want {
		if _, dup := c.want[w.Peer.Address]; !dup {
			c.want[w.Peer.Address] = w
		}
	}
}

// Apply decides the sessions and hands them to the speaker. Errors from
// the speaker are per peer; the rest is applied.
func (c *Controller) Apply(ctx context.Context) (Result, error) {
	now := c.cfg.Now()
	clear(c.up)
	for _, s := range c.sp.Sessions() {
		if s.State == "established" {
			c.up[s.Address] = s
		}
	}

	// A session the topology drops stays, and so do the routes learned
	// through it, until the wanted sessions are up, have sent their tables
	// and carry every prefix it carried, or ReshapeHold passes. A session
	// that is down has nothing to hand over, and a BGPPeer that is deleted
	// goes at once: make-before-break is for reshapes, not for removals.
	reshaped := 0
	for addr, w := range c.wanted {
		if _, still := c.want[addr]; still {
			continue
		}
		if _, isUp := c.up[addr]; !w.Kind.Topology() || !isUp {
			continue
		}
		reshaped++
		if _, ok := c.retiring[addr]; !ok {
			c.retiring[addr] = retiring{w: w, until: now.Add(c.cfg.ReshapeHold)}
		}
	}
	recreated := 0
	for addr, w := range c.want {
		old, ok := c.applied[addr]
		if ok && old == w.Peer {
			continue
		}
		if reset, _ := bgpspeaker.NeedsReset(old, w.Peer); !ok || reset {
			// A session SetPeers (re)creates counts as down from now on.
			c.created[addr] = now
			if ok && w.Kind.Topology() {
				recreated++
			}
		}
	}
	c.wanted = maps.Clone(c.want)
	if reshaped > 0 || recreated > 0 {
		c.reshapeUntil = now.Add(c.cfg.ReshapeHold)
		c.log.Info("bgp sessions reshaping: old sessions stay until the new ones carry their routes",
			"wanted", len(c.want), "retiring", reshaped, "recreated", recreated, "atMost", c.cfg.ReshapeHold)
	}

	settled := true
	for addr := range c.want {
		settled = settled && c.settled(addr)
	}
	covered := c.coverage(ctx)
	for addr, r := range c.retiring {
		_, back := c.want[addr]
		_, isUp := c.up[addr]
		if back || !isUp || now.After(r.until) || settled && covered(addr) {
			delete(c.retiring, addr)
		}
	}

	peers := make([]bgpspeaker.Peer, 0, len(c.want)+len(c.retiring))
	for _, r := range c.retiring {
		peers = append(peers, r.w.Peer)
	}
	for _, w := range c.want {
		peers = append(peers, w.Peer)
	}
	slices.SortFunc(peers, func(a, b bgpspeaker.Peer) int { return a.Address.Compare(b.Address) })
	err := c.sp.SetPeers(ctx, peers)
	clear(c.applied)
	for _, p := range peers {
		c.applied[p.Address] = p
	}
	for addr := range c.created {
		if _, ok := c.applied[addr]; !ok {
			delete(c.created, addr)
		}
	}

	if c.starting && c.startupDone(now) {
		c.starting = false
		c.log.Info("bgp start-up complete: every session sent End-of-RIB or ran out of its restart time; pruning routes BGP no longer announces")
	}
	if settled && len(c.retiring) == 0 && !c.reshapeUntil.IsZero() {
		c.reshapeUntil = time.Time{}
		c.log.Info("bgp sessions reshaped")
	}
	if !c.reshapeUntil.IsZero() && now.After(c.reshapeUntil) {
		c.reshapeUntil = time.Time{}
	}
	res := Result{Settled: settled && len(c.retiring) == 0, Holding: c.holding(now)}
	res.Wake = c.wake(now)
	if err != nil {
		return res, fmt.Errorf("bgp sessions: %w", err)
	}
	return res, nil
}

// settled reports whether a wanted session is established since SetPeers
// last (re)created it and its peer has sent End-of-RIB in it. The times are
// the peer watch's, with full precision: a session that comes up within the
// second it was created settles too.
func (c *Controller) settled(addr netip.Addr) bool {
	s, ok := c.up[addr]
	return ok && s.Since.After(c.created[addr]) && !s.EndOfRIB.IsZero()
}

// startupDone: every wanted session has sent End-of-RIB since start, or its
// restart time (how long its peer keeps our routes, and the longest a
// restart may take) has passed since start.
func (c *Controller) startupDone(now time.Time) bool {
	for addr, w := range c.want {
		if s, ok := c.up[addr]; ok && !s.EndOfRIB.IsZero() {
			continue
		}
		if now.Before(c.start.Add(restartTime(w.Peer))) {
			return false
		}
	}
	return true
}

func restartTime(p bgpspeaker.Peer) time.Duration {
	if p.GracefulRestartSeconds == 0 {
		return DefaultRestartTime
	}
	return time.Duration(p.GracefulRestartSeconds) * time.Second
}

// coverage returns a check of whether every prefix a retiring peer sent is
// also offered by one of the wanted peers, so that dropping it moves those
// prefixes to another path instead of withdrawing them. The wanted peers'
// Adj-RIBs-In are walked at most once per Apply, and only when a retiring
// peer is asked about.
func (c *Controller) coverage(ctx context.Context) func(old netip.Addr) bool {
	var offered map[netip.Prefix]bool
	var offerErr error
	return func(old netip.Addr) bool {
		if offered == nil && offerErr == nil {
			offered = map[netip.Prefix]bool{}
			for addr := range c.want {
				in, err := c.sp.AdjIn(ctx, addr)
				if err != nil {
					offerErr = err
					break
				}
				maps.Copy(offered, in)
			}
		}
		if offerErr != nil {
			return false
		}
		in, err := c.sp.AdjIn(ctx, old)
		if err != nil {
			return false
		}
		for p := range in {
			if !offered[p] {
				return false
			}
		}
		return true
	}
}

// holding reports whether a window is open at now.
func (c *Controller) holding(now time.Time) bool {
	return c.starting || !c.reshapeUntil.IsZero() && now.Before(c.reshapeUntil)
}

// windowed reports whether withdrawals through peer are held while a
// window is open: the peer is retiring, or its session is being
// re-created and is not back yet. Routes without a peer (the previous
// run's) are held in any window.
func (c *Controller) windowed(now time.Time, peer netip.Addr) bool {
	if !peer.IsValid() {
		return true
	}
	if _, ok := c.retiring[peer]; ok {
		return true
	}
	at, ok := c.created[peer]
	if !ok || now.Sub(at) >= c.cfg.ReshapeHold {
		return false
	}
	s, isUp := c.up[peer]
	return !isUp || !s.Since.After(at)
}

// wake is the next time-driven step: the end of a window, a retiring
// session's deadline, a startup deadline, a held route's expiry, and while
// sessions retire a recheck of the new ones.
func (c *Controller) wake(now time.Time) time.Time {
	var t time.Time
	at := func(x time.Time) {
		if x.After(now) && (t.IsZero() || x.Before(t)) {
			t = x
		}
	}
	at(c.reshapeUntil)
	for _, r := range c.retiring {
		at(r.until)
	}
	if len(c.retiring) > 0 {
		at(now.Add(recheck))
	}
	if c.starting {
		for _, w := range c.want {
			at(c.start.Add(restartTime(w.Peer)))
		}
	}
	at(c.hold.nextExpiry(now, c.cfg.LossHold))
	return t
}

// SessionInfo is why a session exists, for the debug API.
type SessionInfo struct {
	Address netip.Addr
	Name    string // the node or BGPPeer it goes to
	Kind    model.SessionKind
	// Retiring: the topology no longer wants it; it is kept until its
	// replacement is up (make-before-break).
	Retiring bool
}

// Sessions lists the sessions of the last Set, and the retiring ones,
// sorted by address.
func (c *Controller) Sessions() []SessionInfo {
	out := make([]SessionInfo, 0, len(c.want)+len(c.retiring))
	for addr, w := range c.want {
		out = append(out, SessionInfo{Address: addr, Name: w.Name, Kind: w.Kind})
	}
	for addr, r := range c.retiring {
		if _, ok := c.want[addr]; !ok {
			out = append(out, SessionInfo{Address: addr, Name: r.w.Name, Kind: r.w.Kind, Retiring: true})
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return a.Address.Compare(b.Address) })
	return out
}

// Retiring lists the sessions kept for make-before-break, for logs and
// the debug API.
func (c *Controller) Retiring() []netip.Addr {
	out := slices.Collect(maps.Keys(c.retiring))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
