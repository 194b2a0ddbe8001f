package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	kubetest "github.com/wren-net/wren/test/kube"
)

// Test addresses: pools inside 10.244.0.0/14 (API objects only).

// TestPoolsViewAndIPAMAgree: on a pool set with an overlap won by a
// disabled pool, pools that only an old client could write (both
// encapsulations, blocks larger than the pool, host bits in the CIDR), a
// pool overlapping only an invalid one, and a nodeSelector that does not
// parse, the agent's view and IPAM (through the API server and through
// the cache) list the same pools, each problem is one Warning Event
// naming the pool and the field, and IPAM allocates from neither the
// overlap's loser nor the disabled pool.
func TestPoolsViewAndIPAMAgree(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name, cidr string, f func(*v1alpha1.IPPoolSpec)) *v1alpha1.IPPool {
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(cidr)}}
		if f != nil {
			f(&p.Spec)
		}
		return p
	}
	// Created in name order, so that the older of two overlapping pools is
	// also the first by name when both were created in the same second.
	valid := []*v1alpha1.IPPool{
		pool("a-old-disabled", "10.244.0.0/16", func(s *v1alpha1.IPPoolSpec) { s.Disabled, s.VXLANMode = true, v1alpha1.EncapAlways }),
		pool("b-overlap", "10.244.128.0/17", func(s *v1alpha1.IPPoolSpec) { s.IPIPMode = v1alpha1.EncapAlways }),
	}
	oldClient := []*v1alpha1.IPPool{
		pool("c-both", "10.245.0.0/16", func(s *v1alpha1.IPPoolSpec) {
			s.VXLANMode, s.IPIPMode = v1alpha1.EncapAlways, v1alpha1.EncapAlways
		}),
		pool("e-big-blocks", "10.246.0.0/27", func(s *v1alpha1.IPPoolSpec) { s.BlockSize = 26 }),
		pool("g-host-bits", "10.247.0.1/16", nil),
	}
	later := []*v1alpha1.IPPool{
		pool("d-beside-invalid", "10.245.0.0/24", func(s *v1alpha1.IPPoolSpec) { s.BlockSize = 28 }),
		pool("f-bad-selector", "10.246.64.0/18", func(s *v1alpha1.IPPoolSpec) { s.NodeSelector = "zone ==" }),
	}
	for _, p := range valid {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	withoutPoolRules(t, c, func() {
		for _, p := range oldClient {
			poll(t, "old-client pool "+p.Name+" accepted", func() error { return c.Create(ctx, p.DeepCopy()) })
		}
	})
	for _, p := range later {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	never := model.EncapNever
	want := []model.Pool{
		{Name: "a-old-disabled", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26, VXLAN: model.EncapAlways, IPIP: never, Disabled: true},
		{Name: "d-beside-invalid", CIDR: netip.MustParsePrefix("10.245.0.0/24"), BlockSize: 28, VXLAN: never, IPIP: never},
		{Name: "f-bad-selector", CIDR: netip.MustParsePrefix("10.246.64.0/18"), BlockSize: 26, VXLAN: never, IPIP: never, NodeSelector: "zone =="},
	}
	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	store := v.IPAMStore().(ipam.CachedStore)
	standalone := cluster.NewIPAMStore(c, slog.New(slog.DiscardHandler))
	for _, l := range []struct {
		name string
		list func() ([]model.Pool, error)
	}{
		{"View.Pools", v.Pools},
		{"the view's IPAM store, ListPools", func() ([]model.Pool, error) { return store.ListPools(ctx) }},
		{"the view's IPAM store, CachedPools", func() ([]model.Pool, error) { return store.CachedPools(ctx) }},
		{"a standalone IPAM store", func() ([]model.Pool, error) { return standalone.ListPools(ctx) }},
	} {
		got, err := l.list()
		if err != nil {
			t.Fatalf("%s: %v", l.name, err)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s (-want +got):\n%s", l.name, diff)
		}
	}

	// One Event per problem, although the view and its IPAM store both
	// found each (and the view listed twice).
	if _, err := v.Pools(); err != nil {
		t.Fatal(err)
	}
	wantEvents := []struct{ name, reason, text string }{
		{"b-overlap", "OverlappingPool", "spec.cidr 10.244.128.0/17 overlaps IPPool a-old-disabled (10.244.0.0/16)"},
		{"c-both", "BothEncapsulations", "spec.ipipMode=Always and spec.vxlanMode=Always: at most one may be enabled"},
		{"e-big-blocks", "InvalidBlockSize", "spec.blockSize 26 must be 20 to 32 and at least the prefix length of spec.cidr 10.246.0.0/27"},
		{"f-bad-selector", "InvalidNodeSelector", "spec.nodeSelector: selector \"zone ==\""},
		{"g-host-bits", "InvalidCIDR", "spec.cidr: cidr \"10.247.0.1/16\" is not an IPv4 network address"},
	}
	// Events are written asynchronously (client-go's broadcaster): wait
	// until each wanted one is there, then check the whole list.
	var evs corev1.EventList
	poll(t, "the IPPool Events are recorded", func() error {
		if err := c.List(ctx, &evs); err != nil {
			return err
		}
		for _, w := range wantEvents {
			found := false
			for _, e := range evs.Items {
				found = found || e.InvolvedObject.Name == w.name && e.Reason == w.reason
			}
			if !found {
				return fmt.Errorf("no %s Event on IPPool %s yet", w.reason, w.name)
			}
		}
		return nil
	})
	count := map[string]int{}
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind != "IPPool" || e.Type != corev1.EventTypeWarning {
			continue
		}
		count[e.InvolvedObject.Name+"/"+e.Reason]++
		ok := false
		for _, w := range wantEvents {
			ok = ok || e.InvolvedObject.Name == w.name && e.Reason == w.reason && strings.Contains(e.Message, w.text)
		}
		if !ok {
			t.Errorf("unexpected Event on IPPool %s: %s: %s", e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	for _, w := range wantEvents {
		if n := count[w.name+"/"+w.reason]; n != 1 {
			t.Errorf("%d %s Events on IPPool %s, want 1", n, w.reason, w.name)
		}
	}

	// IPAM allocates from the one pool that is enabled and selects every
	// node: not from b-overlap (inside the disabled pool), not from
	// f-bad-selector.
	alloc, err := ipam.New(ipam.Config{Node: "node-a", Logger: slog.New(slog.DiscardHandler)}, store)
	if err != nil {
		t.Fatal(err)
	}
	r, err := alloc.Allocate(ctx, ipam.Request{Namespace: "default", Pod: "web", ContainerID: "c0ffee"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Block != netip.MustParsePrefix("10.245.0.0/28") {
		t.Errorf("allocated %s from block %s, want block 10.245.0.0/28 of d-beside-invalid", r.IP, r.Block)
	}
}

// withoutPoolRules runs fn while the IPPool CRD lacks its CEL rules on
// spec and on spec.cidr, as if fn's objects were written before the rules
// existed (the API server keeps such objects as they are).
func withoutPoolRules(t *testing.T, c client.Client, fn func()) {
	t.Helper()
	ctx := context.Background()
	key := client.ObjectKey{Name: "ippools.wren.network"}
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := c.Get(ctx, key, crd); err != nil {
		t.Fatal(err)
	}
	orig := crd.DeepCopy()
	versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if err != nil || len(versions) != 1 {
		t.Fatalf("CRD versions %v, %v; want one", versions, err)
	}
	v0 := versions[0].(map[string]any)
	unstructured.RemoveNestedField(v0, "schema", "openAPIV3Schema", "properties", "spec", "x-kubernetes-validations")
	unstructured.RemoveNestedField(v0, "schema", "openAPIV3Schema", "properties", "spec", "properties", "cidr", "x-kubernetes-validations")
	versions[0] = v0
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	fn()
	cur := orig.DeepCopy()
	if err := c.Get(ctx, key, cur); err != nil {
		t.Fatal(err)
	}
	orig.SetResourceVersion(cur.GetResourceVersion())
	if err := c.Update(ctx, orig); err != nil {
		t.Fatal(err)
	}
}

// poll retries cond until it succeeds or 10 s pass.
func poll(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of the deadline loop
	}
}
