package tunnel

// Unit tier for the netlink object builders and HostMTU; no kernel.

import (
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

// vxlanAttrs is the part of a *netlink.Vxlan the reconciler cares about.
type vxlanAttrs struct {
	Name                         string
	VNI, Port, VtepDevIndex, MTU int
	SrcAddr, MAC                 string
	Learning, Up, FlowBased      bool
	Group                        string
}

func vxlanAttrsOf(v *netlink.Vxlan) vxlanAttrs {
	return vxlanAttrs{
		Name: v.Name, VNI: v.VxlanId, Port: v.Port, VtepDevIndex: v.VtepDevIndex, MTU: v.MTU,
		SrcAddr: ipString(v.SrcAddr), MAC: v.HardwareAddr.String(),
		Learning: v.Learning, Up: v.Flags&net.FlagUp != 0, FlowBased: v.FlowBased, Group: ipString(v.Group),
	}
}

func TestVXLANLink(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   model.VXLAN
		want vxlanAttrs
	}{
		{
			name: "calico defaults",
			in:   *nodeA(),
			want: vxlanAttrs{Name: "vxlan.calico", VNI: 4096, Port: 4789, VtepDevIndex: 3, MTU: 1450,
				SrcAddr: "198.18.0.11", MAC: "66:07:02:c1:cc:60", Up: true, Group: "none"},
		},
		{
			name: "explicit vni and port",
			in:   *with(nodeA(), func(v *model.VXLAN) { v.VNI, v.Port, v.MTU = 42, 8472, 8950 }),
			want: vxlanAttrs{Name: "vxlan.calico", VNI: 42, Port: 8472, VtepDevIndex: 3, MTU: 8950,
				SrcAddr: "198.18.0.11", MAC: "66:07:02:c1:cc:60", Up: true, Group: "none"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := vxlanLink(tc.in, 3)
			if diff := cmp.Diff(tc.want, vxlanAttrsOf(got)); diff != "" {
				t.Errorf("vxlanLink (-want +got):\n%s", diff)
			}
			if got.Type() != "vxlan" || len(got.SrcAddr) != 4 {
				t.Errorf("type %s, local %d bytes; want vxlan, 4 bytes (IFLA_VXLAN_LOCAL, not LOCAL6)", got.Type(), len(got.SrcAddr))
			}
		})
	}
	// The builder must not alias the caller's MAC.
	in := *nodeA()
	in.MAC = append(net.HardwareAddr(nil), macA...)
	l := vxlanLink(in, 3)
	in.MAC[0] = 0
	if l.HardwareAddr[0] != 0x66 {
		t.Error("vxlanLink aliases the desired MAC")
	}
}

func TestIPIPLink(t *testing.T) {
	l := ipipLink(model.IPIP{MTU: 1480, Address: ip("10.244.1.1")})
	type attrs struct {
		Name, Type    string
		MTU           int
		Up            bool
		PMtuDisc, Ttl uint8
		Local, Remote string
		Link          uint32
		FlowBased     bool
	}
	got := attrs{l.Name, l.Type(), l.MTU, l.Flags&net.FlagUp != 0, l.PMtuDisc, l.Ttl, ipString(l.Local), ipString(l.Remote), l.Link, l.FlowBased}
	want := attrs{Name: "tunl0", Type: "ipip", MTU: 1480, Up: true, PMtuDisc: 1, Local: "none", Remote: "none"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ipipLink (-want +got):\n%s", diff)
	}
}

