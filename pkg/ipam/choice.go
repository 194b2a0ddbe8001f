package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/wren-net/wren/pkg/model"
)

// Choice is what a pod asked of IPAM through its annotations (Calico's
// cni.projectcalico.org/ipAddrs and ipv4pools, wren.network/ keys
// accepted too); pkg/cluster parses them. The zero Choice lets IPAM
// choose.
type Choice struct {
	// IP, when valid, is the one address the pod must get. It is taken
	// from whichever block holds it: a block of this node, a block nobody
	// holds yet (claimed for this node), or another node's block
	// (borrowed, unless strictAffinity). Pools is ignored then.
	IP netip.Addr
	// IPFrom says where IP was asked for, for messages: "annotation
	// wren.network/ipAddrs of pod default/web-0".
	IPFrom string
	// Pools, when not empty, are the only IPPools the address may come
	// from, named by name or CIDR; a new block comes from the first of
	// them that has room.
	Pools []PoolRef
	// PoolsFrom says where Pools were asked for, for messages.
	PoolsFrom string
}

// PoolRef names an IPPool by its name or by its CIDR (Calico's ipv4pools
// annotation accepts both).
type PoolRef struct {
	Name string       // set for a reference by name
	CIDR netip.Prefix // set for a reference by CIDR
}

// String returns the reference as written: the name or the CIDR.
func (r PoolRef) String() string {
	if r.CIDR.IsValid() {
		return r.CIDR.String()
	}
	return r.Name
}

func (r PoolRef) matches(p model.Pool) bool {
	if r.CIDR.IsValid() {
		return p.CIDR.Masked() == r.CIDR.Masked()
	}
	return p.Name == r.Name
}

// ErrRefused is in the chain of every error that refuses a pod's own
// choice (Choice) or fails under the IPAMConfiguration: the request can
// never succeed as asked, whatever the runtime retries. Each case has its
// own error below, which errors.Is also matches.
var ErrRefused = errors.New("the pod's address request cannot be met")

// Refusals. Their messages name the address or pool, who asked for it,
// the object in the way, and what to do.
var (
	// ErrAddressTaken: the requested address is allocated to another
	// pod or node.
	ErrAddressTaken error = refusal("requested address is taken")
	// ErrAddressReserved: the requested address is in an IPReservation.
	ErrAddressReserved error = refusal("requested address is reserved")
	// ErrNotInPool: the requested address is in no enabled IPPool.
	ErrNotInPool error = refusal("requested address is outside every enabled IPPool")
	// ErrPoolChoice: a requested IPPool does not exist, is disabled, or
	// none of them selects the node.
	ErrPoolChoice error = refusal("requested IPPool cannot be used")
	// ErrStrictAffinity: the requested address is in another node's
	// block and strictAffinity forbids borrowing it.
	ErrStrictAffinity error = refusal("strictAffinity forbids borrowing")
	// ErrBlockLimit: the requested address is in a block nobody holds and
	// the node already holds maxBlocksPerHost blocks.
	ErrBlockLimit error = refusal("maxBlocksPerHost reached")
)

// refusal is an error that also matches ErrRefused.
type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

// refuse is fmt.Errorf with sentinel first, "sentinel: message".
func refuse(sentinel error, format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, a...)...)
}

// reserved is the reserved networks of the Settings.
type reserved []Reservation

// find returns the reservation that holds ip.
func (rs reserved) find(ip netip.Addr) (Reservation, bool) {
	for _, r := range rs {
		if r.CIDR.Contains(ip) {
			return r, true
		}
	}
	return Reservation{}, false
}

// within returns the reservations that overlap p.
func (rs reserved) within(p netip.Prefix) reserved {
	var out reserved
	for _, r := range rs {
		if r.CIDR.Overlaps(p) {
			out = append(out, r)
		}
	}
	return out
}

// FindReservation returns the reservation of res that holds ip.
func FindReservation(res []Reservation, ip netip.Addr) (Reservation, bool) {
	return reserved(res).find(ip)
}

