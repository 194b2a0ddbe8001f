package cluster

// Test addresses: pools and reservations inside 10.244.0.0/16.

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
)

// TestParseChoice: both key prefixes, pod over namespace, wren.network/
// over cni.projectcalico.org/, ipAddrs over ipv4pools, names and CIDRs;
// every malformed annotation is an error naming the key, the object and
// the form it needs.
func TestParseChoice(t *testing.T) {
	pod := func(annot map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web-0", Annotations: annot}}
	}
	ns := func(annot map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Annotations: annot}}
	}
	const podFrom, nsFrom = " of pod team-a/web-0", " of namespace team-a"
	for _, tt := range []struct {
		name string
		pod  map[string]string
		ns   map[string]string // nil: no namespace object
		want ipam.Choice
		err  string
	}{
		{name: "nothing"},
		{name: "ipAddrs", pod: map[string]string{AnnotationIPAddrs: `["10.244.1.7"]`},
			want: ipam.Choice{IP: netip.MustParseAddr("10.244.1.7"), IPFrom: "annotation wren.network/ipAddrs" + podFrom}},
		{name: "Calico's ipAddrs", pod: map[string]string{CalicoAnnotationIPAddrs: `["10.244.1.8"]`},
			want: ipam.Choice{IP: netip.MustParseAddr("10.244.1.8"), IPFrom: "annotation cni.projectcalico.org/ipAddrs" + podFrom}},
		{name: "wren.network/ wins over Calico's key",
			pod:  map[string]string{AnnotationIPAddrs: `["10.244.1.7"]`, CalicoAnnotationIPAddrs: `["10.244.1.8"]`},
			want: ipam.Choice{IP: netip.MustParseAddr("10.244.1.7"), IPFrom: "annotation wren.network/ipAddrs" + podFrom}},
		{name: "ipAddrs wins over ipv4pools", pod: map[string]string{AnnotationIPAddrs: `["10.244.1.7"]`, AnnotationIPv4Pools: `["blue"]`},
			ns:   map[string]string{AnnotationIPv4Pools: `["green"]`},
			want: ipam.Choice{IP: netip.MustParseAddr("10.244.1.7"), IPFrom: "annotation wren.network/ipAddrs" + podFrom}},
		{name: "pod ipv4pools by name and CIDR", pod: map[string]string{AnnotationIPv4Pools: `["blue", " 10.245.0.0/16 "]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "blue"}, {CIDR: netip.MustParsePrefix("10.245.0.0/16")}},
				PoolsFrom: "annotation wren.network/ipv4pools" + podFrom}},
		{name: "pod ipv4pools win over the namespace's", pod: map[string]string{CalicoAnnotationIPv4Pools: `["blue"]`},
			ns: map[string]string{AnnotationIPv4Pools: `["green"]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "blue"}},
				PoolsFrom: "annotation cni.projectcalico.org/ipv4pools" + podFrom}},
		{name: "namespace ipv4pools", ns: map[string]string{CalicoAnnotationIPv4Pools: `["green"]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "green"}}, PoolsFrom: "annotation cni.projectcalico.org/ipv4pools" + nsFrom}},
		{name: "namespace: wren.network/ wins", ns: map[string]string{CalicoAnnotationIPv4Pools: `["green"]`, AnnotationIPv4Pools: `["red"]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "red"}}, PoolsFrom: "annotation wren.network/ipv4pools" + nsFrom}},
		{name: "an empty pod list leaves the choice to the namespace", pod: map[string]string{AnnotationIPv4Pools: `[]`},
			ns:   map[string]string{AnnotationIPv4Pools: `["red"]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{Name: "red"}}, PoolsFrom: "annotation wren.network/ipv4pools" + nsFrom}},
		{name: "CIDR with host bits is masked", pod: map[string]string{AnnotationIPv4Pools: `["10.245.1.0/16"]`},
			want: ipam.Choice{Pools: []ipam.PoolRef{{CIDR: netip.MustParsePrefix("10.245.0.0/16")}}, PoolsFrom: "annotation wren.network/ipv4pools" + podFrom}},

		{name: "ipAddrs not JSON", pod: map[string]string{AnnotationIPAddrs: `10.244.1.7`},
			err: `annotation wren.network/ipAddrs of pod team-a/web-0: "10.244.1.7" is not a JSON list of addresses; write it as ["10.244.1.7"]`},
		{name: "ipAddrs a CIDR", pod: map[string]string{CalicoAnnotationIPAddrs: `["10.244.1.0/24"]`},
			err: `annotation cni.projectcalico.org/ipAddrs of pod team-a/web-0: "10.244.1.0/24" is not an IP address`},
		{name: "ipAddrs IPv6 only", pod: map[string]string{AnnotationIPAddrs: `["fd00::7"]`},
			err: "fd00::7 is not an IPv4 address: Wren hands out IPv4 only"},
		{name: "ipAddrs dual-stack", pod: map[string]string{CalicoAnnotationIPAddrs: `["10.244.1.8", "fd00::8"]`},
			err: "fd00::8 is not an IPv4 address: Wren hands out IPv4 only"},
		{name: "ipAddrs two IPv4", pod: map[string]string{AnnotationIPAddrs: `["10.244.1.7","10.244.1.8"]`},
			err: "lists 2 IPv4 addresses; a pod gets one"},
		{name: "ipAddrs empty", pod: map[string]string{AnnotationIPAddrs: `[]`}, err: `"[]" lists no address`},
		{name: "ipv4pools not JSON", ns: map[string]string{AnnotationIPv4Pools: `blue`},
			err: `annotation wren.network/ipv4pools of namespace team-a: "blue" is not a JSON list of IPPool names or CIDRs`},
		{name: "ipv4pools IPv6", pod: map[string]string{AnnotationIPv4Pools: `["fd00::/64"]`}, err: "fd00::/64 is not an IPv4 CIDR"},
		{name: "ipAddrsNoIpam", pod: map[string]string{"cni.projectcalico.org/ipAddrsNoIpam": `["10.244.1.7"]`},
			err: "annotation cni.projectcalico.org/ipAddrsNoIpam of pod team-a/web-0: Wren has no IPAM bypass; use wren.network/ipAddrs"},
		{name: "floatingIPs", pod: map[string]string{"cni.projectcalico.org/floatingIPs": `["192.0.2.1"]`},
			err: "annotation cni.projectcalico.org/floatingIPs of pod team-a/web-0: Wren has no floating IPs; remove the annotation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var n *corev1.Namespace
			if tt.ns != nil {
				n = ns(tt.ns)
			}
			got, err := parseChoice(pod(tt.pod), n)
			if tt.err != "" {
				if err == nil || !errors.Is(err, ipam.ErrRefused) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want an ErrRefused with %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseSettings: reserved CIDRs and single addresses of every
// IPReservation, sorted; only the IPAMConfiguration named default counts;
// an entry an old client wrote wrong is a problem naming it.
func TestParseSettings(t *testing.T) {
	res := []v1alpha1.IPReservation{
		{ObjectMeta: metav1.ObjectMeta{Name: "vips"}, Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"10.244.3.7", "10.244.0.0/30"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{"fd00::/64", "10.244.9.9/24", "x"}}},
	}
	cfgs := []v1alpha1.IPAMConfiguration{
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: v1alpha1.IPAMConfigurationSpec{MaxBlocksPerHost: 9}},
		{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPAMConfigurationSpec{StrictAffinity: true, MaxBlocksPerHost: 4}},
	}
	got, problems := parseSettings(res, cfgs)
	want := ipam.Settings{
		Reservations: []ipam.Reservation{
			{Name: "vips", CIDR: netip.MustParsePrefix("10.244.0.0/30")},
			{Name: "vips", CIDR: netip.MustParsePrefix("10.244.3.7/32")},
			{Name: "bad", CIDR: netip.MustParsePrefix("10.244.9.0/24")},
		},
		StrictAffinity: true, MaxBlocksPerHost: 4,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	wantProblems := []problem{
		{Kind: "IPReservation", Name: "bad", Reason: "InvalidCIDR", Message: `spec.reservedCIDRs[0] "fd00::/64" is not an IPv4 address or CIDR; that entry reserves nothing`},
		{Kind: "IPReservation", Name: "bad", Reason: "InvalidCIDR", Message: `spec.reservedCIDRs[2] "x" is not an IPv4 address or CIDR; that entry reserves nothing`},
	}
	if diff := cmp.Diff(wantProblems, problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if got, _ := parseSettings(nil, cfgs[:1]); got.StrictAffinity || got.MaxBlocksPerHost != 0 {
		t.Errorf("without a default IPAMConfiguration: %+v; want the zero settings", got)
	}
}
