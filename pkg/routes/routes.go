// Package routes reconciles the IPv4 routes Wren owns in one kernel routing
// table: blackholes for own IPAM blocks, /32 routes to local pods, and
// routes to remote nodes' blocks over a tunnel or the underlay.
//
// Ownership is the route protocol: every route Wren writes carries Protocol
// ("proto wren" once /etc/iproute2/rt_protos.d/wren.conf is installed), the
// kernel is listed filtered by that protocol, and deletes name the protocol
// so the kernel itself refuses to remove anybody else's route. A route with
// another protocol is never modified or removed, even inside a pod pool.
//
// Set stores the desired state and does no I/O; Apply lists the kernel,
// diffs, writes additions and changes before removals, and returns the
// joined per-route errors. The first Apply after start is the orphan
// sweep: own routes left by a previous run that are no longer wanted go.
package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// Protocol is Wren's route protocol number (rtm_protocol). 87 is unused by
// the kernel's and iproute2's registered protocols and by the routing
// daemons we share nodes with (BIRD 12, Calico felix 80, BGP 186-192); the
// install step writes "87 wren" to /etc/iproute2/rt_protos.d/wren.conf so
// "ip route" prints "proto wren".
const Protocol = 87

// ProtocolName is the name iproute2 shows for Protocol.
const ProtocolName = "wren"

// MainTable is the kernel's main routing table (RT_TABLE_MAIN).
const MainTable = 254

// Kernel constants used in KRoute; they match linux/rtnetlink.h.
const (
	TypeUnicast   = 1   // RTN_UNICAST
	TypeBlackhole = 6   // RTN_BLACKHOLE
	ScopeUniverse = 0   // RT_SCOPE_UNIVERSE
	ScopeLink     = 253 // RT_SCOPE_LINK
	FlagOnLink    = 4   // RTNH_F_ONLINK
)

// KRoute is a route as the kernel holds it, reduced to the attributes Wren
// compares. (Dst, Tos, Priority) within Table is the kernel's route key.
type KRoute struct {
	Dst      netip.Prefix
	Table    uint32
	Protocol uint8
	Tos      uint8
	Priority uint32
	Type     uint8
	Scope    uint8
	Flags    uint32 // only FlagOnLink is kept
	Gw       netip.Addr
	Oif      int
	MTU      uint32
}

// Same reports whether k and o are the same route (protocol aside).
func (k KRoute) Same(o KRoute) bool {
	return k.Dst == o.Dst && k.Table == o.Table && k.Tos == o.Tos && k.Priority == o.Priority &&
		k.Type == o.Type && k.Scope == o.Scope && k.Flags&FlagOnLink == o.Flags&FlagOnLink &&
		k.Gw == o.Gw && k.Oif == o.Oif && k.MTU == o.MTU
}

// Op is one kernel write. With neither flag it is an exclusive add, which
// fails with EEXIST if a foreign route holds the key; Replace rewrites a
// route Wren listed as its own; Delete removes one of its own routes.
type Op struct {
	Delete  bool
	Replace bool
	Route   KRoute
}

// Kernel is what the reconciler needs from the kernel. The Linux
// implementation (NewKernel) batches writes; tests use a fake.
type Kernel interface {
	// Links maps link names to indexes.
	Links() (map[string]int, error)
	// List calls fn for every IPv4 route of table with protocol proto.
	List(table uint32, proto uint8, fn func(KRoute)) error
	// Write performs ops in order and returns one error (or nil) per op.
	// An add of a route whose key is already taken fails with EEXIST;
	// deleting a missing route is a success.
	Write(ops []Op) []error
}

