package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	kubetest "github.com/wren-net/wren/test/kube"
)

// Test addresses: pods 10.244.0.0/16 (API objects only).

// TestIPAMStoreCAS drives one block through claim, confirm, allocate,
// stale writes and release against the real API server, checking that
// each conditional write is refused with ipam's sentinel error exactly
// when the block changed underneath.
func TestIPAMStoreCAS(t *testing.T) {
	cfg := kubetest.Start(t)
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := cluster.NewIPAMStore(c, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	cidr := netip.MustParsePrefix("10.244.3.64/26")

	if _, err := s.GetBlock(ctx, cidr); !errors.Is(err, ipam.ErrNotFound) {
		t.Fatalf("get before create: %v, want ErrNotFound", err)
	}

	// Claim: the first create wins, the second is ErrExists.
	claimA, err := s.CreateBlock(ctx, ipam.Block{CIDR: cidr, Affinity: "node-a", State: ipam.StatePending})
	if err != nil {
		t.Fatal(err)
	}
	if claimA.Version == "" || claimA.State != ipam.StatePending {
		t.Fatalf("created block %+v: want a version and state pending", claimA)
	}
	if _, err := s.CreateBlock(ctx, ipam.Block{CIDR: cidr, Affinity: "node-b", State: ipam.StatePending}); !errors.Is(err, ipam.ErrExists) {
		t.Fatalf("second claim: %v, want ErrExists", err)
	}

	// Confirm with the created version; a second writer holding the same
	// version then conflicts.
	confirmed := claimA
	confirmed.State = ipam.StateConfirmed
	confirmed, err = s.UpdateBlock(ctx, confirmed)
	if err != nil {
		t.Fatal(err)
	}
	if confirmed.Version == claimA.Version {
		t.Fatalf("update kept version %s", confirmed.Version)
	}
	stale := claimA
	stale.Affinity = "node-b"
	if _, err := s.UpdateBlock(ctx, stale); !errors.Is(err, ipam.ErrConflict) {
		t.Fatalf("update with stale version: %v, want ErrConflict", err)
	}
	if _, err := s.UpdateBlock(ctx, ipam.Block{CIDR: cidr, State: ipam.StateConfirmed}); err == nil || errors.Is(err, ipam.ErrConflict) {
		t.Fatalf("update without version: %v, want a non-retryable error", err)
	}

	// Allocate (own and borrowed) and round-trip every field.
	alloc := confirmed
	alloc.Allocations = []ipam.Allocation{
		{IP: netip.MustParseAddr("10.244.3.64"), Handle: "node/node-a/vxlan", Node: "node-a"},
		{IP: netip.MustParseAddr("10.244.3.65"), Handle: "default/web/c0ffee", Namespace: "default", Pod: "web", ContainerID: "c0ffee", Node: "node-b"},
	}
	alloc, err = s.UpdateBlock(ctx, alloc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlock(ctx, cidr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(alloc, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("GetBlock after allocate (-written +read):\n%s", diff)
	}
	list, err := s.ListBlocks(ctx)
	if err != nil || len(list) != 1 || list[0].Version != alloc.Version {
		t.Fatalf("ListBlocks = %+v, %v; want the one block at version %s", list, err, alloc.Version)
	}

	// Release everything, stamp emptySince (stored with second
	// precision), then delete: a stale version conflicts, the current
	// one deletes, and a repeat is ErrNotFound.
	empty := alloc
	empty.Allocations = nil
	empty.EmptySince = time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	empty, err = s.UpdateBlock(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !empty.EmptySince.Equal(want) {
		t.Errorf("emptySince read back %s, want %s", empty.EmptySince, want)
	}
	if err := s.DeleteBlock(ctx, alloc); !errors.Is(err, ipam.ErrConflict) {
		t.Fatalf("delete with stale version: %v, want ErrConflict", err)
	}
	if err := s.DeleteBlock(ctx, empty); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlock(ctx, empty); !errors.Is(err, ipam.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.UpdateBlock(ctx, empty); !errors.Is(err, ipam.ErrNotFound) {
		t.Fatalf("update after delete: %v, want ErrNotFound", err)
	}
}

// TestIPAMStorePools checks the IPPool conversion, defaults (block size,
// modes) included.
func TestIPAMStorePools(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []*v1alpha1.IPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.245.0.0/24", BlockSize: 28,
			VXLANMode: v1alpha1.EncapCrossSubnet, NodeSelector: "zone == 'a'", Disabled: true}},
	} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := cluster.NewIPAMStore(c, nil).ListPools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Pool{
		{Name: "a", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26, VXLAN: model.EncapNever, IPIP: model.EncapNever},
		{Name: "b", CIDR: netip.MustParsePrefix("10.245.0.0/24"), BlockSize: 28, VXLAN: model.EncapCrossSubnet, IPIP: model.EncapNever,
			Disabled: true, NodeSelector: "zone == 'a'"},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("ListPools (-want +got):\n%s", diff)
	}
}

// TestIPAMStoreAllocatorsRace runs three pkg/ipam allocators, one per node,
// each with its own client, against one small pool: 10.244.0.0/26 in /28
// blocks is 4 blocks of 16 = 64 addresses, and together they ask for 75.
// Exactly 64 succeed with distinct addresses recorded in the API under
// their handles; the other 11 fail with ipam.ErrExhausted.
func TestIPAMStoreAllocatorsRace(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx := context.Background()
	admin, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "small"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/26", BlockSize: 28}}
	if err := admin.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}

	const nodes, perNode, capacity = 3, 25, 64
	type result struct {
		handle string
		ip     netip.Addr
		err    error
	}
	results := make(chan result, nodes*perNode)
	var wg sync.WaitGroup
	for n := range nodes {
		c, err := cluster.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		node := fmt.Sprintf("node-%c", 'a'+n)
		a, err := ipam.New(ipam.Config{Node: node, Logger: slog.New(slog.DiscardHandler)}, cluster.NewIPAMStore(c, nil))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perNode {
				req := ipam.Request{Namespace: "default", Pod: fmt.Sprintf("%s-pod-%d", node, i), ContainerID: fmt.Sprintf("c%d", i)}
				res, err := a.Allocate(ctx, req)
				results <- result{handle: ipam.PodHandle("default", req.Pod, req.ContainerID), ip: res.IP, err: err}
			}
		}()
	}
	wg.Wait()
	close(results)

	byIP := map[netip.Addr]string{}
	exhausted := 0
	for r := range results {
		switch {
		case errors.Is(r.err, ipam.ErrExhausted):
			exhausted++
		case r.err != nil:
			t.Errorf("allocate %s: %v", r.handle, r.err)
		case byIP[r.ip] != "":
			t.Errorf("%s handed to both %s and %s", r.ip, byIP[r.ip], r.handle)
		default:
			byIP[r.ip] = r.handle
		}
	}
	if len(byIP) != capacity || exhausted != nodes*perNode-capacity {
		t.Errorf("%d allocated and %d exhausted, want %d and %d", len(byIP), exhausted, capacity, nodes*perNode-capacity)
	}

	// The API holds exactly those allocations, in confirmed blocks.
	var blocks v1alpha1.IPAMBlockList
	if err := admin.List(ctx, &blocks); err != nil {
		t.Fatal(err)
	}
	recorded := map[netip.Addr]string{}
	for _, b := range blocks.Items {
		if b.Spec.State != v1alpha1.BlockConfirmed {
			t.Errorf("block %s left %s", b.Name, b.Spec.State)
		}
		for _, al := range b.Spec.Allocations {
			recorded[netip.MustParseAddr(al.IP)] = al.Handle
		}
	}
	if diff := cmp.Diff(byIP, recorded, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("allocations in the API differ from those returned (-returned +recorded):\n%s", diff)
	}
	t.Logf("%d blocks, %d addresses allocated, %d requests exhausted", len(blocks.Items), len(byIP), exhausted)
}
