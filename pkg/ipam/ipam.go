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
	"time"
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
	PoolSelected func(Pool) bool
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// Logger gets one line per claim, release and borrow.
	Logger *slog.Logger
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
		c.PoolSelected = func(p Pool) bool {
			return !p.Disabled && (p.NodeSelector == "" || p.NodeSelector == "all()")
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
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

// Allocator allocates addresses for one node.
type Allocator struct {
	cfg   Config
	store Store
}

// New returns an allocator; cfg is defaulted and validated.
func New(cfg Config, store Store) (*Allocator, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Allocator{cfg: cfg, store: store}, nil
}

// Request asks for one address.
type Request struct {
	Namespace, Pod, ContainerID string
	// Handle overrides the default "namespace/pod/containerID" handle,
	// for node addresses such as the VXLAN tunnel address.
	Handle string
}

func (r Request) handle() string {
	if r.Handle != "" {
		return r.Handle
	}
	return r.Namespace + "/" + r.Pod + "/" + r.ContainerID
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
	var lastErr error
	for attempt := 0; attempt < a.cfg.Retries; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		res, err := a.allocateOnce(ctx, req, h)
		if err == nil || !retryable(err) {
			return res, err
		}
		lastErr = err
	}
	return Result{}, fmt.Errorf("allocate for %s: gave up after %d conflicting attempts: %w", h, a.cfg.Retries, lastErr)
}

func retryable(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound)
}

func (a *Allocator) allocateOnce(ctx context.Context, req Request, h string) (Result, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("list blocks: %w", err)
	}
	pools, err := a.selectedPools(ctx)
	if err != nil {
		return Result{}, err
	}
	// Idempotence: the handle already holds an address.
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Handle == h {
				return Result{IP: al.IP, Block: b.CIDR, Borrowed: b.Affinity != a.cfg.Node}, nil
			}
		}
	}
	inPools := func(b Block) bool {
		return slices.ContainsFunc(pools, func(p Pool) bool { return p.CIDR.Contains(b.CIDR.Addr()) })
	}
	// 1. A free address in a confirmed block of our own.
	for _, b := range sortedBlocks(blocks) {
		if b.Affinity == a.cfg.Node && b.State == StateConfirmed && b.Free() > 0 && inPools(b) {
			return a.allocateIn(ctx, b, req, h, false)
		}
	}
	// 2. Our own unfinished claim: confirm it, then allocate.
	for _, b := range blocks {
		if b.Affinity == a.cfg.Node && b.State == StatePending && inPools(b) {
			cb, err := a.confirm(ctx, b)
			if err != nil {
				return Result{}, err
			}
			return a.allocateIn(ctx, cb, req, h, false)
		}
	}
	// 3. Claim a new block.
	if b, ok := a.freeBlock(pools, blocks); ok {
		cb, err := a.claim(ctx, b)
		if err != nil {
			return Result{}, err
		}
		return a.allocateIn(ctx, cb, req, h, false)
	}
	// 4. Borrow from another node's block.
	for _, b := range sortedBlocks(blocks) {
		if b.Affinity != a.cfg.Node && b.State == StateConfirmed && b.Free() > 0 && inPools(b) {
			return a.allocateIn(ctx, b, req, h, true)
		}
	}
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = fmt.Sprintf("%s (%s)", p.Name, p.CIDR)
	}
	if len(names) == 0 {
		return Result{}, fmt.Errorf("%w: no enabled IPPool selects node %s; create an IPPool or fix its nodeSelector", ErrExhausted, a.cfg.Node)
	}
	return Result{}, fmt.Errorf("%w: every address of %s is allocated; add an IPPool or free addresses", ErrExhausted, strings.Join(names, ", "))
}

