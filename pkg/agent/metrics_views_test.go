package agent

// The views and hooks the metrics read. Addresses: node-1 (this node)
// 198.18.0.11/24, node-2 .12, node-3 .13; pools inside 10.244.0.0/16.

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// TestIPAMUsage: pool sizes, free addresses and unclaimed blocks; this
// node's blocks by state, its addresses, borrowed and lent.
func TestIPAMUsage(t *testing.T) {
	al := func(ip, node string) ipam.Allocation {
		return ipam.Allocation{IP: netip.MustParseAddr(ip), Handle: "h-" + ip, Node: node}
	}
	pools := []model.Pool{
		{Name: "small", CIDR: netip.MustParsePrefix("10.244.0.0/28"), BlockSize: 30},
		{Name: "big", CIDR: netip.MustParsePrefix("10.244.64.0/18")}, // default /26 blocks
	}
	blocks := []ipam.Block{
		// node-1's: its pod, one lent to node-3, one with no node (its own).
		{CIDR: netip.MustParsePrefix("10.244.0.0/30"), Affinity: "node-1", State: ipam.StateConfirmed,
			Allocations: []ipam.Allocation{al("10.244.0.0", "node-1"), al("10.244.0.1", "node-3"), al("10.244.0.2", "")}},
		{CIDR: netip.MustParsePrefix("10.244.0.4/30"), Affinity: "node-2", State: ipam.StateConfirmed,
			Allocations: []ipam.Allocation{al("10.244.0.4", "node-2"), al("10.244.0.5", "node-1")}}, // node-1 borrows
		{CIDR: netip.MustParsePrefix("10.244.0.8/30"), Affinity: "node-1", State: ipam.StatePending},
		{CIDR: netip.MustParsePrefix("10.244.64.0/26"), Affinity: "node-2", State: ipam.StateConfirmed,
			Allocations: []ipam.Allocation{al("10.244.64.1", "node-2")}},
		{CIDR: netip.MustParsePrefix("10.250.0.0/26"), Affinity: "node-1", State: ipam.StateConfirmed}, // in no pool
	}
	got := ipamUsage("node-1", pools, blocks, nil)
	want := IPAMUsage{
		Pools: []PoolUsage{
			{Name: "small", CIDR: pools[0].CIDR, Size: 16, Free: 11, Blocks: 3, Unclaimed: 1},
			{Name: "big", CIDR: pools[1].CIDR, Size: 16384, Free: 16383, Blocks: 1, Unclaimed: 255},
		},
		Blocks:    map[string]int{ipam.StatePending: 1, ipam.StateConfirmed: 2},
		Allocated: 3, // 10.244.0.0, .2 (no node: the block's) and the borrowed .5
		OwnFree:   1 + 64,
		Borrowed:  1,
		Lent:      1,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// recordingObserver records what the loop reports.
type recordingObserver struct {
	reconciled []string
	writes     []routes.Stats
}

func (r *recordingObserver) Reconciled(name string, _ time.Duration, err error) {
	if err != nil {
		name += " failed"
	}
	r.reconciled = append(r.reconciled, name)
}
func (r *recordingObserver) RoutesWritten(s routes.Stats)            { r.writes = append(r.writes, s) }
func (r *recordingObserver) NoFreeBlock(bool)                        {}
func (r *recordingObserver) ObserveCNI(string, time.Duration, error) {}

// TestLoopObserved: a full run times each reconciler in the order it
// applies them, the fast lane times its route batch, and the routes in
// place are counted by kind.
func TestLoopObserved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent(t)
		obs := &recordingObserver{}
		f.cfg.Observer = obs
		ctx := context.Background()
		if err := f.sync(ctx); err != nil {
			t.Fatal(err)
		}
		full := []string{ReconcilerTunnels, ReconcilerVeths, ReconcilerRoutes, ReconcilerNAT, ReconcilerAdvertisements, ReconcilerSessions}
		if !slices.Equal(obs.reconciled, full) {
			t.Errorf("full run reported %v; want %v", obs.reconciled, full)
		}
		want := map[model.RouteKind]int{model.RouteBlackhole: 1, model.RoutePod: 1, model.RouteRemoteTunnel: 0, model.RouteRemoteDirect: 0}
		if diff := cmp.Diff(want, f.ProgrammedRoutes()); diff != "" {
			t.Errorf("programmed after the full run (-want +got)\n%s", diff)
		}
		obs.reconciled = nil
		f.sp.up(fNode2.Addr())
		f.sp.learn("10.244.0.64/26", fNode2.Addr())
		if err := f.sync(ctx); err != nil { // the session change
			t.Fatal(err)
		}
		f.sp.learn("10.244.0.128/26", fNode2.Addr())
		obs.reconciled = nil
		if full := f.bgpDelta(ctx); full {
			t.Fatal("the fast lane asked for a full run")
		}
		if !slices.Equal(obs.reconciled, []string{ReconcilerRoutesDelta}) {
			t.Errorf("fast lane reported %v; want [%s]", obs.reconciled, ReconcilerRoutesDelta)
		}
		want[model.RouteRemoteDirect] = 2
		if diff := cmp.Diff(want, f.ProgrammedRoutes()); diff != "" {
			t.Errorf("programmed after the fast lane (-want +got)\n%s", diff)
		}
	})
}
