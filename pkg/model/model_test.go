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