// Available counts the addresses of b that are neither allocated nor
// reserved by one of res: what IPAM can still hand out from it.
func Available(b Block, res []Reservation) int { return available(b, res) }

// available counts the addresses of b that are neither allocated nor
// reserved.
func available(b Block, rs reserved) int {
	over := rs.within(b.CIDR)
	if len(over) == 0 {
		return b.Free()
	}
	for _, r := range over {
		if r.CIDR.Bits() <= b.CIDR.Bits() {
			return 0 // the whole block is reserved
		}
	}
	used := make(map[netip.Addr]bool, len(b.Allocations))
	for _, al := range b.Allocations {
		used[al.IP] = true
	}
	n := 0
	ip := b.CIDR.Masked().Addr()
	for i := 0; i < size(b.CIDR); i++ {
		if _, res := over.find(ip); !res && !used[ip] {
			n++
		}
		ip = ip.Next()
	}
	return n
}

// holder names who holds an allocation, for messages.
func holder(al Allocation) string {
	if node, kind, ok := ParseNodeHandle(al.Handle); ok {
		return fmt.Sprintf("node %s (its %s tunnel address)", node, kind)
	}
	if al.Pod != "" {
		s := "pod " + al.Namespace + "/" + al.Pod
		if al.Node != "" {
			s += " on node " + al.Node
		}
		if al.ContainerID != "" {
			s += " (container " + shortID(al.ContainerID) + ")"
		}
		return s
	}
	return "handle " + al.Handle
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// asked describes the requested address with where it was asked for.
func (c Choice) asked() string {
	if c.IPFrom == "" {
		return c.IP.String()
	}
	return fmt.Sprintf("%s (%s)", c.IP, c.IPFrom)
}

func poolNames(pools []model.Pool) string {
	if len(pools) == 0 {
		return "none"
	}
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = fmt.Sprintf("%s %s", p.Name, p.CIDR)
	}
	return strings.Join(names, ", ")
}

