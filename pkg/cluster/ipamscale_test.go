package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	kubetest "github.com/wren-net/wren/test/kube"
)

// TestIPAMRace3000: three allocators, each with its own API client and
// informer cache exactly as an agent has them (cluster.View), race for
// blocks and 3,000 addresses of a /20 (64 blocks of /26) through the real
// apiserver. No address is handed out twice, every allocation is recorded
// in an IPAMBlock, and every block ends up confirmed.
// (Exhaustion is TestIPAMStoreAllocatorsRace's job.)
func TestIPAMRace3000(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 3,000 API writes")
	}
	cfg := kubetest.Start(t)
	ctx := context.Background()
	admin, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "big"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/20", BlockSize: 26}}
	if err := admin.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	const nodes, perNode = 3, 1000
	got := make([][]netip.Addr, nodes)
	errs := make([]error, nodes)
	var allocs []*ipam.Allocator
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for n := range nodes {
		node := fmt.Sprintf("node-%c", 'a'+n)
		v, err := cluster.NewView(cfg, node, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(runCtx, func() {}); err != nil {
			t.Fatal(err)
		}
		a, err := ipam.New(ipam.Config{Node: node, Logger: slog.New(slog.DiscardHandler)}, v.IPAMStore())
		if err != nil {
			t.Fatal(err)
		}
		allocs = append(allocs, a)
	}
	start := time.Now()
	for n, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perNode {
				r, err := a.Allocate(ctx, ipam.Request{Namespace: "default", Pod: fmt.Sprintf("n%d-p%d", n, i), ContainerID: "c"})
				if err != nil {
					errs[n] = err
					return
				}
				got[n] = append(got[n], r.IP)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	seen := map[netip.Addr]int{}
	for n := range nodes {
		if errs[n] != nil {
			t.Fatalf("allocator %d after %d addresses: %v", n, len(got[n]), errs[n])
		}
		for _, ip := range got[n] {
			if prev, dup := seen[ip]; dup {
				t.Fatalf("%s handed out to allocators %d and %d", ip, prev, n)
			}
			seen[ip] = n
		}
	}
	var bl v1alpha1.IPAMBlockList
	if err := admin.List(ctx, &bl); err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, b := range bl.Items {
		if b.Spec.State != v1alpha1.BlockConfirmed {
			t.Errorf("block %s left %s", b.Name, b.Spec.State)
		}
		for _, al := range b.Spec.Allocations {
			recorded[al.IP] = true
		}
	}
	for ip := range seen {
		if !recorded[ip.String()] {
			t.Errorf("%s was returned but is not recorded in any IPAMBlock", ip)
		}
	}
	if len(seen) != nodes*perNode || len(recorded) != nodes*perNode {
		t.Fatalf("%d distinct returned, %d recorded; want %d", len(seen), len(recorded), nodes*perNode)
	}
	t.Logf("3 allocators, %d addresses, %d blocks through the apiserver in %s (%.0f allocations/s)",
		len(seen), len(bl.Items), took.Round(time.Millisecond), float64(len(seen))/took.Seconds())
}
