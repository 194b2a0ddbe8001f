// Test addresses: pools inside 10.244.0.0/16; 192.0.2.0/24 (TEST-NET-1)
// as an address outside every pool.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/wren-net/wren/pkg/model"
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func reserve(name string, cidrs ...string) []Reservation {
	var out []Reservation
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			p = netip.PrefixFrom(netip.MustParseAddr(c), 32)
		}
		out = append(out, Reservation{Name: name, CIDR: p})
	}
	return out
}

// seed puts a confirmed block of node with allocations for pods on it.
func seed(t *testing.T, s *memStore, cidr, node string, pods map[string]string) {
	t.Helper()
	b := Block{CIDR: prefix(cidr), Affinity: node, State: StateConfirmed}
	for ip, pod := range pods {
		b.Allocations = append(b.Allocations, Allocation{IP: addr(ip), Handle: PodHandle("default", pod, "c-"+pod),
			Namespace: "default", Pod: pod, ContainerID: "c-" + pod, Node: node})
	}
	if _, err := s.CreateBlock(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// fill allocates n addresses on node (pods "<prefix>0".."<prefix>n-1").
func fill(t *testing.T, a *Allocator, n int, prefix string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := a.Allocate(context.Background(), req(fmt.Sprint(prefix, i))); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
}

// TestReservations: reserved addresses are never handed out, whether they
// start a block, sit in the middle of one, or cover a whole block (which
// is then never claimed), and a borrower skips them too; an address
// allocated before its reservation stays with its pod.
func TestReservations(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, s *memStore)
		res   []Reservation
		node  string
		want  string // address of the next allocation on node, or an error substring
		block string // its block
		never string // a block that must not exist afterwards
	}{
		{name: "reserved addresses at the start of the first block", res: reserve("gw", "10.244.0.0/31"),
			node: "node-a", want: "10.244.0.2", block: "10.244.0.0/26"},
		{name: "a reserved single address in the middle of an own block",
			setup: func(t *testing.T, s *memStore) {
				seed(t, s, "10.244.0.0/26", "node-a", map[string]string{"10.244.0.0": "p0", "10.244.0.1": "p1"})
			},
			res: reserve("vip", "10.244.0.2"), node: "node-a", want: "10.244.0.3", block: "10.244.0.0/26"},
		{name: "a wholly reserved block is never claimed", res: reserve("rack-1", "10.244.0.0/26"),
			node: "node-a", want: "10.244.0.64", block: "10.244.0.64/26", never: "10.244.0.0/26"},
		{name: "a block wholly reserved by several reservations is never claimed",
			res:  append(reserve("low", "10.244.0.0/27"), reserve("high", "10.244.0.32/27")...),
			node: "node-a", want: "10.244.0.64", block: "10.244.0.64/26", never: "10.244.0.0/26"},
		{name: "an own block whose only free addresses are reserved counts as full",
			setup: func(t *testing.T, s *memStore) {
				pods := map[string]string{}
				for i := 0; i < 62; i++ {
					pods[fmt.Sprint("10.244.0.", i)] = fmt.Sprint("p", i)
				}
				seed(t, s, "10.244.0.0/26", "node-a", pods)
			},
			res: reserve("tail", "10.244.0.62/31"), node: "node-a", want: "10.244.0.64", block: "10.244.0.64/26"},
		{name: "a borrower skips reserved addresses",
			setup: func(t *testing.T, s *memStore) {
				seed(t, s, "10.244.0.0/26", "node-b", map[string]string{"10.244.0.0": "b0"})
				seed(t, s, "10.244.0.64/26", "node-c", nil)
				seed(t, s, "10.244.0.128/26", "node-d", nil)
				seed(t, s, "10.244.0.192/26", "node-e", nil)
			},
			res: reserve("r", "10.244.0.1", "10.244.0.2"), node: "node-a", want: "10.244.0.3", block: "10.244.0.0/26"},
		{name: "nothing left but reserved addresses: exhausted",
			setup: func(t *testing.T, s *memStore) {
				seed(t, s, "10.244.0.0/26", "node-b", map[string]string{"10.244.0.0": "b0"})
			},
			res: reserve("rest", "10.244.0.0/24"), node: "node-a", want: "every address of default (10.244.0.0/24) is allocated or reserved"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMem(pool("default", "10.244.0.0/24", 26))
			if tt.setup != nil {
				tt.setup(t, s)
			}
			s.set(Settings{Reservations: tt.res})
			r, err := alloc(t, s, tt.node, nil).Allocate(context.Background(), req("new"))
			if strings.Count(tt.want, ".") != 3 || strings.Contains(tt.want, " ") {
				if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("got %+v, %v; want ErrExhausted with %q", r, err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.IP != addr(tt.want) || r.Block != prefix(tt.block) {
				t.Errorf("got %s in %s; want %s in %s", r.IP, r.Block, tt.want, tt.block)
			}
			if tt.never != "" {
				if b, err := s.GetBlock(context.Background(), prefix(tt.never)); err == nil {
					t.Errorf("block %s was claimed: %+v", tt.never, b)
				}
			}
		})
	}

	// An address allocated before its reservation stays with its pod.
	s := newMem(pool("default", "10.244.0.0/24", 26))
	a := alloc(t, s, "node-a", nil)
	ctx := context.Background()
	first, err := a.Allocate(ctx, req("old"))
	if err != nil {
		t.Fatal(err)
	}
	s.set(Settings{Reservations: reserve("late", first.IP.String())})
	again, err := a.Allocate(ctx, req("old"))
	if err != nil || again.IP != first.IP {
		t.Fatalf("repeated request after the reservation: %+v, %v; want %s", again, err, first.IP)
	}
	if b := mustBlock(t, s, "10.244.0.0/26"); len(b.Allocations) != 1 || b.Allocations[0].IP != first.IP {
		t.Fatalf("allocations after the reservation: %+v", b.Allocations)
	}
}

// TestChosenAddress: a pod's ipAddrs gets exactly that address, in its
// own block, in a block claimed for it, or borrowed from another node's;
// a taken, reserved or out-of-pool address, strictAffinity and
// maxBlocksPerHost refuse it with a message naming what is in the way.
func TestChosenAddress(t *testing.T) {
	const from = "annotation wren.network/ipAddrs of pod default/new"
	for _, tt := range []struct {
		name     string
		setup    func(t *testing.T, s *memStore)
		settings Settings
		ip       string
		block    string // want the address in this block
		affinity string // held by this node afterwards
		borrowed bool
		err      error    // or want this error
		msg      []string // with these words
	}{
		{name: "in a block nobody holds: claimed for the node", ip: "10.244.0.77", block: "10.244.0.64/26", affinity: "node-a"},
		{name: "in an own block",
			setup: func(t *testing.T, s *memStore) {
				seed(t, s, "10.244.0.0/26", "node-a", map[string]string{"10.244.0.0": "p0"})
			},
			ip: "10.244.0.9", block: "10.244.0.0/26", affinity: "node-a"},
		{name: "in an own pending block: confirmed",
			setup: func(t *testing.T, s *memStore) {
				if _, err := s.CreateBlock(context.Background(), Block{CIDR: prefix("10.244.0.0/26"), Affinity: "node-a", State: StatePending}); err != nil {
					t.Fatal(err)
				}
			},
			ip: "10.244.0.9", block: "10.244.0.0/26", affinity: "node-a"},
		{name: "in another node's block: borrowed",
			setup: func(t *testing.T, s *memStore) { seed(t, s, "10.244.0.0/26", "node-b", nil) },
			ip:    "10.244.0.9", block: "10.244.0.0/26", affinity: "node-b", borrowed: true},
		{name: "taken",
			setup: func(t *testing.T, s *memStore) {
				seed(t, s, "10.244.0.0/26", "node-b", map[string]string{"10.244.0.9": "db-0"})
			},
			ip: "10.244.0.9", err: ErrAddressTaken,
			msg: []string{"10.244.0.9 (" + from + ") is held by pod default/db-0 on node node-b (container c-db-0)"}},
		{name: "taken by a node's tunnel address",
			setup: func(t *testing.T, s *memStore) {
				b := Block{CIDR: prefix("10.244.0.0/26"), Affinity: "node-b", State: StateConfirmed,
					Allocations: []Allocation{{IP: addr("10.244.0.0"), Handle: NodeHandle("node-b", NodeAddrVXLAN), Node: "node-b"}}}
				if _, err := s.CreateBlock(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			},
			ip: "10.244.0.0", err: ErrAddressTaken, msg: []string{"is held by node node-b (its vxlan tunnel address)"}},
		{name: "reserved", settings: Settings{Reservations: reserve("gateways", "10.244.0.0/30")},
			ip: "10.244.0.1", err: ErrAddressReserved,
			msg: []string{"10.244.0.1 (" + from + ") is reserved by IPReservation gateways (10.244.0.0/30)"}},
		{name: "reserved single address", settings: Settings{Reservations: reserve("vip", "10.244.0.5")},
			ip: "10.244.0.5", err: ErrAddressReserved, msg: []string{"is reserved by IPReservation vip (10.244.0.5)"}},
		{name: "outside every pool", ip: "192.0.2.10", err: ErrNotInPool,
			msg: []string{"192.0.2.10 (" + from + ") is in no IPPool (IPPools: default 10.244.0.0/24, off 10.244.9.0/24)"}},
		{name: "in a disabled pool", ip: "10.244.9.1", err: ErrNotInPool,
			msg: []string{"is in IPPool off (10.244.9.0/24), which is disabled"}},
		{name: "strictAffinity: another node's block is not borrowed",
			setup:    func(t *testing.T, s *memStore) { seed(t, s, "10.244.0.0/26", "node-b", nil) },
			settings: Settings{StrictAffinity: true}, ip: "10.244.0.9", err: ErrStrictAffinity,
			msg: []string{"is in block 10.244.0.0/26 of node node-b, and strictAffinity in IPAMConfiguration default forbids borrowing"}},
		{name: "strictAffinity: an own block is fine",
			setup:    func(t *testing.T, s *memStore) { seed(t, s, "10.244.0.0/26", "node-a", nil) },
			settings: Settings{StrictAffinity: true}, ip: "10.244.0.9", block: "10.244.0.0/26", affinity: "node-a"},
		{name: "maxBlocksPerHost: no new block for the address",
			setup:    func(t *testing.T, s *memStore) { seed(t, s, "10.244.0.0/26", "node-a", nil) },
			settings: Settings{MaxBlocksPerHost: 1}, ip: "10.244.0.70", err: ErrBlockLimit,
			msg: []string{"10.244.0.70 (" + from + ") is in block 10.244.0.64/26, which no node holds yet, and node node-a already holds 1 blocks (maxBlocksPerHost 1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			off := pool("off", "10.244.9.0/24", 26)
			off.Disabled = true
			s := newMem(pool("default", "10.244.0.0/24", 26), off)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			s.set(tt.settings)
			r := req("new")
			r.Choice = Choice{IP: addr(tt.ip), IPFrom: from,
				// ipAddrs wins over ipv4pools.
				Pools: []PoolRef{{Name: "off"}}, PoolsFrom: "annotation wren.network/ipv4pools of pod default/new"}
			a := alloc(t, s, "node-a", nil)
			res, err := a.Allocate(context.Background(), r)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !errors.Is(err, ErrRefused) {
					t.Fatalf("got %+v, %v; want %v", res, err, tt.err)
				}
				for _, m := range tt.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q lacks %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.IP != addr(tt.ip) || res.Block != prefix(tt.block) || res.Borrowed != tt.borrowed {
				t.Fatalf("got %+v; want %s in %s, borrowed %v", res, tt.ip, tt.block, tt.borrowed)
			}
			b := mustBlock(t, s, tt.block)
			if b.Affinity != tt.affinity || b.State != StateConfirmed {
				t.Errorf("block %s: affinity %q state %s; want %q confirmed", b.CIDR, b.Affinity, b.State, tt.affinity)
			}
			if i := slicesIndex(b.Allocations, addr(tt.ip)); i < 0 || b.Allocations[i].Handle != "default/new/c-new" || b.Allocations[i].Node != "node-a" {
				t.Errorf("allocations of %s: %+v", b.CIDR, b.Allocations)
			}
			// A repeated ADD gets the same address.
			if again, err := a.Allocate(context.Background(), r); err != nil || again.IP != res.IP {
				t.Errorf("repeat: %+v, %v", again, err)
			}
		})
	}
}

func slicesIndex(als []Allocation, ip netip.Addr) int {
	for i, al := range als {
		if al.IP == ip {
			return i
		}
	}
	return -1
}

// TestChosenAddressFreshCheck: a refusal is never decided from the cache.
// Another node released the address a moment ago; this node's cache still
// shows it taken; the allocator reads the store before refusing, and the
// pod gets the address.
func TestChosenAddressFreshCheck(t *testing.T) {
	s := newLag(pool("default", "10.244.0.0/24", 26))
	ctx := context.Background()
	b := alloc(t, s, "node-b", nil)
	rb, err := b.Allocate(ctx, req("old"))
	if err != nil {
		t.Fatal(err)
	}
	s.sync()
	if err := b.Release(ctx, "default/old/c-old"); err != nil {
		t.Fatal(err)
	}
	r := req("new")
	r.Choice = Choice{IP: rb.IP}
	got, err := alloc(t, s, "node-a", nil).Allocate(ctx, r)
	if err != nil || got.IP != rb.IP || !got.Borrowed {
		t.Fatalf("got %+v, %v; want %s borrowed", got, err, rb.IP)
	}
}

// TestChosenPools: ipv4pools by name or CIDR confines the address to
// those pools (the first that selects the node with room); an unknown or
// disabled pool, or none that selects the node, is refused naming the
// annotation and the pool.
func TestChosenPools(t *testing.T) {
	const from = "annotation cni.projectcalico.org/ipv4pools of namespace team-a"
	off := pool("off", "10.244.9.0/24", 26)
	off.Disabled = true
	rack := pool("rack-2", "10.244.8.0/24", 26)
	rack.NodeSelector = "rack == 'r2'"
	pools := []model.Pool{pool("a", "10.244.0.0/24", 26), pool("b", "10.244.1.0/24", 26), off, rack}
	for _, tt := range []struct {
		name  string
		refs  []PoolRef
		block string   // want an address in this block
		msg   []string // or ErrPoolChoice with these words
	}{
		{name: "no choice: the first selected pool by name", block: "10.244.0.0/26"},
		{name: "by name", refs: []PoolRef{{Name: "b"}}, block: "10.244.1.0/26"},
		{name: "by CIDR", refs: []PoolRef{{CIDR: prefix("10.244.1.0/24")}}, block: "10.244.1.0/26"},
		{name: "an unselected pool is skipped", refs: []PoolRef{{Name: "rack-2"}, {Name: "b"}}, block: "10.244.1.0/26"},
		{name: "unknown name", refs: []PoolRef{{Name: "b"}, {Name: "blue"}},
			msg: []string{from + ` names IPPool "blue", which does not exist (IPPools: a 10.244.0.0/24, b 10.244.1.0/24, off 10.244.9.0/24, rack-2 10.244.8.0/24)`}},
		{name: "unknown CIDR", refs: []PoolRef{{CIDR: prefix("10.244.2.0/24")}},
			msg: []string{`names IPPool "10.244.2.0/24", which does not exist`}},
		{name: "disabled", refs: []PoolRef{{Name: "off"}}, msg: []string{from + " names IPPool off (10.244.9.0/24), which is disabled"}},
		{name: "none selects the node", refs: []PoolRef{{Name: "rack-2"}},
			msg: []string{"none of the IPPools that " + from + ` names selects node node-a: rack-2 (nodeSelector "rack == 'r2'")`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMem(pools...)
			r := req("new")
			r.Choice = Choice{Pools: tt.refs, PoolsFrom: from}
			res, err := alloc(t, s, "node-a", nil).Allocate(context.Background(), r)
			if tt.msg != nil {
				if !errors.Is(err, ErrPoolChoice) || !errors.Is(err, ErrRefused) {
					t.Fatalf("got %+v, %v; want ErrPoolChoice", res, err)
				}
				for _, m := range tt.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q lacks %q", err, m)
					}
				}
				if s.writes != 0 {
					t.Errorf("%d writes for a refused request", s.writes)
				}
				return
			}
			if err != nil || res.Block != prefix(tt.block) {
				t.Fatalf("got %+v, %v; want an address in %s", res, err, tt.block)
			}
		})
	}

	// A pod that chose pool b never gets an address of pool a, even when
	// the node holds a block of a with room.
	s := newMem(pools...)
	a := alloc(t, s, "node-a", nil)
	ctx := context.Background()
	if r, err := a.Allocate(ctx, req("in-a")); err != nil || r.Block != prefix("10.244.0.0/26") {
		t.Fatalf("first pod: %+v, %v", r, err)
	}
	r := req("in-b")
	r.Choice = Choice{Pools: []PoolRef{{Name: "b"}}}
	if res, err := a.Allocate(ctx, r); err != nil || !prefix("10.244.1.0/24").Contains(res.IP) {
		t.Fatalf("pod that chose b: %+v, %v", res, err)
	}
}