// choosePools returns the pools an allocation may use: the pools the
// node's selection allows, or, when the pod chose, the chosen ones (in
// its order) that exist, are enabled and select the node.
func (a *Allocator) choosePools(all []model.Pool, c Choice) ([]model.Pool, error) {
	if len(c.Pools) == 0 {
		return a.selectedPools(all), nil
	}
	from := c.PoolsFrom
	if from == "" {
		from = "the request"
	}
	var out []model.Pool
	var unselected []string
	for _, ref := range c.Pools {
		i := slices.IndexFunc(all, func(p model.Pool) bool { return p.CIDR.IsValid() && ref.matches(p) })
		if i < 0 {
			return nil, refuse(ErrPoolChoice, "%s names IPPool %q, which does not exist (IPPools: %s); create it or fix the annotation",
				from, ref, poolNames(all))
		}
		p := all[i]
		switch {
		case p.Disabled:
			return nil, refuse(ErrPoolChoice, "%s names IPPool %s (%s), which is disabled; enable it or fix the annotation", from, p.Name, p.CIDR)
		case slices.ContainsFunc(out, func(q model.Pool) bool { return q.Name == p.Name }):
		case !a.cfg.PoolSelected(p):
			unselected = append(unselected, fmt.Sprintf("%s (nodeSelector %q)", p.Name, p.NodeSelector))
		default:
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, refuse(ErrPoolChoice, "none of the IPPools that %s names selects node %s: %s; schedule the pod on a node they select or fix the annotation",
			from, a.cfg.Node, strings.Join(unselected, ", "))
	}
	return out, nil
}

// ownBlocks counts the blocks this node holds (pending or confirmed), for
// maxBlocksPerHost.
func (a *Allocator) ownBlocks(blocks []Block) int {
	n := 0
	for _, b := range blocks {
		if b.Affinity == a.cfg.Node {
			n++
		}
	}
	return n
}

// allocateAddr allocates the address the pod chose (req.Choice.IP), in the
// block that holds it, as Calico's AssignIP: a block of this node; a block
// nobody holds yet, claimed for this node; or another node's block,
// borrowed unless strictAffinity. It refuses an address that is taken,
// reserved, or in no enabled pool.
func (a *Allocator) allocateAddr(ctx context.Context, v view, req Request, h string) (Result, error) {
	c := req.Choice
	ip := c.IP
	i := slices.IndexFunc(v.blocks, func(b Block) bool { return b.CIDR.Contains(ip) })
	if i >= 0 {
		if j := slices.IndexFunc(v.blocks[i].Allocations, func(al Allocation) bool { return al.IP == ip }); j >= 0 {
			return Result{}, refuse(ErrAddressTaken, "%s is held by %s; delete that pod (or release the address) or choose another address",
				c.asked(), holder(v.blocks[i].Allocations[j]))
		}
	}
	if r, ok := reserved(v.settings.Reservations).find(ip); ok {
		what := r.CIDR.String()
		if r.CIDR.Bits() == 32 {
			what = r.CIDR.Addr().String()
		}
		return Result{}, refuse(ErrAddressReserved, "%s is reserved by IPReservation %s (%s); remove it from the reservation or choose another address",
			c.asked(), r.Name, what)
	}
	pi := slices.IndexFunc(v.pools, func(p model.Pool) bool { return p.CIDR.IsValid() && p.CIDR.Contains(ip) })
	switch {
	case pi < 0:
		return Result{}, refuse(ErrNotInPool, "%s is in no IPPool (IPPools: %s); choose an address in one, or create an IPPool that holds it",
			c.asked(), poolNames(v.pools))
	case v.pools[pi].Disabled:
		return Result{}, refuse(ErrNotInPool, "%s is in IPPool %s (%s), which is disabled; enable it or choose an address in another pool",
			c.asked(), v.pools[pi].Name, v.pools[pi].CIDR)
	}
	if i < 0 {
		// No block holds it: claim the pool's block that does.
		p := v.pools[pi]
		bs := p.BlockSize
		if bs == 0 {
			bs = model.DefaultBlockSize
		}
		cidr := netip.PrefixFrom(ip, bs).Masked()
		if j := slices.IndexFunc(v.blocks, func(b Block) bool { return b.CIDR.Overlaps(cidr) }); j >= 0 {
			return Result{}, fmt.Errorf("%s: block %s of IPPool %s overlaps block %s (made with another blockSize); choose another address",
				c.asked(), cidr, p.Name, v.blocks[j].CIDR)
		}
		if m := v.settings.MaxBlocksPerHost; m > 0 && a.ownBlocks(v.blocks) >= m {
			return Result{}, refuse(ErrBlockLimit, "%s is in block %s, which no node holds yet, and node %s already holds %d blocks (maxBlocksPerHost %d in IPAMConfiguration default); raise maxBlocksPerHost or choose an address in a block of this node",
				c.asked(), cidr, a.cfg.Node, a.ownBlocks(v.blocks), m)
		}
		b, err := a.claim(ctx, cidr)
		if err != nil {
			return Result{}, err
		}
		return a.allocateAt(ctx, b, ip, req, h, false)
	}
	b := v.blocks[i]
	switch {
	case b.Affinity == a.cfg.Node:
		if b.State == StatePending {
			cb, err := a.confirm(ctx, b)
			if err != nil {
				return Result{}, err
			}
			b = cb
		}
		return a.allocateAt(ctx, b, ip, req, h, false)
	case v.settings.StrictAffinity:
		return Result{}, refuse(ErrStrictAffinity, "%s is in block %s of node %s, and strictAffinity in IPAMConfiguration default forbids borrowing from another node's block; run the pod on node %s, choose an address in a block of node %s, or turn strictAffinity off",
			c.asked(), b.CIDR, orNone(b.Affinity), orNone(b.Affinity), a.cfg.Node)
	default:
		return a.allocateAt(ctx, b, ip, req, h, true)
	}
}

func orNone(node string) string {
	if node == "" {
		return "(none)"
	}
	return node
}