func TestVTEPEntries(t *testing.T) {
	type neigh struct {
		LinkIndex, Family, State, Type, Flags int
		IP, MAC                               string
	}
	of := func(n *netlink.Neigh) neigh {
		return neigh{n.LinkIndex, n.Family, n.State, n.Type, n.Flags, ipString(n.IP), n.HardwareAddr.String()}
	}
	if diff := cmp.Diff(
		neigh{LinkIndex: 7, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: "10.244.2.0", MAC: "66:89:3a:22:7a:ac"},
		of(vtepNeigh(7, vtepB))); diff != "" {
		t.Errorf("vtepNeigh (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(
		neigh{LinkIndex: 7, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: "198.18.0.12", MAC: "66:89:3a:22:7a:ac"},
		of(vtepFDB(7, vtepB))); diff != "" {
		t.Errorf("vtepFDB (-want +got):\n%s", diff)
	}
	if n := vtepNeigh(7, vtepB); len(n.IP) != 4 {
		t.Errorf("neighbour IP is %d bytes; want 4", len(n.IP))
	}
	a := hostAddr(ip("10.244.1.0"))
	if got := a.IPNet.String(); got != "10.244.1.0/32" {
		t.Errorf("hostAddr = %s; want 10.244.1.0/32", got)
	}
}

func TestVXLANIncompat(t *testing.T) {
	want := vxlanLink(*nodeA(), 3)
	for _, tc := range []struct {
		name string
		edit func(*netlink.Vxlan)
		why  string
	}{
		{"same", func(*netlink.Vxlan) {}, ""},
		{"mtu and mac differ: in place", func(v *netlink.Vxlan) { v.MTU, v.HardwareAddr = 1400, macB }, ""},
		{"vni", func(v *netlink.Vxlan) { v.VxlanId = 1 }, "vni 1, want 4096"},
		{"port", func(v *netlink.Vxlan) { v.Port = 8472 }, "dstport 8472, want 4789"},
		{"local", func(v *netlink.Vxlan) { v.SrcAddr = nil }, "local none, want 198.18.0.11"},
		{"parent", func(v *netlink.Vxlan) { v.VtepDevIndex = 9 }, "dev index 9, want 3"},
		{"learning", func(v *netlink.Vxlan) { v.Learning = true }, "learning on, want nolearning"},
		{"group", func(v *netlink.Vxlan) { v.Group = net.IPv4(239, 1, 1, 1) }, "group/remote 239.1.1.1, want none"},
		{"unspecified group is no group", func(v *netlink.Vxlan) { v.Group = net.IPv4zero }, ""},
		{"external", func(v *netlink.Vxlan) { v.FlowBased = true }, "external (flow-based), want a fixed VNI"},
		{"two", func(v *netlink.Vxlan) { v.VxlanId, v.Port = 1, 2 }, "vni 1, want 4096; dstport 2, want 4789"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := *want
			cur.SrcAddr = net.ParseIP("198.18.0.11") // 16-byte form, as Equal must cope with
			tc.edit(&cur)
			if got := vxlanIncompat(&cur, want); got != tc.why {
				t.Errorf("vxlanIncompat = %q; want %q", got, tc.why)
			}
		})
	}
}

type fakeLister struct {
	links []netlink.Link
	err   error
}

func (f fakeLister) LinkList() ([]netlink.Link, error) { return f.links, f.err }

func dev(name string, mtu int, up bool) netlink.Link {
	la := netlink.LinkAttrs{Name: name, MTU: mtu}
	if up {
		la.Flags = net.FlagUp
	}
	return &netlink.Device{LinkAttrs: la}
}

func TestHostMTU(t *testing.T) {
	for _, tc := range []struct {
		name    string
		links   []netlink.Link
		pattern *regexp.Regexp
		want    int
		err     string
	}{
		{name: "smallest up uplink", want: 1400, links: []netlink.Link{
			dev("lo", 65536, true), dev("eth0", 1500, true), dev("ens5", 1400, true), dev("enp3s0", 9001, true),
		}},
		{name: "down and foreign links ignored", want: 9001, links: []netlink.Link{
			dev("eth0", 9001, true), dev("eth1", 1280, false), dev("cali0123456789a", 1000, true),
			dev("vxlan.calico", 1450, true), dev("tunl0", 1480, true), dev("docker0", 1200, true), dev("wlp2s0", 1200, false),
		}},
		{name: "calico pattern details", want: 1300, links: []netlink.Link{
			// ib0 and ena0 do not match: after "ib"/"en" Calico's pattern
			// wants a udev type letter (P, o, p, s, x).
			dev("ib0", 1000, true), dev("ena0", 1000, true),
			dev("wwan0", 1300, true), dev("slp1", 1500, true), dev("ibp4s0", 2044, true),
		}},
		{name: "custom pattern", pattern: regexp.MustCompile(`^bond0$`), want: 8000, links: []netlink.Link{
			dev("bond0", 8000, true), dev("eth0", 1500, true),
		}},
		{name: "none up", err: `host MTU: no up link matches "^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan).*)" (all are down: eth0, eth1)`,
			links: []netlink.Link{dev("eth1", 1500, false), dev("eth0", 1500, false), dev("lo", 65536, true)}},
		{name: "none at all", err: `host MTU: no up link matches "^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan).*)" (none exists)`,
			links: []netlink.Link{dev("lo", 65536, true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HostMTU(fakeLister{links: tc.links}, tc.pattern)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("HostMTU = %d, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("HostMTU = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	// A dump interrupted every time surfaces as an error that says so.
	_, err := HostMTU(fakeLister{err: netlink.ErrDumpInterrupted}, nil)
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("HostMTU on interrupted dumps = %v", err)
	}
}