// Config configures a Reconciler.
type Config struct {
	// Table is the routing table; 0 means MainTable.
	Table uint32
	// Protocol marks owned routes; 0 means Protocol.
	Protocol uint8
	// Logger receives state transitions at Info and per-route lines at Debug.
	Logger *slog.Logger
	// Observe, if set, gets the counters of every Apply and Delta that
	// wrote to the kernel (the agent's metrics: write errors, repairs).
	// It is called on the writer's goroutine and must not block.
	Observe func(Stats)
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Table == 0 {
		c.Table = MainTable
	}
	if c.Protocol == 0 {
		c.Protocol = Protocol
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observe == nil {
		c.Observe = func(Stats) {}
	}
}

// Validate rejects protocols that belong to the kernel or to routing
// daemons Wren must coexist with.
func (c Config) Validate() error {
	switch {
	case c.Protocol <= 4:
		return fmt.Errorf("route protocol %d is reserved for the kernel (0-4)", c.Protocol)
	case c.Protocol == 11 || c.Protocol == 12 || c.Protocol == 80 || (c.Protocol >= 186 && c.Protocol <= 192):
		return fmt.Errorf("route protocol %d belongs to another routing daemon (zebra 11, bird 12, calico 80, 186-192)", c.Protocol)
	case c.Table == 255 || c.Table == 253:
		return fmt.Errorf("route table %d is the kernel's local/default table", c.Table)
	}
	return nil
}

// Stats describes the last Apply (or, passed to Config.Observe, one
// Delta, which only adds, replaces and deletes).
type Stats struct {
	Listed    int // own routes found in the kernel
	Unchanged int // own routes already right
	Added     int // routes written that did not exist
	Replaced  int // own routes rewritten
	Deleted   int // own routes removed
	Held      int // desired routes not written (missing device); kernel state kept
	Errors    int // failed routes
	// Repaired counts the routes among Added and Replaced that the kernel
	// had lost or changed although nothing in the desired state changed:
	// Wren had them in place (written, or found right) after the previous
	// Apply, and someone deleted them by hand, a link going down took
	// them, or another program rewrote them.
	Repaired int
	Duration time.Duration // wall time of Apply
}

// Reconciler owns the routes of one table that carry one protocol.
// Apply must be called from one goroutine at a time (the loop); Set may be
// called from any.
type Reconciler struct {
	cfg Config
	k   Kernel

	mu         sync.Mutex
	plan       *plan
	stats      Stats
	pins       map[uint64]netip.Prefix // written by AddNow, not yet in a Set
	programmed [kindSlots]int          // routes in place by kind, as of the last Apply and the Deltas since

	// placed holds, by key4, the mark of every desired route that the last
	// Apply (and the Deltas since) left in the kernel: what Apply compares
	// a missing or changed route with to tell a repair from a change of
	// the desired state. Pointer-free, like the plan's index. The
	// writer's (applyMu).
	placed map[uint64]uint64

	// Scratch reused by Apply so a 100k-route resync allocates little.
	applyMu sync.Mutex
	want    []KRoute
	state   []uint8
	ops     []Op
	dels    []Op
	marks   []uint64       // Delta: the mark of each upsert in ops (0 for a delete)
	links   map[string]int // the devices as the last Apply (or Delta re-list) found them
}

// kindSlots sizes arrays indexed by model.RouteKind (1 to 4).
const kindSlots = int(model.RouteRemoteDirect) + 1

// mark identifies a route as written: a hash of the kernel attributes
// Apply compares, with the route's kind in the low byte (so a mark is
// never 0). Two different routes may share a mark; the cost is one repair
// not counted.
func mark(k KRoute, kind model.RouteKind) uint64 {
	var gw uint64
	if k.Gw.Is4() {
		a := k.Gw.As4()
		gw = uint64(a[0])<<24 | uint64(a[1])<<16 | uint64(a[2])<<8 | uint64(a[3])
	}
	h := uint64(14695981039346656037) // FNV-1a over 64-bit words
	for _, v := range [...]uint64{key4(k.Dst), uint64(k.Type), uint64(k.Scope), uint64(k.Flags & FlagOnLink),
		gw, uint64(k.Oif), uint64(k.MTU), uint64(k.Tos), uint64(k.Priority)} {
		h ^= v
		h *= 1099511628211
	}
	return h&^0xff | uint64(kind)
}

// plan is one validated desired set; immutable once built by Set.
type plan struct {
	routes []model.Route
	index  map[uint64]int32 // key4(dst) -> position in routes
	errs   []error
}

// key4 packs an IPv4 prefix into a map key without pointers, which keeps
// the index cheap to hash and invisible to the garbage collector.
func key4(p netip.Prefix) uint64 {
	a := p.Addr().As4()
	return uint64(a[0])<<32 | uint64(a[1])<<24 | uint64(a[2])<<16 | uint64(a[3])<<8 | uint64(p.Bits())
}

// Per-Apply state of a desired route.
const (
	stHeld uint8 = iota // device missing: keep the kernel's route as is
	stWant              // to be added unless found in the kernel
	stSeen              // found in the kernel (unchanged or replaced)
)

// New returns a reconciler; cfg is defaulted and must validate.
func New(cfg Config, k Kernel) (*Reconciler, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Reconciler{cfg: cfg, k: k, plan: &plan{index: map[uint64]int32{}}, pins: map[uint64]netip.Prefix{},
		placed: map[uint64]uint64{}}, nil
}

// Set replaces the desired routes. It does no I/O. Invalid routes and
// duplicate destinations are reported by the next Apply (naming the route)
// and left out; the rest is kept.
func (r *Reconciler) Set(rs []model.Route) {
	p := &plan{routes: make([]model.Route, 0, len(rs)), index: make(map[uint64]int32, len(rs))}
	for _, rt := range rs {
		if err := rt.Validate(); err != nil {
			p.errs = append(p.errs, err)
			continue
		}
		k := key4(rt.Dst)
		if i, dup := p.index[k]; dup {
			if prev := p.routes[i]; prev != rt {
				p.errs = append(p.errs, fmt.Errorf("route %s: conflicts with %s for the same destination; keeping the first", rt, prev))
			}
			continue
		}
		p.index[k] = int32(len(p.routes))
		p.routes = append(p.routes, rt)
	}
	r.mu.Lock()
	r.plan = p
	for k := range r.pins {
		if _, ok := p.index[k]; ok {
			delete(r.pins, k) // the loop has it now
		}
	}
	r.mu.Unlock()
}

// LastStats returns the counters of the last Apply.
func (r *Reconciler) LastStats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Programmed counts the desired routes in the kernel by kind (every kind,
// zeros included): those the last Apply found right or wrote without an
// error, with the changes of the Deltas since. Held routes and failed
// writes are not counted. Safe from any goroutine.
func (r *Reconciler) Programmed() map[model.RouteKind]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[model.RouteKind]int, kindSlots-1)
	for k := model.RouteBlackhole; int(k) < kindSlots; k++ {
		out[k] = r.programmed[k]
	}
	return out
}

