// Test addresses: pools inside 10.244.0.0/16.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func pool(name, cidr string, bs int) model.Pool {
	return model.Pool{Name: name, CIDR: netip.MustParsePrefix(cidr), BlockSize: bs}
}

func alloc(t *testing.T, s Store, node string, now func() time.Time) *Allocator {
	t.Helper()
	a, err := New(Config{Node: node, Logger: quiet, Now: now}, s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func req(pod string) Request { return Request{Namespace: "default", Pod: pod, ContainerID: "c-" + pod} }

// TestClaimAndAllocate: the first address claims the lowest block (pending
// then confirmed), later ones fill it, the 65th claims the next block, and
// repeating a request returns the same address.
func TestClaimAndAllocate(t *testing.T) {
	s := newMem(pool("default", "10.244.0.0/24", 26))
	a := alloc(t, s, "node-a", nil)
	ctx := context.Background()
	r, err := a.Allocate(ctx, req("web-0"))
	if err != nil {
		t.Fatal(err)
	}
	if r.IP != netip.MustParseAddr("10.244.0.0") || r.Block != netip.MustParsePrefix("10.244.0.0/26") || r.Borrowed {
		t.Fatalf("first allocation %+v", r)
	}
	b, _ := s.GetBlock(ctx, r.Block)
	if b.State != StateConfirmed || b.Affinity != "node-a" || len(b.Allocations) != 1 || b.Allocations[0].Handle != "default/web-0/c-web-0" {
		t.Fatalf("block after claim: %+v", b)
	}
	again, err := a.Allocate(ctx, req("web-0"))
	if err != nil || again != r {
		t.Fatalf("repeat = %+v, %v; want %+v", again, err, r)
	}
	for i := 1; i < 64; i++ {
		if _, err := a.Allocate(ctx, req(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	r65, err := a.Allocate(ctx, req("p64"))
	if err != nil || r65.Block != netip.MustParsePrefix("10.244.0.64/26") || r65.IP != netip.MustParseAddr("10.244.0.64") {
		t.Fatalf("65th = %+v, %v", r65, err)
	}
}

// TestBorrowAndExhaust: a /25 pool has two blocks; two nodes claim them;
// a third node borrows from the others; then the pool is exhausted with
// an error that names it.
func TestBorrowAndExhaust(t *testing.T) {
	s := newMem(pool("small", "10.244.9.0/25", 26))
	ctx := context.Background()
	a, b, c := alloc(t, s, "node-a", nil), alloc(t, s, "node-b", nil), alloc(t, s, "node-c", nil)
	ra, _ := a.Allocate(ctx, req("a0"))
	rb, _ := b.Allocate(ctx, req("b0"))
	if ra.Block == rb.Block {
		t.Fatalf("both nodes in %s", ra.Block)
	}
	rc, err := c.Allocate(ctx, req("c0"))
	if err != nil || !rc.Borrowed {
		t.Fatalf("node-c: %+v, %v; want a borrowed address", rc, err)
	}
	blk, _ := s.GetBlock(ctx, rc.Block)
	for _, al := range blk.Allocations {
		if al.IP == rc.IP && al.Node != "node-c" {
			t.Fatalf("borrowed allocation records node %q", al.Node)
		}
	}
	for i := 1; i < 126; i++ { // a0 + b0 + c0..c125 = 128 = the whole /25
		if _, err := c.Allocate(ctx, req(fmt.Sprint("c", i))); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	_, err = c.Allocate(ctx, req("one-too-many"))
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "small (10.244.9.0/25)") {
		t.Fatalf("exhaustion error = %v", err)
	}
	_, err = alloc(t, newMem(), "node-x", nil).Allocate(ctx, req("x"))
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "no enabled IPPool selects node node-x") {
		t.Fatalf("no-pool error = %v", err)
	}
}

// TestConcurrentAllocators: three nodes race for 900 addresses through
// one store with conflicts; no address is handed out twice and every
// allocation is recorded.
func TestConcurrentAllocators(t *testing.T) {
	s := newMem(pool("default", "10.244.0.0/20", 26))
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([][]Result, 3)
	errs := make([]error, 3)
	for n := 0; n < 3; n++ {
		a := alloc(t, s, fmt.Sprint("node-", n), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				r, err := a.Allocate(ctx, req(fmt.Sprintf("n%d-p%d", n, i)))
				if err != nil {
					errs[n] = err
					return
				}
				results[n] = append(results[n], r)
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for n, rs := range results {
		if errs[n] != nil {
			t.Fatal(errs[n])
		}
		for _, r := range rs {
			if prev, dup := seen[r.IP]; dup {
				t.Fatalf("%s handed out twice (%s and node-%d)", r.IP, prev, n)
			}
			seen[r.IP] = fmt.Sprint("node-", n)
		}
	}
	blocks, _ := s.ListBlocks(ctx)
	recorded := 0
	for _, b := range blocks {
		recorded += len(b.Allocations)
		if b.State != StateConfirmed {
			t.Errorf("block %s left %s", b.CIDR, b.State)
		}
	}
	if len(seen) != 900 || recorded != 900 {
		t.Fatalf("%d distinct addresses, %d recorded; want 900", len(seen), recorded)
	}
}

// TestReleaseAndEmptyBlock: release is idempotent; an empty block is
// stamped, kept during the grace period and deleted after it.
func TestReleaseAndEmptyBlock(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newMem(pool("default", "10.244.0.0/24", 26))
	a := alloc(t, s, "node-a", func() time.Time { return now })
	ctx := context.Background()
	r, _ := a.Allocate(ctx, req("web"))
	if err := a.Release(ctx, "default/web/c-web"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "default/web/c-web"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if rel, err := a.ReleaseEmptyBlocks(ctx); err != nil || len(rel) != 0 {
		t.Fatalf("first pass released %v, %v", rel, err)
	}
	b, _ := s.GetBlock(ctx, r.Block)
	if !b.EmptySince.Equal(now) {
		t.Fatalf("empty block not stamped: %+v", b)
	}
	now = now.Add(4 * time.Minute)
	if rel, _ := a.ReleaseEmptyBlocks(ctx); len(rel) != 0 {
		t.Fatalf("released during grace: %v", rel)
	}
	now = now.Add(2 * time.Minute)
	rel, err := a.ReleaseEmptyBlocks(ctx)
	if err != nil || len(rel) != 1 || rel[0] != r.Block {
		t.Fatalf("after grace released %v, %v", rel, err)
	}
	if _, err := s.GetBlock(ctx, r.Block); !errors.Is(err, ErrNotFound) {
		t.Fatalf("block still there: %v", err)
	}
}

// TestPendingClaimConfirmedOnRestart: a block left pending by a crash is
// confirmed by its owner, and no other node takes it.
func TestPendingClaimConfirmedOnRestart(t *testing.T) {
	s := newMem(pool("default", "10.244.0.0/26", 26))
	ctx := context.Background()
	cidr := netip.MustParsePrefix("10.244.0.0/26")
	if _, err := s.CreateBlock(ctx, Block{CIDR: cidr, Affinity: "node-a", State: StatePending}); err != nil {
		t.Fatal(err)
	}
	rb, err := alloc(t, s, "node-b", nil).Allocate(ctx, req("b"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("node-b took from a pending block: %+v %v", rb, err)
	}
	ra, err := alloc(t, s, "node-a", nil).Allocate(ctx, req("a"))
	if err != nil || ra.Block != cidr {
		t.Fatalf("owner: %+v %v", ra, err)
	}
	b, _ := s.GetBlock(ctx, cidr)
	if b.State != StateConfirmed {
		t.Fatalf("state %s", b.State)
	}
}

// TestGC releases addresses of deleted pods allocated for this node only,
// and keeps node addresses.
func TestGC(t *testing.T) {
	s := newMem(pool("default", "10.244.0.0/24", 26))
	ctx := context.Background()
	a, b := alloc(t, s, "node-a", nil), alloc(t, s, "node-b", nil)
	a.Allocate(ctx, req("alive"))
	a.Allocate(ctx, req("dead"))
	a.Allocate(ctx, Request{Handle: NodeHandle("node-a", NodeAddrVXLAN)})
	b.Allocate(ctx, req("other-node-dead"))
	var asked []string
	rel, err := a.GC(ctx, func(_ context.Context, ns, pod string) bool {
		asked = append(asked, ns+"/"+pod)
		return pod != "alive"
	})
	if err != nil || len(rel) != 1 || rel[0] != "default/dead/c-dead" {
		t.Fatalf("GC released %v, %v", rel, err)
	}
	blocks, _ := s.ListBlocks(ctx)
	var handles []string
	for _, bl := range blocks {
		for _, al := range bl.Allocations {
			handles = append(handles, al.Handle)
		}
	}
	if len(handles) != 3 {
		t.Fatalf("remaining handles %v", handles)
	}
	// Only this node's pods are asked about; node addresses never.
	slices.Sort(asked)
	if want := []string{"default/alive", "default/dead"}; !slices.Equal(asked, want) {
		t.Errorf("GC asked about %v; want %v", asked, want)
	}
}

// TestReleaseOrphanBlocks frees the blocks of a node that is gone and
// keeps those of live nodes, and a gone node's block from which a pod on a
// live node borrowed an address. Each node is asked about once.
func TestReleaseOrphanBlocks(t *testing.T) {
	s := newMem(pool("default", "10.244.0.0/24", 26))
	ctx := context.Background()
	ra, _ := alloc(t, s, "node-a", nil).Allocate(ctx, req("a"))
	rg, _ := alloc(t, s, "node-gone", nil).Allocate(ctx, req("g"))
	alloc(t, s, "node-gone", nil).Allocate(ctx, req("g2"))
	rl, _ := alloc(t, s, "node-lender", nil).Allocate(ctx, req("l"))
	// node-b borrows from node-lender's block (it has no block of its own).
	lent, err := alloc(t, s, "node-b", nil).allocateIn(ctx, mustBlock(t, s, rl.Block.String()), req("borrowed"), "default/borrowed/c-borrowed", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	asked := map[string]int{}
	gone := func(_ context.Context, n string) bool {
		asked[n]++
		return n == "node-gone" || n == "node-lender"
	}
	rel, err := alloc(t, s, "node-a", nil).ReleaseOrphanBlocks(ctx, gone)
	if err != nil || len(rel) != 1 || rel[0] != rg.Block {
		t.Fatalf("released %v, %v; want only %s", rel, err, rg.Block)
	}
	if _, err := s.GetBlock(ctx, ra.Block); err != nil {
		t.Fatalf("live node's block gone: %v", err)
	}
	if _, err := s.GetBlock(ctx, lent.Block); err != nil {
		t.Fatalf("block %s holding node-b's borrowed %s released: %v", lent.Block, lent.IP, err)
	}
	for n, c := range asked {
		if c != 1 {
			t.Errorf("asked about %s %d times", n, c)
		}
	}
	if asked["node-a"] != 0 {
		t.Errorf("asked whether the allocator's own node exists")
	}
}

// downStore fails every call with ErrUnavailable, as the API store does
// while the API server is unreachable, and counts the calls.
type downStore struct {
	Store
	calls int
}

func (d *downStore) ListPools(context.Context) ([]model.Pool, error) {
	d.calls++
	return nil, fmt.Errorf("list ippools: connection refused: %w", ErrUnavailable)
}

func (d *downStore) ListBlocks(context.Context) ([]Block, error) {
	d.calls++
	return nil, fmt.Errorf("list ipamblocks: connection refused: %w", ErrUnavailable)
}

// TestUnavailableStore: an unreachable store fails each operation at
// once (no retry loop), with ErrUnavailable in the chain, and GC and
// orphan release free nothing.
func TestUnavailableStore(t *testing.T) {
	ctx := context.Background()
	d := &downStore{Store: newMem(pool("default", "10.244.0.0/24", 26))}
	a := alloc(t, d, "node-a", nil)
	if _, err := a.Allocate(ctx, req("p")); !errors.Is(err, ErrUnavailable) || d.calls != 1 {
		t.Errorf("Allocate: %v after %d store calls; want ErrUnavailable after 1", err, d.calls)
	}
	d.calls = 0
	if err := a.Release(ctx, "default/p/c-p"); !errors.Is(err, ErrUnavailable) || d.calls != 1 {
		t.Errorf("Release: %v after %d store calls; want ErrUnavailable after 1", err, d.calls)
	}
	asked := false
	if rel, err := a.GC(ctx, func(context.Context, string, string) bool { asked = true; return true }); !errors.Is(err, ErrUnavailable) || len(rel) != 0 || asked {
		t.Errorf("GC: released %v, %v (asked: %v)", rel, err, asked)
	}
	if rel, err := a.ReleaseOrphanBlocks(ctx, func(context.Context, string) bool { asked = true; return true }); !errors.Is(err, ErrUnavailable) || len(rel) != 0 || asked {
		t.Errorf("ReleaseOrphanBlocks: released %v, %v (asked: %v)", rel, err, asked)
	}
}

// TestCachedStore: with a cache, allocations cost one write and no fresh
// listing while the cache lags behind the allocator's own writes; a
// repeated request still gets its address; a stale cache (another node
// wrote) costs one conflict and a fresh read; a pool the cache does not
// show yet is found before exhaustion is reported; a release of an
// allocation the cache does not show is found in the store.
func TestCachedStore(t *testing.T) {
	ctx := context.Background()
	s := newLag(pool("default", "10.244.0.0/24", 26))
	s.sync() // pool visible, no blocks
	a := alloc(t, s, "node-a", nil)
	first, err := a.Allocate(ctx, req("web-0")) // claims: create, confirm, allocate
	if err != nil {
		t.Fatal(err)
	}
	s.lists, s.writes = 0, 0
	// The cache never catches up during these: the allocator's own
	// writes carry it.
	for i := 1; i <= 10; i++ {
		r, err := a.Allocate(ctx, req(fmt.Sprintf("web-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if want := first.IP.As4(); r.IP.As4()[3] != want[3]+byte(i) {
			t.Fatalf("allocation %d = %s", i, r.IP)
		}
	}
	if s.writes != 10 || s.lists != 0 {
		t.Fatalf("10 allocations: %d writes, %d fresh lists; want 10 and 0", s.writes, s.lists)
	}
	again, err := a.Allocate(ctx, req("web-3"))
	if err != nil || again.IP != netip.MustParseAddr("10.244.0.3") {
		t.Fatalf("repeated request = %v, %v; want 10.244.0.3", again.IP, err)
	}

	// Another node borrows from our block; our cache does not show it.
	s.sync()
	other := alloc(t, s.memStore, "node-b", nil)
	if _, err := other.allocateIn(ctx, mustBlock(t, s, "10.244.0.0/26"), req("borrower"), "default/borrower/c-borrower", true, nil); err != nil {
		t.Fatal(err)
	}
	s.lists, s.writes = 0, 0
	r, err := a.Allocate(ctx, req("web-11"))
	if err != nil {
		t.Fatal(err)
	}
	if r.IP != netip.MustParseAddr("10.244.0.12") || s.writes != 2 || s.lists != 1 {
		t.Fatalf("after a foreign write: %s with %d writes, %d lists; want 10.244.0.12 (11 taken by the borrower), 2, 1", r.IP, s.writes, s.lists)
	}

	// Release of an allocation the cache never showed.
	if err := a.Release(ctx, "default/web-11/c-web-11"); err != nil {
		t.Fatal(err)
	}
	if blk := mustBlock(t, s, "10.244.0.0/26"); slices.ContainsFunc(blk.Allocations, func(al Allocation) bool { return al.Pod == "web-11" }) {
		t.Fatal("web-11 still allocated after Release")
	}

	// A pool the cache has not seen yet.
	s2 := newLag()
	s2.sync() // empty cache
	s2.pools = []model.Pool{pool("late", "10.244.9.0/26", 26)}
	c := alloc(t, s2, "node-c", nil)
	if r, err := c.Allocate(ctx, req("x")); err != nil || r.Block != netip.MustParsePrefix("10.244.9.0/26") {
		t.Fatalf("allocation from a pool not yet cached = %+v, %v", r, err)
	}
}

func mustBlock(t *testing.T, s Store, cidr string) Block {
	t.Helper()
	b, err := s.GetBlock(context.Background(), netip.MustParsePrefix(cidr))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNoFreeBlockHook: the hook fires once per allocation that found no
// block to claim: borrowed=true when it borrowed, false when the pool was
// exhausted; never for allocations from a block of its own, a new claim,
// or a repeated request for a borrowed address.
func TestNoFreeBlockHook(t *testing.T) {
	s := newMem(pool("small", "10.244.9.0/27", 29)) // four blocks of 8
	ctx := context.Background()
	var events []bool
	c, err := New(Config{Node: "node-c", Logger: quiet, NoFreeBlock: func(b bool) { events = append(events, b) }}, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b", "node-d"} {
		if _, err := alloc(t, s, n, nil).Allocate(ctx, req(n)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 { // node-c claims the last block and fills it
		if _, err := c.Allocate(ctx, req(fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(events) != 0 {
		t.Fatalf("events %v while node-c had a block to claim or fill", events)
	}
	for i := 8; i < 29; i++ { // the 21 free addresses of the others' blocks
		r, err := c.Allocate(ctx, req(fmt.Sprint("c", i)))
		if err != nil || !r.Borrowed {
			t.Fatalf("allocation %d: %+v, %v; want a borrowed address", i, r, err)
		}
	}
	if _, err := c.Allocate(ctx, req("c8")); err != nil { // repeated: the same address
		t.Fatal(err)
	}
	if _, err := c.Allocate(ctx, req("one-too-many")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v; want ErrExhausted", err)
	}
	want := append(slices.Repeat([]bool{true}, 21), false)
	if !slices.Equal(events, want) {
		t.Fatalf("events %v; want 21 borrowed then one exhausted", events)
	}
}
