package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/model"
)

// Test addresses: pools inside 10.244.0.0/14 (API objects only, never
// routed).

var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

// t0 is when the oldest test pool was created.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ippool(name string, age int, spec v1alpha1.IPPoolSpec) v1alpha1.IPPool {
	return v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))}, Spec: spec}
}

// problemStrings renders problems as "name Reason: message" for diffs.
func problemStrings(ps []problem) []string {
	var out []string
	for _, p := range ps {
		if p.Kind != "IPPool" {
			out = append(out, fmt.Sprintf("wrong kind %q: %+v", p.Kind, p))
			continue
		}
		out = append(out, p.Name+" "+p.Reason+": "+p.Message)
	}
	return out
}

// TestParsePool: every field of an IPPool, its defaults, and each way it
// can be invalid past admission. An invalid cidr, blockSize or mode makes
// the pool unusable; a bad nodeSelector only stops allocation from it.
func TestParsePool(t *testing.T) {
	pfx := netip.MustParsePrefix
	never, always, cross := model.EncapNever, model.EncapAlways, model.EncapCrossSubnet
	for _, tc := range []struct {
		name   string
		spec   v1alpha1.IPPoolSpec
		want   model.Pool // Name is filled in; ignored unless usable
		usable bool
		// problems are "Reason: substring of the message", one per
		// problem in order (every message names its field).
		problems []string
	}{
		{name: "minimal: defaults filled in", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"},
			want: model.Pool{CIDR: pfx("10.244.0.0/16"), BlockSize: 26, VXLAN: never, IPIP: never}, usable: true},
		{name: "every field", spec: v1alpha1.IPPoolSpec{CIDR: "10.245.0.0/24", BlockSize: 28, VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever,
			NATOutgoing: true, DisableBGPExport: true, NodeSelector: "zone == 'a'", Disabled: true},
			want: model.Pool{CIDR: pfx("10.245.0.0/24"), BlockSize: 28, VXLAN: cross, IPIP: never, NATOutgoing: true, DisableBGPExport: true,
				NodeSelector: "zone == 'a'", Disabled: true}, usable: true},
		{name: "ipip always, vxlan unset", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", IPIPMode: v1alpha1.EncapAlways},
			want: model.Pool{CIDR: pfx("10.244.0.0/16"), BlockSize: 26, VXLAN: never, IPIP: always}, usable: true},
		{name: "a /32 pool of /32 blocks", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.7/32", BlockSize: 32},
			want: model.Pool{CIDR: pfx("10.244.0.7/32"), BlockSize: 32, VXLAN: never, IPIP: never}, usable: true},
		{name: "block size 20 on a /20", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/20", BlockSize: 20},
			want: model.Pool{CIDR: pfx("10.244.0.0/20"), BlockSize: 20, VXLAN: never, IPIP: never}, usable: true},
		{name: "all() selector", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", NodeSelector: "all()"},
			want: model.Pool{CIDR: pfx("10.244.0.0/16"), BlockSize: 26, VXLAN: never, IPIP: never, NodeSelector: "all()"}, usable: true},

		{name: "cidr garbage", spec: v1alpha1.IPPoolSpec{CIDR: "ten-two-four-four"},
			problems: []string{`InvalidCIDR: spec.cidr: parse cidr "ten-two-four-four"`}},
		{name: "cidr without prefix", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0"},
			problems: []string{`InvalidCIDR: spec.cidr: parse cidr "10.244.0.0"`}},
		{name: "cidr with host bits", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.1/16"},
			problems: []string{`InvalidCIDR: spec.cidr: cidr "10.244.0.1/16" is not an IPv4 network address`}},
		{name: "cidr IPv6", spec: v1alpha1.IPPoolSpec{CIDR: "fd00:10:244::/64", BlockSize: 122},
			problems: []string{`InvalidCIDR: spec.cidr: cidr "fd00:10:244::/64" is not an IPv4 network address`,
				"InvalidBlockSize: spec.blockSize 122 must be 20 to 32"}},
		{name: "block size 19", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 19},
			problems: []string{"InvalidBlockSize: spec.blockSize 19 must be 20 to 32 and at least the prefix length of spec.cidr 10.244.0.0/16"}},
		{name: "block size 33", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 33},
			problems: []string{"InvalidBlockSize: spec.blockSize 33"}},
		{name: "block larger than the pool", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/27", BlockSize: 26},
			problems: []string{"InvalidBlockSize: spec.blockSize 26 must be 20 to 32 and at least the prefix length of spec.cidr 10.244.0.0/27"}},
		{name: "default block size larger than the pool", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/28"},
			problems: []string{"InvalidBlockSize: spec.blockSize 26 (the default) must be 20 to 32 and at least the prefix length of spec.cidr 10.244.0.0/28"}},
		{name: "unknown ipipMode", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", IPIPMode: "Sometimes", VXLANMode: v1alpha1.EncapAlways},
			problems: []string{`InvalidEncapsulation: spec.ipipMode "Sometimes" must be Always, CrossSubnet or Never`}},
		{name: "lower-case vxlanMode", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", VXLANMode: "always"},
			problems: []string{`InvalidEncapsulation: spec.vxlanMode "always"`}},
		{name: "both encapsulations", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", IPIPMode: v1alpha1.EncapCrossSubnet, VXLANMode: v1alpha1.EncapAlways},
			problems: []string{"BothEncapsulations: spec.ipipMode=CrossSubnet and spec.vxlanMode=Always: at most one may be enabled"}},
		{name: "disabled does not excuse an invalid field", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", IPIPMode: v1alpha1.EncapAlways, VXLANMode: v1alpha1.EncapAlways, Disabled: true},
			problems: []string{"BothEncapsulations: "}},
		{name: "every invalid field is named", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.1/16", BlockSize: 40, IPIPMode: v1alpha1.EncapAlways, VXLANMode: v1alpha1.EncapAlways, NodeSelector: "(("},
			problems: []string{"InvalidCIDR: spec.cidr", "InvalidBlockSize: spec.blockSize 40", "BothEncapsulations: spec.ipipMode=Always",
				"InvalidNodeSelector: spec.nodeSelector"}},

		{name: "bad nodeSelector: kept, reported", spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", NodeSelector: "zone =="},
			want: model.Pool{CIDR: pfx("10.244.0.0/16"), BlockSize: 26, VXLAN: never, IPIP: never, NodeSelector: "zone =="}, usable: true,
			problems: []string{`InvalidNodeSelector: spec.nodeSelector: selector "zone ==": position 7`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ippool("p", 0, tc.spec)
			got, problems, usable := parsePool(&o)
			if usable != tc.usable {
				t.Errorf("usable = %v, want %v", usable, tc.usable)
			}
			if tc.usable {
				tc.want.Name = "p"
				if diff := cmp.Diff(tc.want, got, cmpPrefix); diff != "" {
					t.Errorf("pool (-want +got):\n%s", diff)
				}
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %q", problemStrings(problems), tc.problems)
			}
			for i, w := range tc.problems {
				if got := problems[i].Reason + ": " + problems[i].Message; problems[i].Kind != "IPPool" || problems[i].Name != "p" || !strings.Contains(got, w) {
					t.Errorf("problem %d = %s %s %q, want IPPool p and %q", i, problems[i].Kind, problems[i].Name, got, w)
				}
			}
		})
	}
}

