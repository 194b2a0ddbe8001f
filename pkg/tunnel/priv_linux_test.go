package tunnel

// Privileged tier: real network namespaces from test/netns, nothing in the
// root namespace. Every kernel call goes through the *netlink.Handle of a
// namespace this test created.
//
// Addresses: node A 198.18.0.11/24 and node B 198.18.0.12/24 on a bridge
// "switch" namespace; VXLAN tunnel addresses 10.244.1.0 (A) and
// 10.244.2.0 (B); other remote nodes are only FDB/neighbour data.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
	nstest "github.com/wren-net/wren/test/netns"
)

// newNodeNS makes a node namespace with eth0 = 198.18.0.11/24 plugged into
// a fresh switch.
func newNodeNS(t *testing.T) (*nstest.Switch, *nstest.NS) {
	t.Helper()
	nstest.RequireRoot(t)
	sw := nstest.NewSwitch(t, "sw")
	node := nstest.New(t, "node-a")
	sw.Attach(t, node, "eth0", "198.18.0.11/24", 0)
	return sw, node
}

func mustApply(t *testing.T, r *Reconciler) {
	t.Helper()
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func readVXLAN(t *testing.T, node *nstest.NS) *netlink.Vxlan {
	t.Helper()
	l := node.Link(t, VXLANName)
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s is a %T (%s), not a vxlan", VXLANName, l, l.Type())
	}
	return v
}

// v4Addrs lists the IPv4 addresses of a link as CIDR strings.
func v4Addrs(t *testing.T, node *nstest.NS, link string) []string {
	t.Helper()
	addrs, err := node.NL.AddrList(node.Link(t, link), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

// vtepEntries renders the neighbour and FDB entries of vxlan.calico that
// carry a destination IP, sorted.
func vtepEntries(t *testing.T, node *nstest.NS) []string {
	t.Helper()
	idx := node.Link(t, VXLANName).Attrs().Index
	var out []string
	neighs, err := node.NL.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.LinkIndex == idx {
			out = append(out, fmt.Sprintf("neigh %s lladdr %s %s", n.IP, n.HardwareAddr, stateName(n.State)))
		}
	}
	fdb, err := node.NL.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		if n.LinkIndex == idx {
			self := ""
			if n.Flags&netlink.NTF_SELF != 0 {
				self = " self"
			}
			out = append(out, fmt.Sprintf("fdb %s dst %s%s %s", n.HardwareAddr, ipString(n.IP), self, stateName(n.State)))
		}
	}
	slices.Sort(out)
	return out
}

func TestPrivVXLANDevice(t *testing.T) {
	_, node := newNodeNS(t)
	r := New(Config{Logger: quietLogger()}, node.NL)
	r.Set(model.Tunnels{VXLAN: nodeA()})
	mustApply(t, r)

	eth0 := node.Link(t, "eth0").Attrs().Index
	v := readVXLAN(t, node)
	want := vxlanAttrs{Name: VXLANName, VNI: 4096, Port: 4789, VtepDevIndex: eth0, MTU: 1450,
		SrcAddr: "198.18.0.11", MAC: "66:07:02:c1:cc:60", Learning: false, Up: true, Group: "none"}
	if diff := cmp.Diff(want, vxlanAttrsOf(v)); diff != "" {
		t.Fatalf("vxlan.calico attributes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.244.1.0/32"}, v4Addrs(t, node, VXLANName)); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}

	// Extra addresses (a /24 someone added, an old tunnel address) go;
	// the device itself is kept.
	node.AddAddr(t, VXLANName, "10.244.1.0/24")
	node.AddAddr(t, VXLANName, "10.244.7.7/32")
	mustApply(t, r)
	if diff := cmp.Diff([]string{"10.244.1.0/32"}, v4Addrs(t, node, VXLANName)); diff != "" {
		t.Errorf("addresses after sweep (-want +got):\n%s", diff)
	}
	if got := readVXLAN(t, node).Index; got != v.Index {
		t.Errorf("vxlan.calico recreated by a converged Apply (index %d -> %d)", v.Index, got)
	}

	// MTU and MAC change in place on the live device.
	r.Set(model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.MTU, v.MAC = 1400, macA2 })})
	mustApply(t, r)
	v2 := readVXLAN(t, node)
	if v2.Index != v.Index || v2.MTU != 1400 || v2.HardwareAddr.String() != macA2.String() || v2.Flags&net.FlagUp == 0 {
		t.Errorf("after in-place change: index %d (was %d), mtu %d, mac %s, flags %v; want same index, 1400, %s, up",
			v2.Index, v.Index, v2.MTU, v2.HardwareAddr, v2.Flags, macA2)
	}

	// A device set down by hand comes back up.
	if err := node.NL.LinkSetDown(v2); err != nil {
		t.Fatal(err)
	}
	mustApply(t, r)
	if readVXLAN(t, node).Flags&net.FlagUp == 0 {
		t.Error("vxlan.calico left down")
	}

	// No VXLAN: the device goes.
	r.Set(model.Tunnels{})
	mustApply(t, r)
	if _, err := node.NL.LinkByName(VXLANName); !notFound(err) {
		t.Errorf("vxlan.calico still there after VXLAN was turned off (err %v)", err)
	}
}

