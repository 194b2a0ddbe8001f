package cluster_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	kubetest "github.com/wren-net/wren/test/kube"
)

func TestDefaultPoolValidate(t *testing.T) {
	for _, tc := range []struct {
		p    cluster.DefaultPool
		want string // substring of the error; "" means valid
	}{
		{cluster.DefaultPool{}, ""},
		{cluster.DefaultPool{CIDR: "10.244.0.0/16"}, ""},
		{cluster.DefaultPool{CIDR: "10.244.0.0/16", BlockSize: 28, VXLANMode: "CrossSubnet", IPIPMode: "Never"}, ""},
		{cluster.DefaultPool{CIDR: "10.244.0.0"}, `CIDR "10.244.0.0"`},
		{cluster.DefaultPool{CIDR: "fd00::/64"}, "not IPv4"},
		{cluster.DefaultPool{CIDR: "10.244.1.0/16"}, "did you mean 10.244.0.0/16"},
		{cluster.DefaultPool{CIDR: "10.244.0.0/16", BlockSize: 19}, "block size 19"},
		{cluster.DefaultPool{CIDR: "10.244.0.0/24", BlockSize: 22}, "block size 22"},
		{cluster.DefaultPool{CIDR: "10.244.0.0/28"}, "block size 26 must be 20..32 and at least the pool's prefix length 28"},
		{cluster.DefaultPool{CIDR: "10.244.0.0/28", BlockSize: 30}, ""},
		{cluster.DefaultPool{CIDR: "10.244.0.0/16", VXLANMode: "always"}, `VXLAN mode "always"`},
		{cluster.DefaultPool{CIDR: "10.244.0.0/16", VXLANMode: "Always", IPIPMode: "CrossSubnet"}, "at most one"},
	} {
		err := tc.p.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: err = %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestEnsureDefaultPool: on an empty cluster three agents racing create
// exactly one pool with the settings; with any pool present nothing is
// created or changed.
func TestEnsureDefaultPool(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx := context.Background()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	// Without a setting: nothing created, a warning naming the fix.
	if created, err := cluster.EnsureDefaultPool(ctx, cfg, cluster.DefaultPool{}, log); err != nil || created {
		t.Fatalf("no setting: created=%v err=%v", created, err)
	}
	if !strings.Contains(logs.String(), "WREN_IPV4POOL_CIDR") {
		t.Errorf("no warning naming WREN_IPV4POOL_CIDR:\n%s", logs.String())
	}

	want := cluster.DefaultPool{CIDR: "10.244.0.0/16", BlockSize: 26, VXLANMode: "CrossSubnet"}
	var wg sync.WaitGroup
	created := make([]bool, 3)
	errs := make([]error, 3)
	for i := range created {
		wg.Go(func() { created[i], errs[i] = cluster.EnsureDefaultPool(ctx, cfg, want, log) })
	}
	wg.Wait()
	n := 0
	for i := range created {
		if errs[i] != nil {
			t.Errorf("agent %d: %v", i, errs[i])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d agents report creating the pool, want 1", n)
	}
	var l v1alpha1.IPPoolList
	if err := c.List(ctx, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 {
		t.Fatalf("%d pools, want 1", len(l.Items))
	}
	got := l.Items[0]
	if got.Name != cluster.DefaultPoolName || got.Spec.CIDR != "10.244.0.0/16" || got.Spec.BlockSize != 26 ||
		got.Spec.VXLANMode != v1alpha1.EncapCrossSubnet || got.Spec.IPIPMode != v1alpha1.EncapNever || got.Spec.NATOutgoing {
		t.Errorf("pool = %s %+v", got.Name, got.Spec)
	}

	// A changed setting with a pool present changes nothing.
	if created, err := cluster.EnsureDefaultPool(ctx, cfg, cluster.DefaultPool{CIDR: "10.250.0.0/16"}, log); err != nil || created {
		t.Fatalf("second start: created=%v err=%v", created, err)
	}
	// An operator's own pool (and no default) also stops it.
	if err := c.Delete(ctx, &got); err != nil {
		t.Fatal(err)
	}
	own := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "ops"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.251.0.0/16"}}
	if err := c.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	if created, err := cluster.EnsureDefaultPool(ctx, cfg, want, log); err != nil || created {
		t.Fatalf("with an operator's pool: created=%v err=%v", created, err)
	}
	if err := c.List(ctx, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Name != "ops" {
		t.Errorf("pools = %v, want only ops", l.Items)
	}
}