// kroute turns a desired route into its kernel form.
func (r *Reconciler) kroute(rt model.Route, links map[string]int) (KRoute, error) {
	k := KRoute{Dst: rt.Dst, Table: r.cfg.Table, Protocol: r.cfg.Protocol, MTU: uint32(rt.MTU)}
	switch rt.Kind {
	case model.RouteBlackhole:
		k.Type, k.Scope = TypeBlackhole, ScopeUniverse
		return k, nil
	case model.RoutePod:
		k.Type, k.Scope = TypeUnicast, ScopeLink
	case model.RouteRemoteTunnel:
		// Tunnel devices carry only a /32, so no gateway is "on link"
		// by subnet: onlink tells the kernel to trust us.
		k.Type, k.Scope, k.Gw, k.Flags = TypeUnicast, ScopeUniverse, rt.Gateway, FlagOnLink
	case model.RouteRemoteDirect:
		k.Type, k.Scope, k.Gw = TypeUnicast, ScopeUniverse, rt.Gateway
		if rt.OnLink {
			k.Flags = FlagOnLink
		}
	}
	idx, ok := links[rt.Device]
	if !ok {
		return k, fmt.Errorf("route %s: device %s does not exist", rt, rt.Device)
	}
	k.Oif = idx
	return k, nil
}

