package cluster_test

// Test addresses: pools 10.244.0.0/16 and 10.245.0.0/16 (API objects
// only).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	kubetest "github.com/wren-net/wren/test/kube"
)

var cmpAddrs = []cmp.Option{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })}

// TestViewIPAMChoiceAndSettings, against a real API server: the pod and
// namespace annotations (both key prefixes, pod over namespace) reach the
// View's PodChoice, for a pod in its cache and for one only an uncached
// GET finds; IPReservations and the IPAMConfiguration named default reach
// IPAMSettings and the IPAM store (cache and API), and follow edits; an
// allocator over the View's store gives a pod its chosen address and
// skips reserved ones; admission refuses an IPv6 reservation and an
// IPAMConfiguration not named default.
func TestViewIPAMChoiceAndSettings(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Annotations: map[string]string{cluster.AnnotationIPv4Pools: `["blue"]`}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Annotations: map[string]string{cluster.CalicoAnnotationIPv4Pools: `["10.245.0.0/16"]`}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-c"}},
	} {
		mustCreate(ns)
	}
	pod := func(ns, name, node string, annot map[string]string) {
		t.Helper()
		mustCreate(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annot},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}})
	}
	pod("team-a", "fixed", "node-a", map[string]string{cluster.AnnotationIPAddrs: `["10.244.1.7"]`})
	pod("team-a", "calico-fixed", "node-a", map[string]string{cluster.CalicoAnnotationIPAddrs: `["10.244.1.8"]`})
	pod("team-a", "inherits", "node-a", nil)
	pod("team-a", "own-pools", "node-a", map[string]string{cluster.CalicoAnnotationIPv4Pools: `["default"]`})
	pod("team-b", "inherits", "node-a", nil)
	pod("team-c", "plain", "node-a", nil)
	pod("team-c", "bad", "node-a", map[string]string{cluster.AnnotationIPAddrs: `10.244.1.9`})
	pod("team-c", "elsewhere", "node-b", map[string]string{cluster.AnnotationIPAddrs: `["10.244.1.10"]`}) // not in node-a's cache

	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr
	for _, tt := range []struct {
		ns, name string
		want     ipam.Choice
		err      string
	}{
		{ns: "team-a", name: "fixed", want: ipam.Choice{IP: addr("10.244.1.7"), IPFrom: "annotation wren.network/ipAddrs of pod team-a/fixed"}},
		{ns: "team-a", name: "calico-fixed", want: ipam.Choice{IP: addr("10.244.1.8"), IPFrom: "annotation cni.projectcalico.org/ipAddrs of pod team-a/calico-fixed"}},
		{ns: "team-a", name: "inherits", want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "blue"}}, PoolsFrom: "annotation wren.network/ipv4pools of namespace team-a"}},
		{ns: "team-a", name: "own-pools", want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "default"}}, PoolsFrom: "annotation cni.projectcalico.org/ipv4pools of pod team-a/own-pools"}},
		{ns: "team-b", name: "inherits", want: ipam.Choice{Pools: []ipam.PoolRef{{CIDR: netip.MustParsePrefix("10.245.0.0/16")}},
			PoolsFrom: "annotation cni.projectcalico.org/ipv4pools of namespace team-b"}},
		{ns: "team-c", name: "plain"},
		{ns: "team-c", name: "missing"}, // no such pod: no choice
		{ns: "team-c", name: "elsewhere", want: ipam.Choice{IP: addr("10.244.1.10"), IPFrom: "annotation wren.network/ipAddrs of pod team-c/elsewhere"}},
		{ns: "team-c", name: "bad", err: `annotation wren.network/ipAddrs of pod team-c/bad: "10.244.1.9" is not a JSON list of addresses`},
	} {
		got, err := v.PodChoice(ctx, tt.ns, tt.name)
		if tt.err != "" {
			if !errors.Is(err, ipam.ErrRefused) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s/%s: %+v, %v; want ErrRefused with %q", tt.ns, tt.name, got, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s/%s: %v", tt.ns, tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpAddrs...); diff != "" {
			t.Errorf("%s/%s (-want +got):\n%s", tt.ns, tt.name, diff)
		}
	}

	// Settings: none yet.
	store := v.IPAMStore().(ipam.CachedStore)
	standalone := cluster.NewIPAMStore(c, slog.New(slog.DiscardHandler))
	readers := []struct {
		name string
		read func() (ipam.Settings, error)
	}{
		{"View.IPAMSettings", v.IPAMSettings},
		{"the view's IPAM store, Settings", func() (ipam.Settings, error) { return store.Settings(ctx) }},
		{"the view's IPAM store, CachedSettings", func() (ipam.Settings, error) { return store.CachedSettings(ctx) }},
		{"a standalone IPAM store", func() (ipam.Settings, error) { return standalone.Settings(ctx) }},
	}
	expect := func(want ipam.Settings) {
		t.Helper()
		for _, r := range readers {
			poll(t, r.name+" shows the settings", func() error {
				got, err := r.read()
				if err != nil {
					return err
				}
				if diff := cmp.Diff(want, got, cmpAddrs...); diff != "" {
					return fmt.Errorf("(-want +got):\n%s", diff)
				}
				return nil
			})
		}
	}
	expect(ipam.Settings{})

	mustCreate(&v1alpha1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "gateways"},
		Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.244.1.0/30", "10.244.1.9"}}})
	// Host bits pass admission and are ignored, as Calico's parser does.
	mustCreate(&v1alpha1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "legacy"},
		Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.244.7.9/24"}}})
	cfgObj := &v1alpha1.IPAMConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.IPAMConfigurationSpec{StrictAffinity: true, MaxBlocksPerHost: 3}}
	mustCreate(cfgObj)
	pfx := netip.MustParsePrefix
	expect(ipam.Settings{Reservations: []ipam.Reservation{{Name: "gateways", CIDR: pfx("10.244.1.0/30")}, {Name: "gateways", CIDR: pfx("10.244.1.9/32")}, {Name: "legacy", CIDR: pfx("10.244.7.0/24")}},
		StrictAffinity: true, MaxBlocksPerHost: 3})
	cfgObj.Spec = v1alpha1.IPAMConfigurationSpec{MaxBlocksPerHost: 1}
	if err := c.Update(ctx, cfgObj); err != nil {
		t.Fatal(err)
	}
	expect(ipam.Settings{Reservations: []ipam.Reservation{{Name: "gateways", CIDR: pfx("10.244.1.0/30")}, {Name: "gateways", CIDR: pfx("10.244.1.9/32")}, {Name: "legacy", CIDR: pfx("10.244.7.0/24")}},
		MaxBlocksPerHost: 1})

	// Admission: IPv4 only, and only the configuration named default.
	for _, o := range []client.Object{
		&v1alpha1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "v6"}, Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"fd00::/64"}}},
		&v1alpha1.IPAMConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
	} {
		if err := c.Create(ctx, o); err == nil {
			t.Errorf("%T %s accepted; want it refused at admission", o, o.GetName())
		}
	}

	// An allocator over the View's store: the chosen address exactly, in
	// a block claimed for it; a pod without a choice gets the lowest
	// address of that block after the reserved 10.244.1.0/30; the
	// reserved 10.244.1.9 is refused naming the reservation.
	mustCreate(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"}})
	poll(t, "the pool is cached", func() error {
		ps, err := store.CachedPools(ctx)
		if err != nil || len(ps) != 1 {
			return fmt.Errorf("cached pools %v, %v", ps, err)
		}
		return nil
	})
	a, err := ipam.New(ipam.Config{Node: "node-a", Logger: slog.New(slog.DiscardHandler)}, v.IPAMStore())
	if err != nil {
		t.Fatal(err)
	}
	choice, err := v.PodChoice(ctx, "team-a", "fixed")
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.Allocate(ctx, ipam.Request{Namespace: "team-a", Pod: "fixed", ContainerID: "c1", Choice: choice})
	if err != nil || r.IP != addr("10.244.1.7") || r.Block != pfx("10.244.1.0/26") {
		t.Fatalf("pod with ipAddrs: %+v, %v; want 10.244.1.7 in a block claimed for it", r, err)
	}
	r, err = a.Allocate(ctx, ipam.Request{Namespace: "team-c", Pod: "plain", ContainerID: "c2"})
	if err != nil || r.IP != addr("10.244.1.4") {
		t.Fatalf("pod without a choice: %+v, %v; want 10.244.1.4 (10.244.1.0/30 is reserved)", r, err)
	}
	_, err = a.Allocate(ctx, ipam.Request{Namespace: "team-c", Pod: "x", ContainerID: "c3",
		Choice: ipam.Choice{IP: addr("10.244.1.9"), IPFrom: "test"}})
	if !errors.Is(err, ipam.ErrAddressReserved) || !strings.Contains(err.Error(), "10.244.1.9 (test) is reserved by IPReservation gateways (10.244.1.9)") {
		t.Fatalf("reserved address: %v", err)
	}
}