func (a *Allocator) selectedPools(ctx context.Context) ([]Pool, error) {
	all, err := a.store.ListPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var ps []Pool
	for _, p := range all {
		if a.cfg.PoolSelected(p) && p.CIDR.IsValid() {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(x, y Pool) int { return strings.Compare(x.Name, y.Name) })
	return ps, nil
}

// sortedBlocks orders blocks by address so allocation fills the lowest
// block first, deterministically.
func sortedBlocks(bs []Block) []Block {
	out := slices.Clone(bs)
	slices.SortFunc(out, func(x, y Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
	return out
}

// freeBlock finds the lowest block CIDR of a selected pool that no block
// object uses yet and that overlaps none.
func (a *Allocator) freeBlock(pools []Pool, blocks []Block) (netip.Prefix, bool) {
	for _, p := range pools {
		bs := p.BlockSize
		if bs == 0 {
			bs = 26
		}
		if bs < p.CIDR.Bits() || bs > 32 {
			continue
		}
		n := 1 << (bs - p.CIDR.Bits())
		base := p.CIDR.Masked().Addr().As4()
		start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		step := uint32(1) << (32 - bs)
		for i := 0; i < n; i++ {
			v := start + uint32(i)*step
			c := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bs)
			if !slices.ContainsFunc(blocks, func(b Block) bool { return b.CIDR.Overlaps(c) }) {
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
	a.cfg.Logger.Info("claimed block", "block", cidr, "node", a.cfg.Node)
	return a.confirm(ctx, b)
}

func (a *Allocator) confirm(ctx context.Context, b Block) (Block, error) {
	b.State = StateConfirmed
	cb, err := a.store.UpdateBlock(ctx, b)
	if err != nil {
		return Block{}, fmt.Errorf("confirm block %s: %w", b.CIDR, err)
	}
	return cb, nil
}

// allocateIn writes the lowest free address of b for h.
func (a *Allocator) allocateIn(ctx context.Context, b Block, req Request, h string, borrowed bool) (Result, error) {
	ip, ok := lowestFree(b)
	if !ok {
		return Result{}, fmt.Errorf("block %s: %w (full)", b.CIDR, ErrConflict)
	}
	b.Allocations = append(slices.Clone(b.Allocations), Allocation{IP: ip, Handle: h, Namespace: req.Namespace, Pod: req.Pod,
		ContainerID: req.ContainerID, Node: a.cfg.Node})
	slices.SortFunc(b.Allocations, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	b.EmptySince = time.Time{}
	if _, err := a.store.UpdateBlock(ctx, b); err != nil {
		return Result{}, fmt.Errorf("allocate %s in block %s: %w", ip, b.CIDR, err)
	}
	if borrowed {
		a.cfg.Logger.Info("borrowed address", "ip", ip, "block", b.CIDR, "owner", b.Affinity, "handle", h)
	}
	return Result{IP: ip, Block: b.CIDR, Borrowed: borrowed}, nil
}

func lowestFree(b Block) (netip.Addr, bool) {
	used := make(map[netip.Addr]bool, len(b.Allocations))
	for _, al := range b.Allocations {
		used[al.IP] = true
	}
	ip := b.CIDR.Masked().Addr()
	for i := 0; i < size(b.CIDR); i++ {
		if !used[ip] {
			return ip, true
		}
		ip = ip.Next()
	}
	return netip.Addr{}, false
}

// Release frees the address held by handle. Releasing an unknown handle
// succeeds, so a repeated CNI DEL is harmless.
func (a *Allocator) Release(ctx context.Context, handle string) error {
	var lastErr error
	for attempt := 0; attempt < a.cfg.Retries; attempt++ {
		blocks, err := a.store.ListBlocks(ctx)
		if err != nil {
			return fmt.Errorf("list blocks: %w", err)
		}
		found := false
		for _, b := range blocks {
			i := slices.IndexFunc(b.Allocations, func(al Allocation) bool { return al.Handle == handle })
			if i < 0 {
				continue
			}
			found = true
			b.Allocations = slices.Delete(slices.Clone(b.Allocations), i, i+1)
			if _, err := a.store.UpdateBlock(ctx, b); err != nil {
				lastErr = fmt.Errorf("release %s from block %s: %w", handle, b.CIDR, err)
				break
			}
			return nil
		}
		if !found {
			return nil
		}
		if !retryable(lastErr) {
			return lastErr
		}
	}
	return fmt.Errorf("gave up after %d conflicting attempts: %w", a.cfg.Retries, lastErr)
}

// ReleaseEmptyBlocks releases this node's blocks that have been empty for
// the grace period, and stamps newly empty ones. It returns the released
// CIDRs. Conflicts are skipped (the next run sees fresh state).
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context) ([]netip.Prefix, error) {
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
			_, err = a.store.UpdateBlock(ctx, b)
		case now.Sub(b.EmptySince) >= a.cfg.ReleaseGrace:
			err = a.store.DeleteBlock(ctx, b)
			if err == nil {
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
// exists (podExists reports it; node addresses with a custom handle are
// kept). It returns the released handles.
func (a *Allocator) GC(ctx context.Context, podExists func(namespace, pod string) bool) ([]string, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	var gone []string
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Node == a.cfg.Node && al.Pod != "" && !podExists(al.Namespace, al.Pod) {
				gone = append(gone, al.Handle)
			}
		}
	}
	var errs []error
	var released []string
	for _, h := range gone {
		if err := a.Release(ctx, h); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, h)
		a.cfg.Logger.Info("released address of a deleted pod", "handle", h)
	}
	return released, errors.Join(errs...)
}

// ReleaseOrphanBlocks deletes blocks whose affinity node no longer exists
// (nodeExists reports it). The node's pods went with it, so its blocks
// and any addresses in them are free again. Any agent may run it: the
// delete is conditional on the version read, so two agents never both
// act on a changed block.
func (a *Allocator) ReleaseOrphanBlocks(ctx context.Context, nodeExists func(string) bool) ([]netip.Prefix, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	var released []netip.Prefix
	var errs []error
	for _, b := range blocks {
		if b.Affinity == "" || nodeExists(b.Affinity) {
			continue
		}
		if err := a.store.DeleteBlock(ctx, b); err != nil {
			if !retryable(err) {
				errs = append(errs, fmt.Errorf("release block %s of deleted node %s: %w", b.CIDR, b.Affinity, err))
			}
			continue
		}
		released = append(released, b.CIDR)
		a.cfg.Logger.Info("released block of a deleted node", "block", b.CIDR, "node", b.Affinity, "addresses", len(b.Allocations))
	}
	return released, errors.Join(errs...)
}