// TestStrictAffinity: with strictAffinity a node whose blocks are full and
// that can claim no new one fails with an error that says strictAffinity
// forbids borrowing, where it would otherwise borrow.
func TestStrictAffinity(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprint("strictAffinity=", strict), func(t *testing.T) {
			s := newMem(pool("small", "10.244.9.0/25", 26))
			s.set(Settings{StrictAffinity: strict})
			ctx := context.Background()
			fill(t, alloc(t, s, "node-a", nil), 1, "a")
			fill(t, alloc(t, s, "node-b", nil), 1, "b")
			r, err := alloc(t, s, "node-c", nil).Allocate(ctx, req("c0"))
			if !strict {
				if err != nil || !r.Borrowed {
					t.Fatalf("got %+v, %v; want a borrowed address", r, err)
				}
				return
			}
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("got %+v, %v; want ErrExhausted", r, err)
			}
			for _, m := range []string{"node node-c has no free address in its own blocks and may claim no new block (every block of small (10.244.9.0/25) is taken)",
				"strictAffinity in IPAMConfiguration default forbids borrowing from other nodes' blocks"} {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q lacks %q", err, m)
				}
			}
			for _, cidr := range []string{"10.244.9.0/26", "10.244.9.64/26"} {
				if b := mustBlock(t, s, cidr); len(b.Allocations) != 1 {
					t.Errorf("block %s has %d allocations; want 1 (nothing borrowed)", cidr, len(b.Allocations))
				}
			}
		})
	}
}

