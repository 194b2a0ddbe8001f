package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/model"
	kubetest "github.com/wren-net/wren/test/kube"
)

// TestViewBGPConfig: without a BGPConfiguration the defaults apply (mesh
// on, port 179, AS unset); once one is created, the view reflects it,
// service ranges sorted.
func TestViewBGPConfig(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	got, err := v.BGPConfig()
	if err != nil {
		t.Fatal(err)
	}
	if want := (model.BGPConfig{MeshEnabled: true, ListenPort: 179}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	as, mesh, port := v1alpha1.ASNumber(65010), false, int32(1179)
	o := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.BGPConfigurationSpec{
		ASNumber: &as, NodeToNodeMeshEnabled: &mesh, ListenPort: &port,
		KeepaliveTime:          &metav1.Duration{Duration: 20 * time.Second},
		ServiceClusterIPs:      []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}},
		ServiceLoadBalancerIPs: []v1alpha1.ServiceIPBlock{{CIDR: "198.18.100.0/24"}, {CIDR: "10.96.0.0/12"}},
	}}
	if err := c.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	want := model.BGPConfig{AS: 65010, ListenPort: 1179, Keepalive: 20 * time.Second,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("198.18.100.0/24")}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = v.BGPConfig()
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BGPConfig = %+v, %v; want %+v", got, err, want)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of the deadline loop
	}
}

// TestViewBGPPeerPassword: a BGPPeer's password comes from its Secret in
// the agent's namespace; while the Secret is missing the peer is left out
// and an Event names the Secret.
func TestViewBGPPeerPassword(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler), cluster.WithNamespace("kube-system"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	as := v1alpha1.ASNumber(65001)
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{PeerIP: "198.18.0.1", ASNumber: &as,
		Password: &v1alpha1.BGPPassword{SecretKeyRef: v1alpha1.SecretKeyRef{Name: "bgp-secrets", Key: "tor"}}}}
	if err := c.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	poll := func(what string, cond func() error) {
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
	poll("peer left out, Event names the Secret", func() error {
		ps, err := v.BGPPeers()
		if err != nil || len(ps) != 0 {
			return fmt.Errorf("peers %v, err %v", ps, err)
		}
		var evs corev1.EventList
		if err := c.List(ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "tor" && e.Reason == "PasswordUnavailable" && strings.Contains(e.Message, "Secret kube-system/bgp-secrets") {
				return nil
			}
		}
		return fmt.Errorf("no PasswordUnavailable event among %d", len(evs.Items))
	})
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-secrets", Namespace: "kube-system"}, Data: map[string][]byte{"tor": []byte("s3cret")}}
	if err := c.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	poll("peer with its password", func() error {
		ps, err := v.BGPPeers()
		if err != nil || len(ps) != 1 || ps[0].Password != "s3cret" || ps[0].AS != 65001 {
			return fmt.Errorf("peers %+v, err %v", ps, err)
		}
		return nil
	})
}

// TestViewBGPPeerFields: every field of a BGPPeer with peerIP reaches the
// agent's model.BGPPeer, maxPrefixes included, and so do a peerSelector
// and sourceAddress None, and an edit of the limit
// arrives too (the speaker re-creates the session on it). A peer without
// maxPrefixes has no limit (0).
func TestViewBGPPeerFields(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	as, ttl, limit := v1alpha1.ASNumber(65001), int32(1), int32(1000)
	tor := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "198.18.0.1:1179", ASNumber: &as, NodeSelector: "rack == 'r1'",
		KeepaliveTime: &metav1.Duration{Duration: 20 * time.Second}, MaxRestartTime: &metav1.Duration{Duration: 2 * time.Minute},
		TTLSecurity: &ttl, MaxPrefixes: &limit}}
	plain := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "198.18.0.2", ASNumber: &as, Node: "node-a"}}
	toRR := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "to-rr"}, Spec: v1alpha1.BGPPeerSpec{
		NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'", SourceAddress: v1alpha1.SourceAddressNone}}
	for _, p := range []*v1alpha1.BGPPeer{tor, plain, toRR} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	want := []model.BGPPeer{
		{Name: "plain", IP: netip.MustParseAddr("198.18.0.2"), AS: 65001, Node: "node-a"},
		{Name: "to-rr", NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'", KernelSource: true},
		{Name: "tor", IP: netip.MustParseAddr("198.18.0.1"), Port: 1179, AS: 65001, NodeSelector: "rack == 'r1'",
			Keepalive: 20 * time.Second, RestartTime: 2 * time.Minute, TTLSecurity: 1, MaxPrefixes: 1000},
	}
	poll := func(what string, want []model.BGPPeer) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := v.BGPPeers()
			slices.SortFunc(got, func(a, b model.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
			if err == nil && slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: BGPPeers = %+v, %v; want %+v", what, got, err, want)
			}
			time.Sleep(20 * time.Millisecond) // poll interval of the deadline loop
		}
	}
	poll("created", want)

	// Raising the limit is an edit the agent must see.
	if err := c.Get(ctx, client.ObjectKeyFromObject(tor), tor); err != nil {
		t.Fatal(err)
	}
	*tor.Spec.MaxPrefixes = 250000
	if err := c.Update(ctx, tor); err != nil {
		t.Fatal(err)
	}
	want[2].MaxPrefixes = 250000
	poll("maxPrefixes raised", want)
}
