package tunnel

// Pure tier: no kernel. Addresses: nodes 198.18.0.0/15, pods and tunnel
// addresses 10.244.0.0/16.

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/model"
)

func TestVTEPMAC(t *testing.T) {
	for _, tc := range []struct{ node, want string }{
		// 66 + the first five bytes of `printf node-a | sha1sum`.
		{"node-a", "66:07:02:c1:cc:60"},
		{"node-b", "66:89:3a:22:7a:ac"},
	} {
		if got := VTEPMAC(tc.node).String(); got != tc.want {
			t.Errorf("VTEPMAC(%q) = %s; want %s", tc.node, got, tc.want)
		}
	}
	m := VTEPMAC("any")
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("VTEPMAC %s must be unicast and locally administered", m)
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err == nil {
		t.Error("Validate accepted a nil logger")
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after Defaults: %v", err)
	}
}

func TestNormalize(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	vx := func(f func(*model.VXLAN)) *model.VXLAN {
		v := &model.VXLAN{LocalIP: a("198.18.0.11"), Parent: "eth0", MAC: mac("66:07:02:c1:cc:60"), MTU: 1450, Address: a("10.244.1.0")}
		if f != nil {
			f(v)
		}
		return v
	}
	b := model.VTEP{Node: "node-b", NodeIP: a("198.18.0.12"), TunnelIP: a("10.244.2.0"), MAC: mac("66:89:3a:22:7a:ac")}

	for _, tc := range []struct {
		name      string
		in        model.Tunnels
		vxlanErr  string
		ipipErr   string
		vtepErrs  []string
		vteps     []string // nodes kept
		vni, port int
	}{
		{name: "defaults", in: model.Tunnels{VXLAN: vx(nil), VTEPs: []model.VTEP{b}}, vteps: []string{"node-b"}, vni: 4096, port: 4789},
		{name: "explicit vni/port", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.VNI, v.Port = 7, 8472 })}, vni: 7, port: 8472},
		{name: "vni too big", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.VNI = 1 << 24 })},
			vxlanErr: "vxlan.calico: VNI 16777216 is outside 1-16777215"},
		{name: "ipv6 local", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.LocalIP = a("2001:db8::1") })},
			vxlanErr: `vxlan.calico: local (node) IP "2001:db8::1" is not an IPv4 address`},
		{name: "no parent", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.Parent = "" })},
			vxlanErr: "vxlan.calico: no parent device for local IP 198.18.0.11"},
		{name: "no mac", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.MAC = nil })},
			vxlanErr: `vxlan.calico: MAC "" is not a 6-byte Ethernet address`},
		{name: "tiny mtu", in: model.Tunnels{VXLAN: vx(func(v *model.VXLAN) { v.MTU = 60 })},
			vxlanErr: "vxlan.calico: MTU 60 is outside 68-65535"},
		{name: "ipip without address", in: model.Tunnels{IPIP: &model.IPIP{MTU: 1480}},
			ipipErr: `tunl0: tunnel address "invalid IP" is not an IPv4 address`},
		{name: "vteps without vxlan are dropped", in: model.Tunnels{VTEPs: []model.VTEP{b}}},
		{name: "vtep is this node", vni: 4096, port: 4789,
			in:       model.Tunnels{VXLAN: vx(nil), VTEPs: []model.VTEP{{Node: "node-a", NodeIP: a("198.18.0.11"), TunnelIP: a("10.244.1.0"), MAC: mac("66:07:02:c1:cc:60")}}},
			vtepErrs: []string{`vtep of node "node-a": tunnel IP 10.244.1.0 is this node's own VXLAN address`}},
		{name: "duplicate MAC", vni: 4096, port: 4789, vteps: []string{"node-b"},
			in:       model.Tunnels{VXLAN: vx(nil), VTEPs: []model.VTEP{{Node: "node-c", NodeIP: a("198.18.0.13"), TunnelIP: a("10.244.3.0"), MAC: b.MAC}, b}},
			vtepErrs: []string{`vtep of node "node-c": MAC 66:89:3a:22:7a:ac is already the VTEP of node "node-b"`}},
		{name: "unnamed vtep", vni: 4096, port: 4789,
			in:       model.Tunnels{VXLAN: vx(nil), VTEPs: []model.VTEP{{NodeIP: a("198.18.0.13"), TunnelIP: a("10.244.3.0"), MAC: mac("66:00:00:00:00:01")}}},
			vtepErrs: []string{"vtep with tunnel IP 10.244.3.0: node name is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := normalize(tc.in)
			if diff := cmp.Diff(tc.vxlanErr, errString(d.vxlanErr)); diff != "" {
				t.Errorf("vxlan error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.ipipErr, errString(d.ipipErr)); diff != "" {
				t.Errorf("ipip error (-want +got):\n%s", diff)
			}
			var gotErrs []string
			for _, e := range d.vtepErrs {
				gotErrs = append(gotErrs, e.Error())
			}
			if diff := cmp.Diff(tc.vtepErrs, gotErrs); diff != "" {
				t.Errorf("vtep errors (-want +got):\n%s", diff)
			}
			var nodes []string
			for _, v := range d.vteps {
				nodes = append(nodes, v.Node)
			}
			if diff := cmp.Diff(tc.vteps, nodes); diff != "" {
				t.Errorf("kept vteps (-want +got):\n%s", diff)
			}
			if (d.vxlan != nil) != (tc.vni != 0) {
				t.Fatalf("vxlan kept = %v; want %v", d.vxlan != nil, tc.vni != 0)
			}
			if d.vxlan != nil && (d.vxlan.VNI != tc.vni || d.vxlan.Port != tc.port) {
				t.Errorf("vni/port = %d/%d; want %d/%d", d.vxlan.VNI, d.vxlan.Port, tc.vni, tc.port)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
