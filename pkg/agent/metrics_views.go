package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// What the agent's metrics (pkg/metrics) read. Gauges are read at scrape
// time from views that never wait for the loop (Status, IPAMUsage,
// ProgrammedRoutes); the events no view holds reach an Observer through
// one call at the place they happen.

// Observer is told about the events the metrics count. pkg/metrics
// implements it; a nil Config.Observer means nobody listens. Every method
// is called on the goroutine doing the work and must not block.
type Observer interface {
	// Reconciled: one run of a reconciler (one of Reconcilers) took took
	// and ended with err (nil: it succeeded).
	Reconciled(reconciler string, took time.Duration, err error)
	// RoutesWritten: the counters of one route Apply or Delta that wrote
	// to the kernel (errors, repairs).
	RoutesWritten(routes.Stats)
	// NoFreeBlock: an allocation found no block to claim for this node;
	// it borrowed an address from another node's block (true) or failed
	// (false). See ipam.Config.NoFreeBlock.
	NoFreeBlock(borrowed bool)
	// ObserveCNI: one CNI command answered (cniserver.Observer).
	cniserver.Observer
}

// The reconcilers the loop times, in the order a full run applies them
// (the fast lane's route batches are "routes-delta").
const (
	ReconcilerTunnels        = "tunnels"
	ReconcilerVeths          = "veths"
	ReconcilerRoutes         = "routes"
	ReconcilerRoutesDelta    = "routes-delta"
	ReconcilerNAT            = "nat"
	ReconcilerAdvertisements = "advertisements"
	ReconcilerSessions       = "sessions"
)

// Reconcilers lists every reconciler name Observer.Reconciled gets.
var Reconcilers = []string{ReconcilerTunnels, ReconcilerVeths, ReconcilerRoutes, ReconcilerRoutesDelta,
	ReconcilerNAT, ReconcilerAdvertisements, ReconcilerSessions}

type nopObserver struct{}

func (nopObserver) Reconciled(string, time.Duration, error) {}
func (nopObserver) RoutesWritten(routes.Stats)              {}
func (nopObserver) NoFreeBlock(bool)                        {}
func (nopObserver) ObserveCNI(string, time.Duration, error) {}

var _ cniserver.Observer = (*Agent)(nil)

// obs is the configured Observer, or one that ignores everything.
func (a *Agent) obs() Observer {
	if a.cfg.Observer == nil {
		return nopObserver{}
	}
	return a.cfg.Observer
}

// timed runs one reconciler's apply and tells the Observer.
func (a *Agent) timed(ctx context.Context, reconciler string, apply func(context.Context) error) error {
	start := time.Now()
	err := apply(ctx)
	a.obs().Reconciled(reconciler, time.Since(start), err)
	return err
}

// ObserveCNI passes the CNI server's report on to the Observer
// (cniserver.Register finds it on the agent, its Handler).
func (a *Agent) ObserveCNI(command string, took time.Duration, err error) {
	a.obs().ObserveCNI(command, took, err)
}

// ProgrammedRoutes counts the routes the route reconciler has in the
// kernel, by kind (every kind, zeros included).
func (a *Agent) ProgrammedRoutes() map[model.RouteKind]int { return a.routes.Programmed() }

// PoolUsage is one IPPool's address and block usage.
type PoolUsage struct {
	Name     string
	CIDR     netip.Prefix
	Disabled bool
	// Size is the number of addresses in the pool, Free those no
	// allocation holds (in a claimed block or not: any node may borrow
	// from another's block).
	Size, Free uint64
	// Blocks is the number of blocks claimed from the pool; Unclaimed the
	// blocks of the pool's block size no node has claimed yet. A node
	// whose blocks are full and that finds none unclaimed borrows single
	// addresses from other nodes' blocks.
	Blocks    int
	Unclaimed uint64
}

// IPAMUsage is IPAM as the cluster cache has it, from this node's point
// of view.
type IPAMUsage struct {
	Pools []PoolUsage
	// Blocks counts this node's blocks (its affinity) by claim state,
	// ipam.StatePending and ipam.StateConfirmed, both always present.
	Blocks map[string]int
	// Allocated is the addresses allocated for this node (its pods and its
	// tunnel addresses), in its own blocks or borrowed; OwnFree the free
	// addresses in its own confirmed blocks.
	Allocated, OwnFree int
	// Borrowed is the addresses this node's pods use from other nodes'
	// blocks; Lent the addresses of this node's blocks that other nodes'
	// pods use. Each is routed as a /32 that must win over the owner's
	// block route and blackhole (Calico's "route blackhole" problem).
	Borrowed, Lent int
}

// IPAMUsage counts the pools' and this node's addresses from the cluster
// cache. It never waits for the loop.
func (a *Agent) IPAMUsage() (IPAMUsage, error) {
	pools, err := a.cluster.Pools()
	if err != nil {
		return IPAMUsage{}, err
	}
	blocks, err := a.cluster.Blocks()
	if err != nil {
		return IPAMUsage{}, err
	}
	settings, err := a.cluster.IPAMSettings()
	if err != nil {
		return IPAMUsage{}, err
	}
	return ipamUsage(a.cfg.NodeName, pools, blocks, settings.Reservations), nil
}

// ipamUsage counts pools and blocks for node me, from the same view as
// wrenctl ipam show (blocksView), so the two never disagree.
func ipamUsage(me string, pools []model.Pool, blocks []ipam.Block, res []ipam.Reservation) IPAMUsage {
	v := blocksView(pools, blocks, res)
	u := IPAMUsage{Blocks: map[string]int{ipam.StatePending: 0, ipam.StateConfirmed: 0}}
	claimed := map[string]uint64{} // addresses inside claimed blocks, by pool
	for _, b := range v.Blocks {
		if b.Pool != "" {
			claimed[b.Pool] += uint64(1) << (32 - b.CIDR.Bits())
		}
		own := b.Node == me
		if own {
			u.Blocks[b.State]++
			if b.State == ipam.StateConfirmed {
				u.OwnFree += b.Free
			}
		}
		for _, al := range b.Allocations {
			// As pkg/desired routes them: an allocation naming no node
			// belongs to the block's node.
			user := al.Node
			if user == "" {
				user = b.Node
			}
			switch {
			case user == me:
				u.Allocated++
				if !own {
					u.Borrowed++
				}
			case own:
				u.Lent++
			}
		}
	}
	for _, p := range v.Pools {
		pu := PoolUsage{Name: p.Name, CIDR: p.CIDR, Disabled: p.Disabled, Size: p.Size, Free: p.Free, Blocks: p.Blocks}
		if p.BlockSize >= p.CIDR.Bits() && p.BlockSize <= model.MaxBlockSize {
			pu.Unclaimed = (p.Size - min(p.Size, claimed[p.Name])) >> (32 - p.BlockSize)
		}
		u.Pools = append(u.Pools, pu)
	}
	return u
}
