// Package ipam hands out pod addresses from /26 (by default) blocks of
// IPPools, the way Calico's IPAM does: each node claims whole blocks, so
// its pods' routes aggregate into one route per block, and borrows single
// addresses from other nodes' blocks only when no block is free.
//
// All state lives in a Store (the Kubernetes API in production), so it
// survives agent restarts. Every write is conditional: a block claim is a
// create (exactly one node wins a CIDR) followed by a compare-and-swap
// confirm, and every allocation or release is a compare-and-swap update
// retried on conflict a bounded number of times.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// ErrExhausted is returned when no pool selected for the node has a free
// address, neither in a block of its own, nor a new block, nor borrowed.
var ErrExhausted = errors.New("IP pools exhausted")

// Config configures an Allocator.
type Config struct {
	// Node is the node this allocator claims blocks for.
	Node string
	// Retries bounds the attempts of one operation on conflicts.
	Retries int
	// ReleaseGrace is how long a block must stay empty before its owner
	// releases it (so a pod restart does not churn blocks and routes).
	ReleaseGrace time.Duration
	// PoolSelected reports whether a pool may serve this node. The
	// default accepts enabled pools with an empty or "all()" selector.
	PoolSelected func(model.Pool) bool
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// Logger gets one line per claim, release and borrow.
	Logger *slog.Logger
	// NoFreeBlock, if set, is told each time an allocation found no block
	// it could claim for the node (every block of its pools taken and its
	// own blocks full): borrowed is true when it then took an address from
	// another node's block, false when it failed with ErrExhausted. It
	// feeds the agent's metrics and must not block.
	NoFreeBlock func(borrowed bool)
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Retries == 0 {
		c.Retries = 20
	}
	if c.ReleaseGrace == 0 {
		c.ReleaseGrace = 5 * time.Minute
	}
	if c.PoolSelected == nil {
		c.PoolSelected = func(p model.Pool) bool {
			return !p.Disabled && (p.NodeSelector == "" || p.NodeSelector == "all()")
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.NoFreeBlock == nil {
		c.NoFreeBlock = func(bool) {}
	}
}

// Validate reports a configuration the allocator cannot work with.
func (c Config) Validate() error {
	if c.Node == "" {
		return errors.New("ipam: node name is empty")
	}
	if c.Retries < 1 {
		return fmt.Errorf("ipam: retries %d < 1", c.Retries)
	}
	return nil
}

// Allocator allocates addresses for one node. Its operations are
// serialized: concurrent CNI ADDs on one node would otherwise race each
// other for the same block and retry.
type Allocator struct {
	cfg   Config
	store Store

	mu sync.Mutex
	// written holds the blocks this allocator wrote recently, as it wrote
	// them, until the cache shows that version (or overlayTTL passes): a
	// cache that has not caught up with our own last write must neither
	// hide an allocation (a repeated ADD would get a second address) nor
	// make the next write conflict.
	written map[netip.Prefix]written
}

type written struct {
	b       Block
	deleted bool
	at      time.Time
}

// overlayTTL bounds how long our own write overrides the cache. Informers
// catch up within milliseconds; if the cache shows another version after
// this long, someone wrote after us.
const overlayTTL = 10 * time.Second

// view is a listing of blocks, pools and settings, cached or fresh.
type view struct {
	blocks   []Block
	pools    []model.Pool
	settings Settings
	cached   bool
}

// list returns the cached view (with our own writes laid over it) if the
// store has a cache and fresh is false, else the store's own listing.
func (a *Allocator) list(ctx context.Context, fresh bool) (view, error) {
	cs, ok := a.store.(CachedStore)
	if fresh || !ok {
		blocks, err := a.store.ListBlocks(ctx)
		if err != nil {
			return view{}, fmt.Errorf("list blocks: %w", err)
		}
		pools, err := a.store.ListPools(ctx)
		if err != nil {
			return view{}, fmt.Errorf("list pools: %w", err)
		}
		settings, err := a.store.Settings(ctx)
		if err != nil {
			return view{}, fmt.Errorf("read IPAM settings: %w", err)
		}
		clear(a.written) // the source of truth supersedes them
		return view{blocks: blocks, pools: pools, settings: settings}, nil
	}
	blocks, err := cs.CachedBlocks(ctx)
	if err != nil {
		return view{}, fmt.Errorf("list cached blocks: %w", err)
	}
	pools, err := cs.CachedPools(ctx)
	if err != nil {
		return view{}, fmt.Errorf("list cached pools: %w", err)
	}
	settings, err := cs.CachedSettings(ctx)
	if err != nil {
		return view{}, fmt.Errorf("read cached IPAM settings: %w", err)
	}
	now := a.cfg.Now()
	out := make([]Block, 0, len(blocks)+len(a.written))
	seen := map[netip.Prefix]bool{}
	for _, b := range blocks {
		w, ok := a.written[b.CIDR]
		switch {
		case !ok:
			out = append(out, b)
		case b.Version == w.b.Version || now.Sub(w.at) > overlayTTL:
			delete(a.written, b.CIDR) // the cache caught up (or someone wrote after us)
			out = append(out, b)
		case !w.deleted:
			out = append(out, w.b)
		}
		seen[b.CIDR] = true
	}
	for cidr, w := range a.written {
		switch {
		case seen[cidr]:
		case w.deleted || now.Sub(w.at) > overlayTTL:
			delete(a.written, cidr)
		default:
			out = append(out, w.b) // created by us, not cached yet
		}
	}
	return view{blocks: out, pools: pools, settings: settings, cached: true}, nil
}

// wrote records a block this allocator wrote (or deleted).
func (a *Allocator) wrote(b Block, deleted bool) {
	if _, ok := a.store.(CachedStore); !ok {
		return
	}
	a.written[b.CIDR] = written{b: b, deleted: deleted, at: a.cfg.Now()}
}

// New returns an allocator; cfg is defaulted and validated.
func New(cfg Config, store Store) (*Allocator, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Allocator{cfg: cfg, store: store, written: map[netip.Prefix]written{}}, nil
}

// Request asks for one address.
type Request struct {
	Namespace, Pod, ContainerID string
	// Handle overrides the pod's handle (PodHandle), for a node's own
	// address such as its VXLAN tunnel address (NodeHandle).
	Handle string
	// Choice is what the pod asked for by annotation: an address or
	// pools. The zero value lets IPAM choose.
	Choice Choice
}

func (r Request) handle() string {
	if r.Handle != "" {
		return r.Handle
	}
	return PodHandle(r.Namespace, r.Pod, r.ContainerID)
}

// Result is an allocated address and the block it came from.
type Result struct {
	IP       netip.Addr
	Block    netip.Prefix
	Borrowed bool // the block belongs to another node
}

// Allocate returns an address for req. It is idempotent: a request with
// the handle of an existing allocation returns that allocation, so a CNI
// ADD repeated for the same container gets the same IP.
func (a *Allocator) Allocate(ctx context.Context, req Request) (Result, error) {
	h := req.handle()
	a.mu.Lock()
	defer a.mu.Unlock()
	var lastErr error
	fresh := false
	for attempt := 0; attempt < a.cfg.Retries; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		v, err := a.list(ctx, fresh)
		if err != nil {
			return Result{}, err
		}
		res, err := a.allocateOnce(ctx, v, req, h)
		if err == nil {
			return res, nil
		}
		if v.cached && (errors.Is(err, ErrExhausted) || errors.Is(err, ErrRefused)) {
			// Never report exhaustion or refuse a request from a
			// cache: the address may have been released, the
			// reservation or the pool changed a moment ago.
			fresh = true
			continue
		}
		if errors.Is(err, ErrExhausted) {
			a.cfg.NoFreeBlock(false)
		}
		if !retryable(err) {
			return res, err
		}
		lastErr = err
		fresh = true
	}
	return Result{}, fmt.Errorf("allocate for %s: gave up after %d conflicting attempts: %w", h, a.cfg.Retries, lastErr)
}

func retryable(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound)
}

