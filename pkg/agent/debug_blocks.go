package agent

import (
	"context"
	"net/netip"
	"slices"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// BlocksView is IPAM as the cluster cache has it: every pool with its
// usage and every block with its allocations (wrenctl ipam show).
type BlocksView struct {
	Pools  []PoolView
	Blocks []BlockView
}

// PoolView is one IPPool and how much of it is allocated.
type PoolView struct {
	Name string
	CIDR netip.Prefix
	// Mode is how the pool's traffic crosses nodes: "bgp" (no
	// encapsulation), "vxlan", "vxlan-cross-subnet", "ipip" or
	// "ipip-cross-subnet".
	Mode        string
	Disabled    bool
	NATOutgoing bool
	// BlockSize is the prefix length of the pool's blocks.
	BlockSize int
	// Size is the number of addresses in the pool; Blocks the number of
	// blocks claimed from it; Used the addresses allocated in those
	// blocks; Free = Size - Used.
	Size   uint64
	Blocks int
	Used   uint64
	Free   uint64
}

// BlockView is one IPAMBlock.
type BlockView struct {
	CIDR netip.Prefix
	// Pool is the name of the pool holding the block, "" when it lies in
	// no pool (the pool was deleted while addresses were allocated).
	Pool string
	// Node is the block's affinity ("" for none); State its claim state,
	// ipam.StatePending or ipam.StateConfirmed.
	Node        string
	State       string
	Used, Free  int
	Allocations []AllocationView
}

// AllocationView is one allocated address.
type AllocationView struct {
	IP     netip.Addr
	Handle string
	// Pod is "namespace/name" for a pod's address, "" otherwise (a node's
	// tunnel address).
	Pod string
	// Node is the node the address was allocated for, where it is used.
	Node string
	// Borrowed: Node is not the block's affinity. The pod's node took the
	// address from another node's block because it had no free block of
	// its own; it routes the address as a /32, which must win over the
	// owner's route (and blackhole) for the block.
	Borrowed bool
}

// Blocks returns the pools and blocks from the cluster cache. It never
// waits for the loop (the cache serves readers on any goroutine); ctx is
// only checked.
func (a *Agent) Blocks(ctx context.Context) (BlocksView, error) {
	if err := ctx.Err(); err != nil {
		return BlocksView{}, err
	}
	pools, err := a.cluster.Pools()
	if err != nil {
		return BlocksView{}, err
	}
	blocks, err := a.cluster.Blocks()
	if err != nil {
		return BlocksView{}, err
	}
	settings, err := a.cluster.IPAMSettings()
	if err != nil {
		return BlocksView{}, err
	}
	return blocksView(pools, blocks, settings.Reservations), nil
}

// blocksView joins blocks to their pools and counts usage. An address an
// IPReservation holds is not free (IPAM never hands it out) unless a pod
// had it before the reservation: then it counts as used.
func blocksView(pools []model.Pool, blocks []ipam.Block, res []ipam.Reservation) BlocksView {
	var v BlocksView
	byName := make(map[string]int, len(pools))
	for _, p := range pools {
		bs := p.BlockSize
		if bs == 0 {
			bs = model.DefaultBlockSize
		}
		size := uint64(1) << (32 - p.CIDR.Bits())
		byName[p.Name] = len(v.Pools)
		free := size - reservedIn(p.CIDR, res)
		v.Pools = append(v.Pools, PoolView{Name: p.Name, CIDR: p.CIDR, Mode: poolMode(p), Disabled: p.Disabled,
			NATOutgoing: p.NATOutgoing, BlockSize: bs, Size: size, Free: free})
	}
	for _, b := range blocks {
		bv := BlockView{CIDR: b.CIDR, Node: b.Affinity, State: b.State, Used: len(b.Allocations), Free: ipam.Available(b, res)}
		for _, p := range pools {
			if p.CIDR.Bits() <= b.CIDR.Bits() && p.CIDR.Contains(b.CIDR.Addr()) {
				bv.Pool = p.Name
				pv := &v.Pools[byName[p.Name]]
				pv.Blocks++
				pv.Used += uint64(bv.Used)
				// Reserved addresses are already out of Free.
				pv.Free -= min(pv.Free, uint64(bv.Used-reservedUsed(b, res)))
				break
			}
		}
		for _, al := range b.Allocations {
			bv.Allocations = append(bv.Allocations, AllocationView{IP: al.IP, Handle: al.Handle, Pod: podOf(al), Node: al.Node,
				// As the routes are built (pkg/desired): an allocation
				// that names no node is not routed as borrowed.
				Borrowed: al.Node != "" && al.Node != b.Affinity})
		}
		v.Blocks = append(v.Blocks, bv)
	}
	return v
}

// podOf is "namespace/name" of the pod holding al: as the allocation
// records it, else from a pod handle; "" for a node's own address.
func podOf(al ipam.Allocation) string {
	switch {
	case al.Pod != "" && al.Namespace != "":
		return al.Namespace + "/" + al.Pod
	case al.Pod != "":
		return al.Pod
	}
	if ns, pod, _, ok := ipam.ParsePodHandle(al.Handle); ok {
		return ns + "/" + pod
	}
	return ""
}

// poolMode names how a pool's traffic crosses nodes. pkg/cluster lets at
// most one of vxlanMode and ipipMode differ from Never.
func poolMode(p model.Pool) string {
	switch {
	case p.VXLAN == model.EncapAlways:
		return "vxlan"
	case p.VXLAN == model.EncapCrossSubnet:
		return "vxlan-cross-subnet"
	case p.IPIP == model.EncapAlways:
		return "ipip"
	case p.IPIP == model.EncapCrossSubnet:
		return "ipip-cross-subnet"
	}
	return "bgp"
}

// reservedIn counts the addresses of p that IPReservations hold
// (overlapping reservations counted once).
func reservedIn(p netip.Prefix, res []ipam.Reservation) uint64 {
	var in []netip.Prefix
	for _, r := range res {
		switch {
		case !r.CIDR.Overlaps(p):
		case r.CIDR.Bits() <= p.Bits():
			return uint64(1) << (32 - p.Bits()) // all of p
		default:
			in = append(in, r.CIDR.Masked())
		}
	}
	// Prefixes nest or are disjoint: sorted, a nested one follows the
	// prefix holding it.
	slices.SortFunc(in, netip.Prefix.Compare)
	var n uint64
	var last netip.Prefix
	for _, q := range in {
		if last.IsValid() && last.Contains(q.Addr()) {
			continue
		}
		n += uint64(1) << (32 - q.Bits())
		last = q
	}
	return n
}

// reservedUsed counts b's allocations at reserved addresses (made before
// the reservation).
func reservedUsed(b ipam.Block, res []ipam.Reservation) int {
	n := 0
	for _, al := range b.Allocations {
		if _, ok := ipam.FindReservation(res, al.IP); ok {
			n++
		}
	}
	return n
}
