package cluster_test

import (
	"net/netip"
	"testing"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
)

// Test addresses: pods 10.244.0.0/16.

func TestBlockName(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		want string
	}{
		{"10.244.3.64/26", "10-244-3-64-26"},
		{"10.244.0.0/26", "10-244-0-0-26"},
		{"10.244.255.192/26", "10-244-255-192-26"},
		{"10.244.16.0/20", "10-244-16-0-20"},
		{"10.244.1.5/32", "10-244-1-5-32"},
		{"0.0.0.0/0", "0-0-0-0-0"},
	} {
		p := netip.MustParsePrefix(tc.cidr)
		if got := v1alpha1.BlockName(p); got != tc.want {
			t.Errorf("BlockName(%s) = %q, want %q", tc.cidr, got, tc.want)
		}
	}
}

func TestCIDRPrefix(t *testing.T) {
	for _, tc := range []struct {
		in   v1alpha1.CIDR
		want string // "" = error
	}{
		{"10.244.0.0/16", "10.244.0.0/16"},
		{"10.244.3.64/26", "10.244.3.64/26"},
		{"10.244.3.65/26", ""}, // host bits
		{"10.244.3.64", ""},
		{"fd00::/64", ""},
		{"", ""},
	} {
		p, err := tc.in.Prefix()
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("CIDR(%q).Prefix() = %s, want an error", tc.in, p)
		case tc.want != "" && (err != nil || p.String() != tc.want):
			t.Errorf("CIDR(%q).Prefix() = %s, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// The claim states are spelled the same in the API and in pkg/ipam, which
// the store converts by string.
func TestBlockStatesMatchIPAM(t *testing.T) {
	if string(v1alpha1.BlockPending) != ipam.StatePending || string(v1alpha1.BlockConfirmed) != ipam.StateConfirmed {
		t.Fatalf("v1alpha1 states %q/%q differ from ipam's %q/%q",
			v1alpha1.BlockPending, v1alpha1.BlockConfirmed, ipam.StatePending, ipam.StateConfirmed)
	}
}