// TestMaxBlocksPerHost: a node at maxBlocksPerHost claims no new block:
// it borrows, or with strictAffinity fails saying so; without the cap it
// claims.
func TestMaxBlocksPerHost(t *testing.T) {
	for _, tt := range []struct {
		name     string
		settings Settings
		block    string // the 65th address's block
		borrowed bool
		msg      string // or ErrExhausted with this
	}{
		{name: "no cap: a second block", block: "10.244.0.128/26"},
		{name: "cap 2: a second block", settings: Settings{MaxBlocksPerHost: 2}, block: "10.244.0.128/26"},
		{name: "cap 1: borrowed", settings: Settings{MaxBlocksPerHost: 1}, block: "10.244.0.64/26", borrowed: true},
		{name: "cap 1 and strictAffinity: refused", settings: Settings{MaxBlocksPerHost: 1, StrictAffinity: true},
			msg: "may claim no new block (it already holds 1 blocks (maxBlocksPerHost 1)), and strictAffinity in IPAMConfiguration default forbids borrowing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMem(pool("default", "10.244.0.0/24", 26))
			ctx := context.Background()
			fill(t, alloc(t, s, "node-a", nil), 64, "a") // 10.244.0.0/26, full
			fill(t, alloc(t, s, "node-b", nil), 1, "b")  // 10.244.0.64/26
			s.set(tt.settings)
			a := alloc(t, s, "node-a", nil)
			r, err := a.Allocate(ctx, req("a64"))
			if tt.msg != "" {
				if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("got %+v, %v; want ErrExhausted with %q", r, err, tt.msg)
				}
				return
			}
			if err != nil || r.Block != prefix(tt.block) || r.Borrowed != tt.borrowed {
				t.Fatalf("got %+v, %v; want an address in %s, borrowed %v", r, err, tt.block, tt.borrowed)
			}
			blocks, _ := s.ListBlocks(ctx)
			own := alloc(t, s, "node-a", nil).ownBlocks(blocks)
			if m := tt.settings.MaxBlocksPerHost; m > 0 && own > m {
				t.Errorf("node-a holds %d blocks; cap %d", own, m)
			}
		})
	}
}
