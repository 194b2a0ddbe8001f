package nodeip

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

type fakeAddrs struct {
	links []string
	addrs map[string][]string
	via   string // source address RouteGet answers
}

func (f fakeAddrs) LinkList() ([]netlink.Link, error) {
	var ls []netlink.Link
	for i, n := range f.links {
		la := netlink.NewLinkAttrs()
		la.Name, la.Index = n, i+1
		ls = append(ls, &netlink.Device{LinkAttrs: la})
	}
	return ls, nil
}

func (f fakeAddrs) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	var out []netlink.Addr
	for _, c := range f.addrs[l.Attrs().Name] {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, nil
}

func (f fakeAddrs) RouteGet(net.IP) ([]netlink.Route, error) {
	return []netlink.Route{{Src: net.ParseIP(f.via)}}, nil
}

func TestDetect(t *testing.T) {
	src := fakeAddrs{
		links: []string{"lo", "docker0", "cali1234", "eth0", "eth1", "vxlan.calico"},
		addrs: map[string][]string{
			"lo": {"127.0.0.1/8"}, "docker0": {"172.17.0.1/16"}, "cali1234": {"169.254.1.1/32"},
			"eth0": {"169.254.9.9/16", "198.18.0.11/24"}, "eth1": {"198.19.5.7/16"}, "vxlan.calico": {"10.244.1.0/32"},
		},
		via: "198.19.5.7",
	}
	k8s := func() (netip.Addr, error) { return netip.MustParseAddr("198.19.5.7"), nil }
	for _, tc := range []struct{ method, want, iface, err string }{
		{"first-found", "198.18.0.11/24", "eth0", ""},
		{"", "198.18.0.11/24", "eth0", ""},
		{"interface=eth1", "198.19.5.7/16", "eth1", ""},
		{"skip-interface=eth0", "198.19.5.7/16", "eth1", ""},
		{"cidr=198.19.0.0/16", "198.19.5.7/16", "eth1", ""},
		{"can-reach=198.19.9.9", "198.19.5.7/16", "eth1", ""},
		{"kubernetes-internal-ip", "198.19.5.7/16", "eth1", ""},
		{"cidr=198.20.0.0/16", "", "", "no matching IPv4 address among"},
		{"interface=(", "", "", "bad regexp"},
		{"magic", "", "", `unknown; use first-found`},
	} {
		got, err := Detect(tc.method, src, k8s)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.method, err, tc.err)
			}
			continue
		}
		if err != nil || got.Addr.String() != tc.want || got.Iface != tc.iface {
			t.Errorf("%s: %+v %v; want %s on %s", tc.method, got, err, tc.want, tc.iface)
		}
	}
}