// Apply makes the kernel's own routes equal to the desired set.
func (r *Reconciler) Apply(ctx context.Context) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	start := time.Now()
	r.mu.Lock()
	p := r.plan
	r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	errs := append([]error(nil), p.errs...)
	var st Stats

	links, err := r.k.Links()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	r.links = links
	n := len(p.routes)
	r.want = slices.Grow(r.want[:0], n)[:n]
	r.state = slices.Grow(r.state[:0], n)[:n]
	want, state := r.want, r.state
	for i, rt := range p.routes {
		k, err := r.kroute(rt, links)
		if err != nil {
			// Keep whatever the kernel has for dst: the device may be
			// on its way (a pod being created), and deleting now would
			// only cause a gap.
			state[i] = stHeld
			st.Held++
			errs = append(errs, err)
			continue
		}
		want[i], state[i] = k, stWant
	}

	ops, dels := r.ops[:0], r.dels[:0]
	listErr := r.k.List(r.cfg.Table, r.cfg.Protocol, func(cur KRoute) {
		st.Listed++
		if cur.Tos == 0 && cur.Priority == 0 {
			if i, ok := p.index[key4(cur.Dst)]; ok && state[i] != stSeen {
				if state[i] == stHeld {
					return
				}
				state[i] = stSeen
				if want[i].Same(cur) {
					st.Unchanged++
				} else {
					ops = append(ops, Op{Replace: true, Route: want[i]})
					st.Replaced++
					if r.placed[key4(cur.Dst)] == mark(want[i], p.routes[i].Kind) {
						st.Repaired++ // changed behind our back
					}
				}
				return
			}
		}
		dels = append(dels, Op{Delete: true, Route: cur})
	})
	// Routes AddNow wrote are read after the listing: one in the list was
	// pinned before it was written, so it is seen here and kept.
	r.mu.Lock()
	if len(r.pins) > 0 {
		dels = slices.DeleteFunc(dels, func(op Op) bool {
			_, pinned := r.pins[key4(op.Route.Dst)]
			return pinned && op.Route.Tos == 0 && op.Route.Priority == 0
		})
	}
	r.mu.Unlock()
	r.dels = dels
	if listErr != nil {
		r.ops = ops
		return errors.Join(append(errs, fmt.Errorf("list routes of table %d proto %d: %w", r.cfg.Table, r.cfg.Protocol, listErr))...)
	}
	for i := range state {
		if state[i] == stWant {
			ops = append(ops, Op{Route: want[i]})
			st.Added++
			if r.placed[key4(want[i].Dst)] == mark(want[i], p.routes[i].Kind) {
				st.Repaired++ // in place after the last Apply, gone now
			}
		}
	}
	// Additions and changes go first, so a replaced path never leaves a
	// gap; the kernel writer keeps that order.
	ops = append(ops, dels...)
	r.ops = ops
	st.Deleted = len(dels)
	var failed map[uint64]bool // rare: allocated on the first failure
	if len(ops) > 0 {
		for i, err := range r.k.Write(ops) {
			if err == nil {
				if r.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
					r.cfg.Logger.Debug("route written", "op", opName(ops[i]), "route", ops[i].Route.String())
				}
				continue
			}
			st.Errors++
			errs = append(errs, fmt.Errorf("%s route %s: %w", opName(ops[i]), ops[i].Route, explain(err)))
			if !ops[i].Delete {
				if failed == nil {
					failed = map[uint64]bool{}
				}
				failed[key4(ops[i].Route.Dst)] = true
			}
		}
	}
	// What is in place now: the routes found right or written. Updated
	// in place (a resync of 100k unchanged routes only reads the map).
	var counts [kindSlots]int
	placed := 0
	for i, s := range state {
		if s == stHeld {
			continue // want[i] was not built
		}
		key := key4(want[i].Dst)
		if failed[key] {
			continue
		}
		kind := p.routes[i].Kind
		if m := mark(want[i], kind); r.placed[key] != m {
			r.placed[key] = m
		}
		counts[kind]++
		placed++
	}
	if len(r.placed) != placed {
		for key := range r.placed {
			if i, ok := p.index[key]; !ok || state[i] == stHeld || failed[key] {
				delete(r.placed, key)
			}
		}
	}
	st.Duration = time.Since(start)
	r.mu.Lock()
	r.stats = st
	r.programmed = counts
	r.mu.Unlock()
	if len(ops) > 0 {
		r.cfg.Observe(st)
	}
	if len(ops) > 0 || st.Errors > 0 {
		r.cfg.Logger.Info("routes applied", "added", st.Added, "replaced", st.Replaced, "deleted", st.Deleted,
			"unchanged", st.Unchanged, "held", st.Held, "errors", st.Errors, "repaired", st.Repaired, "took", st.Duration)
	}
	return errors.Join(errs...)
}

