//go:build linux

package nstest_test

// A pod's own IPAM choice and IP reservations, end to end: envtest's
// kube-apiserver + etcd on loopback, one node namespace with an in-process
// agent whose CNI socket is served as in production and driven by the real
// wren-cni binary. Test addresses: node 198.18.0.11/24, pool
// 10.244.0.0/16 (blocks /26), reservations 10.244.5.0/30 and 10.244.5.5,
// 192.0.2.10 (TEST-NET-1) as an address outside every pool (never
// configured anywhere: its ADD fails before any interface is touched).

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/proxyarp"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestIPAMChoiceCNI: a pod annotated with ipAddrs gets exactly that
// address (in a block claimed for it), pods without a choice never get a
// reserved address, and a taken, reserved or out-of-pool address, or an
// unknown pool, fails the real wren-cni ADD with code 999 and a message
// naming the pod, the annotation and what is in the way, leaving nothing
// behind; once the holder of a taken address is deleted, the retried ADD
// gets it.
func TestIPAMChoiceCNI(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapNever)
	ctx := context.Background()
	if err := ac.c.Create(ctx, &v1alpha1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "gateways"},
		Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.244.5.0/30", "10.244.5.5"}}}); err != nil {
		t.Fatal(err)
	}
	an := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	cni := newCNIRunner(t, an.a)

	pod := func(name string, annot map[string]string) *agentPod {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annot},
			Spec: corev1.PodSpec{NodeName: an.name, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
		if err := ac.c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return &agentPod{ns: nstest.New(t, "pod"), name: name}
	}
	add := func(p *agentPod) netip.Addr {
		t.Helper()
		code, msg, ip := cni.run(t, "ADD", "ctr-"+p.name, p)
		if code != 0 {
			t.Fatalf("ADD %s: code %d: %s", p.name, code, msg)
		}
		if a := podAddr(t, p); a != ip {
			t.Fatalf("%s: eth0 has %s; the CNI result says %s", p.name, a, ip)
		}
		return ip
	}

	// The chosen address, in a block nobody held: claimed for node-a.
	fixed := pod("fixed", map[string]string{wcluster.AnnotationIPAddrs: `["10.244.5.7"]`})
	if ip := add(fixed); ip != netip.MustParseAddr("10.244.5.7") {
		t.Fatalf("pod with ipAddrs got %s; want 10.244.5.7", ip)
	}
	var blk v1alpha1.IPAMBlock
	if err := ac.c.Get(ctx, keyOf("10-244-5-0-26"), &blk); err != nil || blk.Spec.Affinity != "node-a" || blk.Spec.State != v1alpha1.BlockConfirmed {
		t.Fatalf("block 10.244.5.0/26: %+v, %v; want it confirmed for node-a", blk.Spec, err)
	}
	if err := an.ns.Ping(fixed.ip, 1); err != nil {
		t.Errorf("node-a cannot reach its pod at 10.244.5.7: %v", err)
	}

	// Pods without a choice fill node-a's block around the reserved
	// 10.244.5.0/30 and 10.244.5.5 and the taken 10.244.5.7.
	for i, want := range []string{"10.244.5.4", "10.244.5.6", "10.244.5.8"} {
		if ip := add(pod(fmt.Sprint("plain-", i), nil)); ip != netip.MustParseAddr(want) {
			t.Errorf("pod plain-%d got %s; want %s (the lowest free address that is not reserved)", i, ip, want)
		}
	}

	prefix := func(p *agentPod) string {
		id := "ctr-" + p.name
		return fmt.Sprintf("wren-cni ADD pod default/%s (container %s): wren agent: ", p.name, id[:min(len(id), 12)])
	}
	taken := pod("calico-fixed", map[string]string{wcluster.CalicoAnnotationIPAddrs: `["10.244.5.7"]`})
	for _, tt := range []struct {
		p   *agentPod
		msg string
	}{
		{taken, "requested address is taken: 10.244.5.7 (annotation cni.projectcalico.org/ipAddrs of pod default/calico-fixed) is held by pod default/fixed on node node-a (container ctr-fixed); delete that pod (or release the address) or choose another address"},
		{pod("reserved", map[string]string{wcluster.AnnotationIPAddrs: `["10.244.5.5"]`}),
			"requested address is reserved: 10.244.5.5 (annotation wren.network/ipAddrs of pod default/reserved) is reserved by IPReservation gateways (10.244.5.5); remove it from the reservation or choose another address"},
		{pod("outside", map[string]string{wcluster.AnnotationIPAddrs: `["192.0.2.10"]`}),
			"requested address is outside every enabled IPPool: 192.0.2.10 (annotation wren.network/ipAddrs of pod default/outside) is in no IPPool (IPPools: default 10.244.0.0/16); choose an address in one, or create an IPPool that holds it"},
		{pod("unknown-pool", map[string]string{wcluster.AnnotationIPv4Pools: `["blue"]`}),
			`requested IPPool cannot be used: annotation wren.network/ipv4pools of pod default/unknown-pool names IPPool "blue", which does not exist (IPPools: default 10.244.0.0/16); create it or fix the annotation`},
	} {
		code, msg, _ := cni.run(t, "ADD", "ctr-"+tt.p.name, tt.p)
		if want := prefix(tt.p) + tt.msg; code != 999 || msg != want {
			t.Errorf("ADD %s: code %d\n%s\nwant code 999\n%s", tt.p.name, code, msg, want)
		}
		// Nothing left behind: no address, no veth, no eth0.
		if _, err := an.ns.NL.LinkByName(proxyarp.VethName("default", tt.p.name)); err == nil {
			t.Errorf("%s: host veth exists after a refused ADD", tt.p.name)
		}
		if _, err := tt.p.ns.NL.LinkByName("eth0"); err == nil {
			t.Errorf("%s: eth0 exists after a refused ADD", tt.p.name)
		}
	}
	var blocks v1alpha1.IPAMBlockList
	if err := ac.c.List(ctx, &blocks); err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, b := range blocks.Items {
		for _, al := range b.Spec.Allocations {
			held = append(held, al.IP+"="+al.Pod)
		}
	}
	if got, want := strings.Join(held, " "), "10.244.5.4=plain-0 10.244.5.6=plain-1 10.244.5.7=fixed 10.244.5.8=plain-2"; got != want {
		t.Errorf("allocations: %s\nwant:        %s", got, want)
	}

	// The holder goes; the retried ADD of the pod that wanted its address
	// gets it.
	if code, msg, _ := cni.run(t, "DEL", "ctr-fixed", fixed); code != 0 {
		t.Fatalf("DEL fixed: code %d: %s", code, msg)
	}
	if ip := add(taken); ip != netip.MustParseAddr("10.244.5.7") {
		t.Errorf("retried ADD of calico-fixed got %s; want 10.244.5.7", ip)
	}
}

// podAddr returns the one IPv4 address of the pod's eth0.
func podAddr(t *testing.T, p *agentPod) netip.Addr {
	t.Helper()
	l, err := p.ns.NL.LinkByName("eth0")
	if err != nil {
		t.Fatalf("%s: eth0: %v", p.name, err)
	}
	addrs, err := p.ns.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("%s: eth0 addresses %v, %v; want one", p.name, addrs, err)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP)
	return a
}