func (a *Allocator) allocateOnce(ctx context.Context, v view, req Request, h string) (Result, error) {
	blocks := v.blocks
	// Idempotence: the handle already holds an address.
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Handle == h {
				return Result{IP: al.IP, Block: b.CIDR, Borrowed: b.Affinity != a.cfg.Node}, nil
			}
		}
	}
	if req.Choice.IP.IsValid() {
		return a.allocateAddr(ctx, v, req, h)
	}
	pools, err := a.choosePools(v.pools, req.Choice)
	if err != nil {
		return Result{}, err
	}
	rs := reserved(v.settings.Reservations)
	inPools := func(b Block) bool {
		return slices.ContainsFunc(pools, func(p model.Pool) bool { return p.CIDR.Contains(b.CIDR.Addr()) })
	}
	usable := func(b Block) bool { return inPools(b) && available(b, rs) > 0 }
	// 1. A free address in a confirmed block of our own.
	for _, b := range sortedBlocks(blocks) {
		if b.Affinity == a.cfg.Node && b.State == StateConfirmed && usable(b) {
			return a.allocateIn(ctx, b, req, h, false, rs)
		}
	}
	// 2. Our own unfinished claim: confirm it, then allocate.
	for _, b := range blocks {
		if b.Affinity == a.cfg.Node && b.State == StatePending && usable(b) {
			cb, err := a.confirm(ctx, b)
			if err != nil {
				return Result{}, err
			}
			return a.allocateIn(ctx, cb, req, h, false, rs)
		}
	}
	// 3. Claim a new block, unless the node holds maxBlocksPerHost.
	own, limit := a.ownBlocks(blocks), v.settings.MaxBlocksPerHost
	atLimit := limit > 0 && own >= limit
	if !atLimit {
		if b, ok := a.freeBlock(pools, blocks, rs); ok {
			cb, err := a.claim(ctx, b)
			if err != nil {
				return Result{}, err
			}
			return a.allocateIn(ctx, cb, req, h, false, rs)
		}
	}
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = fmt.Sprintf("%s (%s)", p.Name, p.CIDR)
	}
	if len(names) == 0 {
		return Result{}, fmt.Errorf("%w: no enabled IPPool selects node %s; create an IPPool or fix its nodeSelector", ErrExhausted, a.cfg.Node)
	}
	// 4. Borrow from another node's block, unless strictAffinity.
	if v.settings.StrictAffinity {
		why := fmt.Sprintf("every block of %s is taken", strings.Join(names, ", "))
		if atLimit {
			why = fmt.Sprintf("it already holds %d blocks (maxBlocksPerHost %d)", own, limit)
		}
		return Result{}, fmt.Errorf("%w: node %s has no free address in its own blocks and may claim no new block (%s), and strictAffinity in IPAMConfiguration default forbids borrowing from other nodes' blocks; turn strictAffinity off, raise maxBlocksPerHost, add an IPPool or free addresses",
			ErrExhausted, a.cfg.Node, why)
	}
	for _, b := range sortedBlocks(blocks) {
		if b.Affinity != a.cfg.Node && b.State == StateConfirmed && usable(b) {
			res, err := a.allocateIn(ctx, b, req, h, true, rs)
			if err == nil {
				a.cfg.NoFreeBlock(true)
			}
			return res, err
		}
	}
	if atLimit {
		return Result{}, fmt.Errorf("%w: node %s already holds %d blocks (maxBlocksPerHost %d in IPAMConfiguration default), they are full, and no other node's block of %s has a free address; raise maxBlocksPerHost, add an IPPool or free addresses",
			ErrExhausted, a.cfg.Node, own, limit, strings.Join(names, ", "))
	}
	return Result{}, fmt.Errorf("%w: every address of %s is allocated or reserved; add an IPPool or free addresses", ErrExhausted, strings.Join(names, ", "))
}