// AddNow writes rt at once through the device with index oif, ahead of
// the next Apply: the route to a pod whose veth was just created, so the
// pod is reachable without waiting for a full resync. It is an exclusive
// add: a route that already holds the destination (ours from an earlier
// ADD, or a foreign one) is left as it is, and the next Apply reconciles
// or reports it. The route is pinned: no Apply deletes it until a Set
// includes its destination, or Unpin.
func (r *Reconciler) AddNow(rt model.Route, oif int) error {
	if err := rt.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	r.pins[key4(rt.Dst)] = rt.Dst
	r.mu.Unlock()
	k, err := r.kroute(rt, map[string]int{rt.Device: oif})
	if err != nil {
		return err
	}
	if err := r.k.Write([]Op{{Route: k}})[0]; err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add route %s: %w", k, explain(err))
	}
	return nil
}

// Pin keeps whatever route the kernel has for dst, as AddNow does, before
// it is written: no Apply deletes it until a Set includes dst, or Unpin.
func (r *Reconciler) Pin(dst netip.Prefix) {
	r.mu.Lock()
	r.pins[key4(dst)] = dst
	r.mu.Unlock()
}

// Unpin drops AddNow's pin of dst (the ADD failed, or DEL removed the pod).
func (r *Reconciler) Unpin(dst netip.Prefix) {
	r.mu.Lock()
	delete(r.pins, key4(dst))
	r.mu.Unlock()
}

func opName(op Op) string {
	switch {
	case op.Delete:
		return "delete"
	case op.Replace:
		return "replace"
	}
	return "add"
}

// explain turns kernel errnos into advice an operator can act on.
func explain(err error) error {
	switch {
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("another route (not proto %s) holds this destination and Wren leaves foreign routes alone; delete it to let Wren program its route: %w", ProtocolName, err)
	case errors.Is(err, syscall.ENETDOWN):
		return fmt.Errorf("device is down; retried when it comes up: %w", err)
	}
	return err
}

// String renders a kernel route for errors and logs.
func (k KRoute) String() string {
	s := k.Dst.String()
	if k.Type == TypeBlackhole {
		s = "blackhole " + s
	}
	if k.Gw.IsValid() {
		s += " via " + k.Gw.String()
	}
	if k.Oif != 0 {
		s += fmt.Sprintf(" oif %d", k.Oif)
	}
	if k.Scope == ScopeLink {
		s += " scope link"
	}
	if k.Flags&FlagOnLink != 0 {
		s += " onlink"
	}
	if k.Priority != 0 {
		s += fmt.Sprintf(" metric %d", k.Priority)
	}
	if k.MTU != 0 {
		s += fmt.Sprintf(" mtu %d", k.MTU)
	}
	return s
}