func TestPrivVXLANForeignLink(t *testing.T) {
	_, node := newNodeNS(t)
	la := netlink.NewLinkAttrs()
	la.Name = VXLANName
	if err := node.NL.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	r := New(Config{Logger: quietLogger()}, node.NL)
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}})
	err := r.Apply(context.Background())
	const msg = "link vxlan.calico exists with type bridge, not vxlan; delete it or rename it"
	if err == nil || !strings.Contains(err.Error(), msg) {
		t.Fatalf("Apply = %v; want an error containing %q", err, msg)
	}
	if l := node.Link(t, VXLANName); l.Type() != "bridge" {
		t.Errorf("foreign link replaced by a %s", l.Type())
	}
	r.Set(model.Tunnels{})
	mustApply(t, r)
	if l := node.Link(t, VXLANName); l.Type() != "bridge" {
		t.Errorf("foreign link replaced by a %s after VXLAN was turned off", l.Type())
	}
}

func TestPrivVXLANIncompatibleRecreated(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*netlink.Vxlan)
	}{
		{"wrong vni", func(v *netlink.Vxlan) { v.VxlanId = 1 }},
		{"learning on", func(v *netlink.Vxlan) { v.Learning = true }},
		{"kernel default port", func(v *netlink.Vxlan) { v.Port = 0 }},
		{"no local address", func(v *netlink.Vxlan) { v.SrcAddr = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, node := newNodeNS(t)
			eth0 := node.Link(t, "eth0").Attrs().Index
			old := vxlanLink(*nodeA(), eth0)
			tc.edit(old)
			if err := node.NL.LinkAdd(old); err != nil {
				t.Fatal(err)
			}
			before := readVXLAN(t, node)
			if vxlanIncompat(before, vxlanLink(*nodeA(), eth0)) == "" {
				t.Fatalf("test setup: kernel device %+v is not incompatible", vxlanAttrsOf(before))
			}
			r := New(Config{Logger: quietLogger()}, node.NL)
			r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}})
			mustApply(t, r)
			after := readVXLAN(t, node)
			if after.Index == before.Index {
				t.Errorf("vxlan.calico not recreated (index %d)", after.Index)
			}
			if after.VxlanId != 4096 || after.Port != 4789 || after.Learning || !after.SrcAddr.Equal(net.IPv4(198, 18, 0, 11)) || after.VtepDevIndex != eth0 {
				t.Errorf("recreated device: %+v", vxlanAttrsOf(after))
			}
			want := []string{
				"fdb 66:89:3a:22:7a:ac dst 198.18.0.12 self permanent",
				"neigh 10.244.2.0 lladdr 66:89:3a:22:7a:ac permanent",
			}
			if diff := cmp.Diff(want, vtepEntries(t, node)); diff != "" {
				t.Errorf("entries on the recreated device (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrivVTEPEntries(t *testing.T) {
	_, node := newNodeNS(t)
	r := New(Config{Logger: quietLogger()}, node.NL)
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB, vtepC}})
	mustApply(t, r)
	wantBC := []string{
		"fdb 66:1a:b9:f1:6e:af dst 198.18.0.13 self permanent",
		"fdb 66:89:3a:22:7a:ac dst 198.18.0.12 self permanent",
		"neigh 10.244.2.0 lladdr 66:89:3a:22:7a:ac permanent",
		"neigh 10.244.3.0 lladdr 66:1a:b9:f1:6e:af permanent",
	}
	if diff := cmp.Diff(wantBC, vtepEntries(t, node)); diff != "" {
		t.Fatalf("entries (-want +got):\n%s", diff)
	}

	// Damage by hand: stale permanent entries of a departed node, a wrong
	// MAC for C, B's FDB entry deleted, and a flood-to-all default entry.
	node.MustRun(t, "ip", "neigh", "add", "10.244.9.0", "lladdr", "66:00:00:00:00:09", "dev", VXLANName, "nud", "permanent")
	node.MustRun(t, "bridge", "fdb", "add", "66:00:00:00:00:09", "dev", VXLANName, "dst", "198.18.0.99", "self", "permanent")
	node.MustRun(t, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", VXLANName, "dst", "198.18.0.98", "self", "permanent")
	node.MustRun(t, "ip", "neigh", "replace", "10.244.3.0", "lladdr", "66:00:00:00:00:0c", "dev", VXLANName, "nud", "permanent")
	node.MustRun(t, "bridge", "fdb", "del", macB.String(), "dev", VXLANName, "dst", "198.18.0.12", "self")
	if got := vtepEntries(t, node); slices.Equal(got, wantBC) {
		t.Fatal("test setup: damage not visible")
	}
	mustApply(t, r)
	if diff := cmp.Diff(wantBC, vtepEntries(t, node)); diff != "" {
		t.Fatalf("entries after repair (-want +got):\n%s", diff)
	}

	// B re-addressed, C gone, D joined.
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB2, vtepD}})
	mustApply(t, r)
	want := []string{
		"fdb 66:13:a5:25:78:de dst 198.18.0.14 self permanent",
		"fdb 66:89:3a:22:7a:ac dst 198.18.0.22 self permanent",
		"neigh 10.244.2.0 lladdr 66:89:3a:22:7a:ac permanent",
		"neigh 10.244.4.0 lladdr 66:13:a5:25:78:de permanent",
	}
	if diff := cmp.Diff(want, vtepEntries(t, node)); diff != "" {
		t.Fatalf("entries after change (-want +got):\n%s", diff)
	}
}