func (a *Allocator) selectedPools(all []model.Pool) []model.Pool {
	var ps []model.Pool
	for _, p := range all {
		if a.cfg.PoolSelected(p) && p.CIDR.IsValid() {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(x, y model.Pool) int { return strings.Compare(x.Name, y.Name) })
	return ps
}

// sortedBlocks orders blocks by address so allocation fills the lowest
// block first, deterministically.
func sortedBlocks(bs []Block) []Block {
	out := slices.Clone(bs)
	slices.SortFunc(out, func(x, y Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	return out
}

// freeBlock finds the lowest block CIDR of a selected pool that no block
// object uses yet, that overlaps none, and that is not wholly reserved.
func (a *Allocator) freeBlock(pools []model.Pool, blocks []Block, rs reserved) (netip.Prefix, bool) {
	for _, p := range pools {
		bs := p.BlockSize
		if bs == 0 {
			bs = model.DefaultBlockSize
		}
		if bs < p.CIDR.Bits() || bs > model.MaxBlockSize {
			continue // pkg/cluster never lists such a pool; a test store might
		}
		n := 1 << (bs - p.CIDR.Bits())
		base := p.CIDR.Masked().Addr().As4()
		start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		step := uint32(1) << (32 - bs)
		for i := 0; i < n; i++ {
			v := start + uint32(i)*step
			c := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bs)
			if !slices.ContainsFunc(blocks, func(b Block) bool { return b.CIDR.Overlaps(c) }) && available(Block{CIDR: c}, rs) > 0 {
				return c, true
			}
		}
	}
	return netip.Prefix{}, false
}

// claim creates the block as pending for this node and confirms it.
func (a *Allocator) claim(ctx context.Context, cidr netip.Prefix) (Block, error) {
	b, err := a.store.CreateBlock(ctx, Block{CIDR: cidr, Affinity: a.cfg.Node, State: StatePending})
	if err != nil {
		return Block{}, fmt.Errorf("claim block %s: %w", cidr, err)
	}
	a.wrote(b, false)
	a.cfg.Logger.Info("claimed block", "block", cidr, "node", a.cfg.Node)
	return a.confirm(ctx, b)
}

func (a *Allocator) confirm(ctx context.Context, b Block) (Block, error) {
	b.State = StateConfirmed
	cb, err := a.store.UpdateBlock(ctx, b)
	if err != nil {
		return Block{}, fmt.Errorf("confirm block %s: %w", b.CIDR, err)
	}
	a.wrote(cb, false)
	return cb, nil
}

// allocateIn writes the lowest free, unreserved address of b for h.
func (a *Allocator) allocateIn(ctx context.Context, b Block, req Request, h string, borrowed bool, rs reserved) (Result, error) {
	ip, ok := lowestFree(b, rs)
	if !ok {
		return Result{}, fmt.Errorf("block %s: %w (full)", b.CIDR, ErrConflict)
	}
	return a.allocateAt(ctx, b, ip, req, h, borrowed)
}

// allocateAt writes ip (free in b) for h.
func (a *Allocator) allocateAt(ctx context.Context, b Block, ip netip.Addr, req Request, h string, borrowed bool) (Result, error) {
	b.Allocations = append(slices.Clone(b.Allocations), Allocation{IP: ip, Handle: h, Namespace: req.Namespace, Pod: req.Pod,
		ContainerID: req.ContainerID, Node: a.cfg.Node})
	slices.SortFunc(b.Allocations, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	b.EmptySince = time.Time{}
	nb, err := a.store.UpdateBlock(ctx, b)
	if err != nil {
		return Result{}, fmt.Errorf("allocate %s in block %s: %w", ip, b.CIDR, err)
	}
	a.wrote(nb, false)
	if borrowed {
		a.cfg.Logger.Info("borrowed address", "ip", ip, "block", b.CIDR, "owner", b.Affinity, "handle", h)
	}
	return Result{IP: ip, Block: b.CIDR, Borrowed: borrowed}, nil
}

// lowestFree returns the lowest address of b that is neither allocated
// nor reserved.
func lowestFree(b Block, rs reserved) (netip.Addr, bool) {
	used := make(map[netip.Addr]bool, len(b.Allocations))
	for _, al := range b.Allocations {
		used[al.IP] = true
	}
	over := rs.within(b.CIDR)
	ip := b.CIDR.Masked().Addr()
	for i := 0; i < size(b.CIDR); i++ {
		if _, res := over.find(ip); !used[ip] && !res {
			return ip, true
		}
		ip = ip.Next()
	}
	return netip.Addr{}, false
}

// Release frees the address held by handle. Releasing an unknown handle
// succeeds, so a repeated CNI DEL is harmless.
func (a *Allocator) Release(ctx context.Context, handle string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.release(ctx, handle)
}

func (a *Allocator) release(ctx context.Context, handle string) error {
	var lastErr error
	fresh := false
	for attempt := 0; attempt < a.cfg.Retries; attempt++ {
		v, err := a.list(ctx, fresh)
		if err != nil {
			return err
		}
		b, i, found := findHandle(v.blocks, handle)
		if !found {
			if v.cached {
				fresh = true // make sure: the cache may lag
				continue
			}
			return nil
		}
		b.Allocations = slices.Delete(slices.Clone(b.Allocations), i, i+1)
		nb, err := a.store.UpdateBlock(ctx, b)
		if err == nil {
			a.wrote(nb, false)
			return nil
		}
		lastErr = fmt.Errorf("release %s from block %s: %w", handle, b.CIDR, err)
		if !retryable(err) {
			return lastErr
		}
		fresh = true
	}
	return fmt.Errorf("gave up after %d conflicting attempts: %w", a.cfg.Retries, lastErr)
}

func findHandle(blocks []Block, handle string) (Block, int, bool) {
	for _, b := range blocks {
		if i := slices.IndexFunc(b.Allocations, func(al Allocation) bool { return al.Handle == handle }); i >= 0 {
			return b, i, true
		}
	}
	return Block{}, 0, false
}

// Find returns this node's allocation that match accepts (the cache
// first, then the store if the cache has none).
func (a *Allocator) Find(ctx context.Context, match func(Allocation) bool) (Allocation, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, fresh := range []bool{false, true} {
		v, err := a.list(ctx, fresh)
		if err != nil {
			return Allocation{}, false, err
		}
		for _, b := range v.blocks {
			for _, al := range b.Allocations {
				if al.Node == a.cfg.Node && match(al) {
					return al, true, nil
				}
			}
		}
		if !v.cached {
			break
		}
	}
	return Allocation{}, false, nil
}

// ReleaseEmptyBlocks releases this node's blocks that have been empty for
// the grace period, and stamps newly empty ones. It returns the released
// CIDRs. Conflicts are skipped (the next run sees fresh state).
//
// It reads the blocks from the store itself, never a cache, and every
// stamp and delete is conditional on the version read: an allocation made
// after the read changes the version, so the delete fails with a conflict
// instead of freeing a block that is in use again.
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context) ([]netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	now := a.cfg.Now()
	var released []netip.Prefix
	var errs []error
	for _, b := range blocks {
		if b.Affinity != a.cfg.Node || len(b.Allocations) > 0 {
			continue
		}
		switch {
		case b.EmptySince.IsZero():
			b.EmptySince = now
			var nb Block
			if nb, err = a.store.UpdateBlock(ctx, b); err == nil {
				a.wrote(nb, false)
			}
		case now.Sub(b.EmptySince) >= a.cfg.ReleaseGrace:
			err = a.store.DeleteBlock(ctx, b)
			if err == nil {
				a.wrote(b, true)
				released = append(released, b.CIDR)
				a.cfg.Logger.Info("released empty block", "block", b.CIDR, "emptyFor", now.Sub(b.EmptySince).Round(time.Second))
			}
		default:
			continue
		}
		if err != nil && !retryable(err) {
			errs = append(errs, fmt.Errorf("block %s: %w", b.CIDR, err))
		}
	}
	return released, errors.Join(errs...)
}

// GC releases pod addresses allocated for this node whose pod no longer
// exists (node addresses with a custom handle are kept). It returns the
// released handles.
//
// The blocks come from the store itself; gone decides for each pod and
// must answer true only when the source of truth says the pod does not
// exist (in the agent: an uncached GET that answered NotFound), never from
// a cache: a cache that has not caught up with a pod created a moment ago
// (an informer backing off after an API outage) would free a live pod's
// address, and the next pod would get it too. When unsure, gone says
// false and the address waits for the next run. Releases are by handle
// (which holds the container ID), so a pod of the same name created after
// the check keeps its own address.
func (a *Allocator) GC(ctx context.Context, gone func(ctx context.Context, namespace, pod string) bool) ([]string, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	var candidates []string
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Node == a.cfg.Node && al.Pod != "" && gone(ctx, al.Namespace, al.Pod) {
				candidates = append(candidates, al.Handle)
			}
		}
	}
	var errs []error
	var released []string
	for _, h := range candidates {
		if err := a.Release(ctx, h); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, h)
		a.cfg.Logger.Info("released address of a deleted pod", "handle", h)
	}
	return released, errors.Join(errs...)
}