// TestParsePools: the rules across pools. The older of two overlapping
// pools wins (name breaks a tie of creation seconds), a disabled pool
// still holds its range, a pool left out for an invalid field holds
// nothing, and the result is sorted by name whatever the input order.
func TestParsePools(t *testing.T) {
	spec := func(cidr string) v1alpha1.IPPoolSpec { return v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(cidr)} }
	disabled := func(cidr string) v1alpha1.IPPoolSpec { s := spec(cidr); s.Disabled = true; return s }
	both := func(cidr string) v1alpha1.IPPoolSpec {
		s := spec(cidr)
		s.IPIPMode, s.VXLANMode = v1alpha1.EncapAlways, v1alpha1.EncapAlways
		return s
	}
	for _, tc := range []struct {
		name     string
		pools    []v1alpha1.IPPool
		want     []string // "name cidr" of the usable pools, in order
		problems []string // "name Reason", in order
	}{
		{name: "no pools"},
		{name: "disjoint pools sorted by name",
			pools: []v1alpha1.IPPool{ippool("zeta", 0, spec("10.244.0.0/16")), ippool("alpha", 5, spec("10.245.0.0/16")), ippool("mid", 1, spec("10.246.0.0/16"))},
			want:  []string{"alpha 10.245.0.0/16", "mid 10.246.0.0/16", "zeta 10.244.0.0/16"}},
		{name: "older wins an overlap whatever the names",
			pools:    []v1alpha1.IPPool{ippool("a-new", 10, spec("10.244.128.0/17")), ippool("z-old", 0, spec("10.244.0.0/16"))},
			want:     []string{"z-old 10.244.0.0/16"},
			problems: []string{"a-new OverlappingPool: spec.cidr 10.244.128.0/17 overlaps IPPool z-old (10.244.0.0/16), which is older or, created in the same second, first by name; the pool is ignored"}},
		{name: "a larger newer pool loses to a smaller older one",
			pools:    []v1alpha1.IPPool{ippool("small", 0, spec("10.244.3.0/24")), ippool("big", 1, spec("10.244.0.0/16"))},
			want:     []string{"small 10.244.3.0/24"},
			problems: []string{"big OverlappingPool: spec.cidr 10.244.0.0/16 overlaps IPPool small (10.244.3.0/24)"}},
		{name: "same second: first by name wins",
			pools:    []v1alpha1.IPPool{ippool("b", 3, spec("10.244.0.0/16")), ippool("a", 3, spec("10.244.0.0/16"))},
			want:     []string{"a 10.244.0.0/16"},
			problems: []string{"b OverlappingPool: spec.cidr 10.244.0.0/16 overlaps IPPool a (10.244.0.0/16)"}},
		{name: "a disabled older pool keeps its range",
			pools:    []v1alpha1.IPPool{ippool("old", 0, disabled("10.244.0.0/16")), ippool("new", 1, spec("10.244.0.0/24"))},
			want:     []string{"old 10.244.0.0/16"},
			problems: []string{"new OverlappingPool: spec.cidr 10.244.0.0/24 overlaps IPPool old (10.244.0.0/16)"}},
		{name: "an invalid older pool holds nothing",
			pools:    []v1alpha1.IPPool{ippool("old", 0, both("10.244.0.0/16")), ippool("new", 1, spec("10.244.0.0/24"))},
			want:     []string{"new 10.244.0.0/24"},
			problems: []string{"old BothEncapsulations: spec.ipipMode=Always and spec.vxlanMode=Always: at most one may be enabled; the pool is ignored until one is Never"}},
		{name: "a pool that lost an overlap holds nothing",
			pools:    []v1alpha1.IPPool{ippool("a", 0, spec("10.244.0.0/24")), ippool("b", 1, spec("10.244.0.0/16")), ippool("c", 2, spec("10.244.128.0/24"))},
			want:     []string{"a 10.244.0.0/24", "c 10.244.128.0/24"},
			problems: []string{"b OverlappingPool: spec.cidr 10.244.0.0/16 overlaps IPPool a (10.244.0.0/24)"}},
		{name: "the rest survives invalid pools",
			pools: []v1alpha1.IPPool{ippool("bad-cidr", 0, spec("10.244.0.1/16")), ippool("good", 1, spec("10.245.0.0/16")),
				ippool("selector", 2, v1alpha1.IPPoolSpec{CIDR: "10.246.0.0/16", NodeSelector: "!"})},
			want: []string{"good 10.245.0.0/16", "selector 10.246.0.0/16"},
			problems: []string{`bad-cidr InvalidCIDR: spec.cidr: cidr "10.244.0.1/16" is not an IPv4 network address; the pool is ignored`,
				`selector InvalidNodeSelector: spec.nodeSelector: selector "!": position 1: expected an expression after "!"; no node allocates from this pool until it is fixed`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.pools)
			got, problems := parsePools(in)
			if !slices.EqualFunc(in, tc.pools, func(a, b v1alpha1.IPPool) bool { return a.Name == b.Name }) {
				t.Errorf("input reordered")
			}
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.Name+" "+p.CIDR.String())
			}
			if diff := cmp.Diff(tc.want, gotS); diff != "" {
				t.Errorf("pools (-want +got):\n%s", diff)
			}
			gotP := problemStrings(problems)
			if len(gotP) != len(tc.problems) {
				t.Fatalf("problems %q, want %q", gotP, tc.problems)
			}
			for i, w := range tc.problems {
				if !strings.HasPrefix(gotP[i], w) {
					t.Errorf("problem %d = %q, want it to start with %q", i, gotP[i], w)
				}
			}
		})
	}
}