// Two nodes on one switch reach each other's tunnel address through
// vxlan.calico using only the programmed entries: no learning, no ARP
// across the overlay.
func TestPrivVXLANDataPath(t *testing.T) {
	sw, a := newNodeNS(t)
	b := nstest.New(t, "node-b")
	sw.Attach(t, b, "eth0", "198.18.0.12/24", 0)

	vxA := nodeA()
	vxB := &model.VXLAN{LocalIP: ip("198.18.0.12"), Parent: "eth0", MAC: macB, MTU: 1450, Address: ip("10.244.2.0")}
	vtepA := model.VTEP{Node: "node-a", NodeIP: ip("198.18.0.11"), TunnelIP: ip("10.244.1.0"), MAC: macA}
	ra := New(Config{Logger: quietLogger()}, a.NL)
	ra.Set(model.Tunnels{VXLAN: vxA, VTEPs: []model.VTEP{vtepB}})
	mustApply(t, ra)
	rb := New(Config{Logger: quietLogger()}, b.NL)
	rb.Set(model.Tunnels{VXLAN: vxB, VTEPs: []model.VTEP{vtepA}})
	mustApply(t, rb)
	// The route is pkg/routes' job; a plain onlink route stands in here.
	a.AddRoute(t, "10.244.2.0/32", "via", "10.244.2.0", "dev", VXLANName, "onlink")
	b.AddRoute(t, "10.244.1.0/32", "via", "10.244.1.0", "dev", VXLANName, "onlink")
	if err := a.Ping(ip("10.244.2.0"), 3); err != nil {
		t.Fatalf("ping over vxlan: %v", err)
	}
	// Nothing was learned: the FDB still holds exactly the programmed entry.
	want := []string{
		"fdb 66:89:3a:22:7a:ac dst 198.18.0.12 self permanent",
		"neigh 10.244.2.0 lladdr 66:89:3a:22:7a:ac permanent",
	}
	if diff := cmp.Diff(want, vtepEntries(t, a)); diff != "" {
		t.Errorf("node A entries after traffic (-want +got):\n%s", diff)
	}

	// Delete B's FDB entry on A: traffic stops (nothing floods or learns)
	// and comes back after the next Apply.
	a.MustRun(t, "bridge", "fdb", "del", macB.String(), "dev", VXLANName, "dst", "198.18.0.12", "self")
	if err := a.Ping(ip("10.244.2.0"), 1); err == nil {
		t.Error("ping worked without an FDB entry: the device floods or learns")
	}
	mustApply(t, ra)
	nstest.Poll(t, 10*time.Second, "ping after repair", func() error { return a.Ping(ip("10.244.2.0"), 1) })
}