// ReleaseOrphanBlocks deletes blocks whose affinity node no longer exists.
// The node's pods went with it, so its blocks and any addresses in them
// are free again; a block from which a pod on another, live node borrowed
// an address stays. Any agent may run it: the delete is conditional on the
// version read, so two agents never both act on a changed block.
//
// The blocks come from the store itself; gone must answer true only when
// the source of truth says the node does not exist (an uncached GET that
// answered NotFound), never from a cache that may not show a node that
// joined a moment ago.
func (a *Allocator) ReleaseOrphanBlocks(ctx context.Context, gone func(ctx context.Context, node string) bool) ([]netip.Prefix, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	// One answer per node: a node with many blocks is asked about once.
	answers := map[string]bool{}
	isGone := func(n string) bool {
		g, ok := answers[n]
		if !ok {
			g = gone(ctx, n)
			answers[n] = g
		}
		return g
	}
	var orphans []Block
	for _, b := range blocks {
		if b.Affinity == "" || b.Affinity == a.cfg.Node || !isGone(b.Affinity) {
			continue
		}
		// Addresses borrowed from the block by pods of nodes that still
		// exist are in use: deleting the block would hand them out again.
		if slices.ContainsFunc(b.Allocations, func(al Allocation) bool {
			return al.Node != "" && al.Node != b.Affinity && !isGone(al.Node)
		}) {
			continue
		}
		orphans = append(orphans, b)
	}
	if len(orphans) == 0 {
		return nil, nil
	}
	// The questions above were asked without the lock (CNI requests need
	// it); the deletes below are conditional on the versions listed.
	a.mu.Lock()
	defer a.mu.Unlock()
	var released []netip.Prefix
	var errs []error
	for _, b := range orphans {
		if err := a.store.DeleteBlock(ctx, b); err != nil {
			if !retryable(err) {
				errs = append(errs, fmt.Errorf("release block %s of deleted node %s: %w", b.CIDR, b.Affinity, err))
			}
			continue
		}
		a.wrote(b, true)
		released = append(released, b.CIDR)
		a.cfg.Logger.Info("released block of a deleted node", "block", b.CIDR, "node", b.Affinity, "addresses", len(b.Allocations))
	}
	return released, errors.Join(errs...)
}
