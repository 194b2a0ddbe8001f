//go:build linux

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// The agent is measured from the outside, through the interfaces it is
// built on: its CNI Handler (wrapped before cniserver serves it), its
// Cluster and the IPAM Store it writes through. That splits a Wren ADD
// into exec + gRPC, API calls and the rest (veth, pod side, route),
// without touching pkg/agent.

// Span kinds.
const (
	kindAdd   = "add"   // Handler.Add
	kindDel   = "del"   // Handler.Del
	kindStore = "store" // one ipam.Store call (a request to the API server)
	kindCache = "cache" // one read of the informer cache through the store
	kindSync  = "sync"  // one agent sync: Cluster.Pools() .. Cluster.BGPPeers()
)

type span struct {
	op         string
	start, end time.Time
}

func (s span) dur() time.Duration { return s.end.Sub(s.start) }

// tracer records spans by kind.
type tracer struct {
	mu        sync.Mutex
	spans     map[string][]span
	syncStart time.Time
}

func (t *tracer) record(kind, op string, start time.Time) {
	end := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spans == nil {
		t.spans = map[string][]span{}
	}
	t.spans[kind] = append(t.spans[kind], span{op: op, start: start, end: end})
}

func (t *tracer) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.spans = nil
}

func (t *tracer) count(kind string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.spans[kind])
}

func (t *tracer) get(kind string, i int) (span, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i >= len(t.spans[kind]) {
		return span{}, false
	}
	return t.spans[kind][i], true
}

// within returns the spans of kind that lie inside outer.
func (t *tracer) within(kind string, outer span) []span {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []span
	for _, s := range t.spans[kind] {
		if !s.start.Before(outer.start) && !s.end.After(outer.end) {
			out = append(out, s)
		}
	}
	return out
}

func (t *tracer) all(kind string) []span {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.spans[kind])
}

// timedHandler times the agent's CNI calls.
type timedHandler struct {
	cniserver.Handler
	tr *tracer
}

func (h *timedHandler) Add(ctx context.Context, req cniserver.AddRequest) (cniserver.Result, error) {
	defer h.tr.record(kindAdd, "", time.Now())
	return h.Handler.Add(ctx, req)
}

func (h *timedHandler) Del(ctx context.Context, req cniserver.DelRequest) error {
	defer h.tr.record(kindDel, "", time.Now())
	return h.Handler.Del(ctx, req)
}

// timedCluster marks the agent's syncs and hands out a timed store. A
// sync (agent.syncOnce) is the only caller of Pools() and of BGPPeers(),
// its first cache read after Nodes() and its last step.
type timedCluster struct {
	agent.Cluster
	store ipam.Store
	tr    *tracer
}

func (c *timedCluster) IPAMStore() ipam.Store { return c.store }

func (c *timedCluster) Pools() ([]model.Pool, error) {
	c.tr.mu.Lock()
	c.tr.syncStart = time.Now()
	c.tr.mu.Unlock()
	return c.Cluster.Pools()
}

func (c *timedCluster) BGPPeers() ([]model.BGPPeer, error) {
	ps, err := c.Cluster.BGPPeers()
	c.tr.mu.Lock()
	start := c.tr.syncStart
	c.tr.mu.Unlock()
	if !start.IsZero() {
		c.tr.record(kindSync, "", start)
	}
	return ps, err
}

// timedStore times every IPAM request to the API server.
type timedStore struct {
	ipam.Store
	tr *tracer
}

// The allocator reads a CachedStore's cache first: a method missing here
// would send every read to the API server.
var _ ipam.CachedStore = (*timedStore)(nil)

func (s *timedStore) ListPools(ctx context.Context) ([]model.Pool, error) {
	defer s.tr.record(kindStore, "ListPools", time.Now())
	return s.Store.ListPools(ctx)
}

func (s *timedStore) ListBlocks(ctx context.Context) ([]ipam.Block, error) {
	defer s.tr.record(kindStore, "ListBlocks", time.Now())
	return s.Store.ListBlocks(ctx)
}

// CachedBlocks, CachedPools and CachedSettings pass the informer cache
// through (the agent's allocator reads it first); they are counted, not
// API requests.
func (s *timedStore) CachedBlocks(ctx context.Context) ([]ipam.Block, error) {
	defer s.tr.record(kindCache, "CachedBlocks", time.Now())
	return s.Store.(ipam.CachedStore).CachedBlocks(ctx)
}

