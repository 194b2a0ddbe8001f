package model

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRouteValidate(t *testing.T) {
	p := netip.MustParsePrefix
	gw := netip.MustParseAddr("198.18.0.12")
	for _, tc := range []struct {
		r    Route
		want string // "" = valid
	}{
		{Route{Dst: p("10.244.1.0/26"), Kind: RouteBlackhole}, ""},
		{Route{Dst: p("10.244.1.5/32"), Kind: RoutePod, Device: "cali1"}, ""},
		{Route{Dst: p("10.244.2.0/26"), Kind: RouteRemoteTunnel, Gateway: gw, Device: "tunl0", MTU: 1480}, ""},
		{Route{Dst: p("10.244.1.1/26"), Kind: RouteBlackhole}, "host bits set"},
		{Route{Kind: RouteBlackhole}, "valid IPv4 prefix"},
		{Route{Dst: p("fd00::/64"), Kind: RouteBlackhole}, "valid IPv4 prefix"},
		{Route{Dst: p("10.244.1.5/32"), Kind: RoutePod}, "needs a device"},
		{Route{Dst: p("10.244.2.0/26"), Kind: RouteRemoteDirect, Device: "eth0"}, "IPv4 gateway"},
		{Route{Dst: p("10.244.2.0/26"), Kind: RouteRemoteDirect, Gateway: gw, Device: "eth0", MTU: 40}, "below the IPv4 minimum"},
		{Route{Dst: p("10.244.2.0/26"), Kind: 99}, "unknown kind"},
	} {
		err := tc.r.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.r, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.r, err, tc.want)
		}
	}
}

func TestEffectiveAS(t *testing.T) {
	for _, tc := range []struct {
		node, cluster, want uint32
	}{
		{0, 0, DefaultAS},
		{0, 64600, 64600},
		{65010, 64600, 65010},
		{65010, 0, 65010},
	} {
		if got := (NodeInfo{AS: tc.node}).EffectiveAS(tc.cluster); got != tc.want {
			t.Errorf("node AS %d, cluster AS %d: EffectiveAS = %d, want %d", tc.node, tc.cluster, got, tc.want)
		}
	}
	if DefaultAS != 64512 || DefaultRRClusterID != netip.MustParseAddr("244.0.0.1") {
		t.Errorf("defaults %d, %s; SPEC.md says 64512 and Calico's 244.0.0.1", DefaultAS, DefaultRRClusterID)
	}
}