func TestPrivHostMTU(t *testing.T) {
	sw, node := newNodeNS(t)
	sw.Attach(t, node, "eth1", "", 9000)
	sw.Attach(t, node, "ens5", "", 1400)
	sw.Attach(t, node, "cali0123456789a", "", 1280) // not an uplink name
	if err := node.NL.LinkSetDown(node.Link(t, "ens5")); err != nil {
		t.Fatal(err)
	}
	got, err := HostMTU(node.NL, nil)
	if err != nil || got != 1500 {
		t.Fatalf("HostMTU = %d, %v; want 1500 (eth0; ens5 is down, cali* does not match)", got, err)
	}
	node.LinkUp(t, "ens5")
	if got, err := HostMTU(node.NL, nil); err != nil || got != 1400 {
		t.Fatalf("HostMTU = %d, %v; want 1400 once ens5 is up", got, err)
	}
	for _, n := range []string{"eth0", "eth1", "ens5"} {
		if err := node.NL.LinkSetDown(node.Link(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := HostMTU(node.NL, nil); err == nil || !strings.Contains(err.Error(), "all are down: ens5, eth0, eth1") {
		t.Fatalf("HostMTU with every uplink down = %v; want an error naming them", err)
	}
}

func TestPrivIPIP(t *testing.T) {
	_, node := newNodeNS(t)
	r := New(Config{Logger: quietLogger()}, node.NL)
	r.Set(model.Tunnels{IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")}})
	err := r.Apply(context.Background())
	if errors.Is(err, ErrNoIPIP) {
		if !strings.Contains(err.Error(), "tunl0") {
			t.Errorf("ErrNoIPIP error does not name tunl0: %v", err)
		}
		t.Skip("kernel lacks ipip")
	}
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	l := node.Link(t, IPIPName)
	if l.Type() != "ipip" || l.Attrs().MTU != 1480 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tunl0: type %s mtu %d flags %v; want ipip, 1480, up", l.Type(), l.Attrs().MTU, l.Attrs().Flags)
	}
	node.AddAddr(t, IPIPName, "10.244.7.7/32")
	mustApply(t, r)
	if diff := cmp.Diff([]string{"10.244.1.1/32"}, v4Addrs(t, node, IPIPName)); diff != "" {
		t.Errorf("tunl0 addresses (-want +got):\n%s", diff)
	}

	r.Set(model.Tunnels{})
	mustApply(t, r)
	l = node.Link(t, IPIPName)
	if got := v4Addrs(t, node, IPIPName); len(got) != 0 || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("tunl0 after IPIP off: addresses %q, flags %v; want none, down", got, l.Attrs().Flags)
	}
}