func (s *timedStore) CachedPools(ctx context.Context) ([]model.Pool, error) {
	defer s.tr.record(kindCache, "CachedPools", time.Now())
	return s.Store.(ipam.CachedStore).CachedPools(ctx)
}

func (s *timedStore) CachedSettings(ctx context.Context) (ipam.Settings, error) {
	defer s.tr.record(kindCache, "CachedSettings", time.Now())
	return s.Store.(ipam.CachedStore).CachedSettings(ctx)
}

func (s *timedStore) GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error) {
	defer s.tr.record(kindStore, "GetBlock", time.Now())
	return s.Store.GetBlock(ctx, cidr)
}

func (s *timedStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	defer s.tr.record(kindStore, "CreateBlock", time.Now())
	return s.Store.CreateBlock(ctx, b)
}

func (s *timedStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	defer s.tr.record(kindStore, "UpdateBlock", time.Now())
	return s.Store.UpdateBlock(ctx, b)
}

func (s *timedStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	defer s.tr.record(kindStore, "DeleteBlock", time.Now())
	return s.Store.DeleteBlock(ctx, b)
}

// wrenBreakdown splits Wren's ADD and DEL latencies into parts.
type wrenBreakdown struct {
	add struct {
		total, exec, api, other, ping stats
	}
	del struct {
		total, exec, api, other stats
	}
	syncDur  stats
	storeOps map[string]*stats
}

// addCall splits the ADD whose agent call is the n-th add span.
func (w *wrenBreakdown) addCall(tr *tracer, n int, at addTiming) {
	sp, ok := tr.get(kindAdd, n)
	if !ok {
		return
	}
	a := &w.add
	a.total.add(at.pingable)
	a.exec.add(at.returned - sp.dur())
	a.ping.add(at.pingable - at.returned)
	var api time.Duration
	for _, s := range tr.within(kindStore, sp) {
		api += s.dur()
	}
	a.api.add(api)
	a.other.add(sp.dur() - api)
}

// delCall splits the DEL whose agent call is the n-th del span.
func (w *wrenBreakdown) delCall(tr *tracer, n int, took time.Duration) {
	sp, ok := tr.get(kindDel, n)
	if !ok {
		return
	}
	d := &w.del
	d.total.add(took)
	d.exec.add(took - sp.dur())
	var api time.Duration
	for _, s := range tr.within(kindStore, sp) {
		api += s.dur()
	}
	d.api.add(api)
	d.other.add(sp.dur() - api)
}

// syncs collects sync durations and per-request API latencies of a round.
func (w *wrenBreakdown) syncs(tr *tracer) {
	for _, s := range tr.all(kindSync) {
		w.syncDur.add(s.dur())
	}
	if w.storeOps == nil {
		w.storeOps = map[string]*stats{}
	}
	for _, s := range append(tr.all(kindStore), tr.all(kindCache)...) {
		if w.storeOps[s.op] == nil {
			w.storeOps[s.op] = &stats{}
		}
		w.storeOps[s.op].add(s.dur())
	}
}

func (w *wrenBreakdown) String() string {
	var b strings.Builder
	row := func(label string, s *stats) {
		fmt.Fprintf(&b, "  %-46s %6d %8s %8s %8s %8s\n", label, s.n(), ms(s.mean()), ms(s.pct(50)), ms(s.pct(99)), ms(s.max()))
	}
	fmt.Fprintf(&b, "wren ADD -> pingable, by part (ms; means add up to the total):\n")
	fmt.Fprintf(&b, "  %-46s %6s %8s %8s %8s %8s\n", "", "n", "mean", "p50", "p99", "max")
	a := &w.add
	row("total", &a.total)
	row("exec wren-cni + gRPC (outside the agent)", &a.exec)
	row("IPAM API requests", &a.api)
	row("veth + pod side + route, rest inside the agent", &a.other)
	row("ping after the plugin returned", &a.ping)
	fmt.Fprintf(&b, "wren DEL, by part (ms):\n")
	d := &w.del
	row("total", &d.total)
	row("exec wren-cni + gRPC (outside the agent)", &d.exec)
	row("IPAM API requests", &d.api)
	row("veth teardown, rest inside the agent", &d.other)
	fmt.Fprintf(&b, "agent loop, API requests and cache reads over the run (ms):\n")
	row("sync (Pools .. BGPPeers)", &w.syncDur)
	ops := make([]string, 0, len(w.storeOps))
	for op := range w.storeOps {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		kind := "API "
		if strings.HasPrefix(op, "Cached") {
			kind = "cache "
		}
		row(kind+op, w.storeOps[op])
	}
	return b.String()
}
