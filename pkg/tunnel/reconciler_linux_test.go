package tunnel

// Fake-kernel tier. Addresses: node A is 198.18.0.11 on eth0 with VXLAN
// tunnel address 10.244.1.0 and IPIP tunnel address 10.244.1.1; remote
// nodes use 198.18.0.12-22 and tunnel addresses 10.244.{2,3,4}.0. Nothing
// here touches a kernel.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

var (
	macA  = mustMAC("66:07:02:c1:cc:60") // VTEPMAC("node-a")
	macA2 = mustMAC("66:08:7a:ca:a6:69") // VTEPMAC("node-a2")
	macB  = mustMAC("66:89:3a:22:7a:ac") // VTEPMAC("node-b")
	macC  = mustMAC("66:1a:b9:f1:6e:af") // VTEPMAC("node-c")
	macD  = mustMAC("66:13:a5:25:78:de") // VTEPMAC("node-d")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestReconciler(nl Netlink) *Reconciler {
	return New(Config{Logger: quietLogger()}, nl)
}

// nodeA is node A's VXLAN device as the agent would compute it (VNI and
// port left to their defaults).
func nodeA() *model.VXLAN {
	return &model.VXLAN{LocalIP: ip("198.18.0.11"), Parent: "eth0", MAC: macA, MTU: 1450, Address: ip("10.244.1.0")}
}

var (
	vtepB  = model.VTEP{Node: "node-b", NodeIP: ip("198.18.0.12"), TunnelIP: ip("10.244.2.0"), MAC: macB}
	vtepB2 = model.VTEP{Node: "node-b", NodeIP: ip("198.18.0.22"), TunnelIP: ip("10.244.2.0"), MAC: macB} // node B re-addressed
	vtepC  = model.VTEP{Node: "node-c", NodeIP: ip("198.18.0.13"), TunnelIP: ip("10.244.3.0"), MAC: macC}
	vtepD  = model.VTEP{Node: "node-d", NodeIP: ip("198.18.0.14"), TunnelIP: ip("10.244.4.0"), MAC: macD}
)

func with(v *model.VXLAN, f func(*model.VXLAN)) *model.VXLAN { f(v); return v }

const (
	lineEth0     = "ip link add eth0 type veth mtu 1500 up"
	lineTunlDown = "ip link add tunl0 type ipip down"
	lineVXLAN    = "ip link add vxlan.calico type vxlan id 4096 local 198.18.0.11 dev eth0 dstport 4789 nolearning address 66:07:02:c1:cc:60 mtu 1450 up"
	lineVXLANAdr = "ip addr add 10.244.1.0/32 dev vxlan.calico"
	lineNeighB   = "ip neigh add 10.244.2.0 lladdr 66:89:3a:22:7a:ac dev vxlan.calico nud permanent"
	lineNeighC   = "ip neigh add 10.244.3.0 lladdr 66:1a:b9:f1:6e:af dev vxlan.calico nud permanent"
	lineNeighD   = "ip neigh add 10.244.4.0 lladdr 66:13:a5:25:78:de dev vxlan.calico nud permanent"
	lineFDBB     = "bridge fdb add 66:89:3a:22:7a:ac dev vxlan.calico dst 198.18.0.12 self permanent"
	lineFDBB2    = "bridge fdb add 66:89:3a:22:7a:ac dev vxlan.calico dst 198.18.0.22 self permanent"
	lineFDBC     = "bridge fdb add 66:1a:b9:f1:6e:af dev vxlan.calico dst 198.18.0.13 self permanent"
	lineFDBD     = "bridge fdb add 66:13:a5:25:78:de dev vxlan.calico dst 198.18.0.14 self permanent"
)

func golden(lines ...string) string {
	s := slices.Clone(lines)
	slices.Sort(s) // the order of fakeNL.String
	return strings.Join(s, "\n")
}

// routerStates is a walk through the modes and changes the agent makes.
// Each want is the complete kernel state for that desired state, whatever
// came before it (level-triggered).
var routerStates = []struct {
	name string
	in   model.Tunnels
	want string
}{
	{
		name: "no encapsulation",
		in:   model.Tunnels{},
		want: golden(lineEth0, lineTunlDown),
	},
	{
		name: "vxlan without remote nodes",
		in:   model.Tunnels{VXLAN: nodeA()},
		want: golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr),
	},
	{
		name: "vxlan with nodes b and c",
		in:   model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepC, vtepB}},
		want: golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr, lineNeighB, lineFDBB, lineNeighC, lineFDBC),
	},
	{
		name: "node b re-addressed, c gone, d joined",
		in:   model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB2, vtepD}},
		want: golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr, lineNeighB, lineFDBB2, lineNeighD, lineFDBD),
	},
	{
		name: "mtu and mac changed",
		in: model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.MTU, v.MAC = 1400, macA2 }),
			VTEPs: []model.VTEP{vtepB}},
		want: golden(lineEth0, lineTunlDown,
			"ip link add vxlan.calico type vxlan id 4096 local 198.18.0.11 dev eth0 dstport 4789 nolearning address 66:08:7a:ca:a6:69 mtu 1400 up",
			lineVXLANAdr, lineNeighB, lineFDBB),
	},
	{
		name: "vni and port changed",
		in: model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.VNI, v.Port = 4097, 4790 }),
			VTEPs: []model.VTEP{vtepB, vtepD}},
		want: golden(lineEth0, lineTunlDown,
			"ip link add vxlan.calico type vxlan id 4097 local 198.18.0.11 dev eth0 dstport 4790 nolearning address 66:07:02:c1:cc:60 mtu 1450 up",
			lineVXLANAdr, lineNeighB, lineFDBB, lineNeighD, lineFDBD),
	},
	{
		name: "vxlan tunnel address changed",
		in: model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.Address = ip("10.244.1.64") }),
			VTEPs: []model.VTEP{vtepC}},
		want: golden(lineEth0, lineTunlDown, lineVXLAN, "ip addr add 10.244.1.64/32 dev vxlan.calico", lineNeighC, lineFDBC),
	},
	{
		name: "ipip",
		in:   model.Tunnels{IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")}},
		want: golden(lineEth0, "ip link add tunl0 type ipip mtu 1480 up", "ip addr add 10.244.1.1/32 dev tunl0"),
	},
	{
		name: "ipip with a smaller uplink",
		in:   model.Tunnels{IPIP: &model.IPIP{MTU: 1430, Address: ip("10.244.1.1")}},
		want: golden(lineEth0, "ip link add tunl0 type ipip mtu 1430 up", "ip addr add 10.244.1.1/32 dev tunl0"),
	},
	{
		name: "ipip and vxlan during a pool migration",
		in: model.Tunnels{IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")},
			VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}},
		want: golden(lineEth0, "ip link add tunl0 type ipip mtu 1480 up", "ip addr add 10.244.1.1/32 dev tunl0",
			lineVXLAN, lineVXLANAdr, lineNeighB, lineFDBB),
	},
}

// applyState sets in, applies, checks the rendering, then checks that a
// second Apply of the same state writes nothing.
func applyState(t *testing.T, f *fakeNL, r *Reconciler, in model.Tunnels, want string) {
	t.Helper()
	r.Set(in)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Fatalf("kernel state (-want +got):\n%s", diff)
	}
	f.writes = nil
	r.Set(in)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if len(f.writes) != 0 {
		t.Fatalf("second Apply of a converged state wrote: %q", f.writes)
	}
}

func TestRouterStates(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	for _, st := range routerStates {
		t.Run(st.name, func(t *testing.T) { applyState(t, f, r, st.in, st.want) })
	}
}

func TestRouterStatesRandomOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for round := range 8 {
		f := newFake(true)
		r := newTestReconciler(f)
		for _, i := range rng.Perm(len(routerStates)) {
			st := routerStates[i]
			t.Run(st.name, func(t *testing.T) {
				t.Logf("round %d", round)
				applyState(t, f, r, st.in, st.want)
			})
		}
	}
}

// MTU and MAC change in place: exactly two writes, no delete/recreate
// (which would drop every FDB and neighbour entry with the device).
func TestApplyChangesMTUAndMACInPlace(t *testing.T) {
	f := newFake(false)
	r := newTestReconciler(f)
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	idx := f.byName(VXLANName).Attrs().Index
	f.writes = nil
	r.Set(model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.MTU, v.MAC = 1400, macA2 }), VTEPs: []model.VTEP{vtepB}})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"link set mtu vxlan.calico 1400", "link set address vxlan.calico 66:08:7a:ca:a6:69"}
	if diff := cmp.Diff(want, f.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if got := f.byName(VXLANName).Attrs().Index; got != idx {
		t.Errorf("vxlan.calico index %d -> %d: device was recreated", idx, got)
	}
}

// A vxlan.calico whose fixed attributes differ is deleted and recreated.
func TestApplyRecreatesIncompatibleVXLAN(t *testing.T) {
	good := &netlink.Vxlan{VxlanId: 4096, SrcAddr: ip("198.18.0.11").AsSlice(), Port: 4789}
	for _, tc := range []struct {
		name string
		edit func(v *netlink.Vxlan, f *fakeNL)
	}{
		{"wrong vni", func(v *netlink.Vxlan, _ *fakeNL) { v.VxlanId = 1 }},
		{"linux default port", func(v *netlink.Vxlan, _ *fakeNL) { v.Port = 0 }},
		{"learning on", func(v *netlink.Vxlan, _ *fakeNL) { v.Learning = true }},
		{"old node IP", func(v *netlink.Vxlan, _ *fakeNL) { v.SrcAddr = ip("198.18.0.99").AsSlice() }},
		{"other parent", func(v *netlink.Vxlan, f *fakeNL) {
			v.VtepDevIndex = f.addLink(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(false)
			old := *good
			old.LinkAttrs = netlink.LinkAttrs{Name: VXLANName, MTU: 1450, HardwareAddr: macA, Flags: net.FlagUp}
			old.VtepDevIndex = f.byName("eth0").Attrs().Index
			tc.edit(&old, f)
			f.addLink(&old)
			f.writes = nil
			r := newTestReconciler(f)
			r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}})
			if err := r.Apply(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(f.String(), lineVXLAN) {
				t.Errorf("vxlan.calico not recreated right; state:\n%s", f)
			}
			if diff := cmp.Diff([]string{"link del vxlan.calico", "link add vxlan.calico"}, f.writes[:2]); diff != "" {
				t.Errorf("first writes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyForeignLinkNamedVXLAN(t *testing.T) {
	f := newFake(true)
	f.addLink(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: VXLANName, Flags: net.FlagUp}})
	f.writes = nil
	r := newTestReconciler(f)
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}, IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")}})
	err := r.Apply(context.Background())
	const msg = "link vxlan.calico exists with type bridge, not vxlan; delete it or rename it"
	if err == nil || !strings.Contains(err.Error(), msg) {
		t.Fatalf("Apply = %v; want an error containing %q", err, msg)
	}
	want := golden(lineEth0, "ip link add vxlan.calico type bridge mtu 1500 up",
		"ip link add tunl0 type ipip mtu 1480 up", "ip addr add 10.244.1.1/32 dev tunl0")
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("foreign link touched or tunl0 skipped (-want +got):\n%s", diff)
	}

	// Without VXLAN the foreign link is simply not ours: no error, kept.
	r.Set(model.Tunnels{})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply without vxlan: %v", err)
	}
	if f.byName(VXLANName) == nil {
		t.Fatal("foreign vxlan.calico deleted")
	}
}

func TestApplyNoIPIPSupport(t *testing.T) {
	f := newFake(false)
	r := newTestReconciler(f)
	r.Set(model.Tunnels{IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")}, VXLAN: nodeA()})
	err := r.Apply(context.Background())
	if !errors.Is(err, ErrNoIPIP) || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("Apply = %v; want ErrNoIPIP wrapping EOPNOTSUPP", err)
	}
	if !strings.Contains(err.Error(), "add link tunl0 type ipip") {
		t.Errorf("error %q does not name tunl0", err)
	}
	// The VXLAN half still happened.
	if diff := cmp.Diff(golden(lineEth0, lineVXLAN, lineVXLANAdr), f.String()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	// Not wanting IPIP on such a kernel is fine.
	r.Set(model.Tunnels{})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply without ipip: %v", err)
	}
}

func TestApplyMissingParent(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	r.Set(model.Tunnels{VXLAN: with(nodeA(), func(v *model.VXLAN) { v.Parent = "ens9" }),
		IPIP: &model.IPIP{MTU: 1480, Address: ip("10.244.1.1")}})
	err := r.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "parent device ens9") {
		t.Fatalf("Apply = %v; want an error naming parent ens9", err)
	}
	if f.byName(VXLANName) != nil {
		t.Error("vxlan.calico created without its parent")
	}
	if !strings.Contains(f.String(), "ip addr add 10.244.1.1/32 dev tunl0") {
		t.Errorf("tunl0 not configured after the vxlan error:\n%s", f)
	}
}

// Invalid VTEPs are reported by node; valid ones are applied and the
// existing entries of an invalid one are kept, not swept.
func TestApplyInvalidVTEPs(t *testing.T) {
	f := newFake(false)
	r := newTestReconciler(f)
	applyState(t, f, r, model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB, vtepC}},
		golden(lineEth0, lineVXLAN, lineVXLANAdr, lineNeighB, lineFDBB, lineNeighC, lineFDBC))

	badC := vtepC
	badC.MAC = mustMAC("01:00:5e:00:00:01") // multicast
	badE := model.VTEP{Node: "node-e", NodeIP: netip.Addr{}, TunnelIP: ip("10.244.5.0"), MAC: VTEPMAC("node-e")}
	dupD := model.VTEP{Node: "node-f", NodeIP: ip("198.18.0.15"), TunnelIP: vtepD.TunnelIP, MAC: VTEPMAC("node-f")}
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{badC, vtepD, badE, dupD}})
	err := r.Apply(context.Background())
	for _, want := range []string{
		`vtep of node "node-c": MAC 01:00:5e:00:00:01 is a multicast address`,
		`vtep of node "node-e": node IP "invalid IP" is not an IPv4 address`,
		`vtep of node "node-f": tunnel IP 10.244.4.0 is already the VTEP of node "node-d"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error %v; want it to contain %q", err, want)
		}
	}
	want := golden(lineEth0, lineVXLAN, lineVXLANAdr, lineNeighC, lineFDBC, lineNeighD, lineFDBD)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

// A write failing for one node is reported with the node's name and does
// not stop the other nodes' entries or the stale sweep.
func TestApplyWriteErrorsAreJoined(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	applyState(t, f, r, model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepC}},
		golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr, lineNeighC, lineFDBC))

	f.fail = func(op string) error {
		if strings.HasPrefix(op, "neigh set 10.244.2.0") || strings.HasPrefix(op, "link set mtu tunl0") {
			return unix.ENOBUFS
		}
		return nil
	}
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB, vtepD}, IPIP: &model.IPIP{MTU: 1400, Address: ip("10.244.1.1")}})
	err := r.Apply(context.Background())
	for _, want := range []string{
		"set neighbour 10.244.2.0 lladdr 66:89:3a:22:7a:ac on vxlan.calico for node node-b: no buffer space available",
		"set mtu 1400 on tunl0: no buffer space available",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error %v; want it to contain %q", err, want)
		}
	}
	if !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("Apply error %v does not wrap ENOBUFS", err)
	}
	want := golden(lineEth0, "ip link add tunl0 type ipip mtu 1480 up", "ip addr add 10.244.1.1/32 dev tunl0",
		lineVXLAN, lineVXLANAdr, lineFDBB, lineNeighD, lineFDBD)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

// Entries Wren did not ask for: permanent ones (left by a previous run or
// by hand) are removed, kernel-made (non-permanent) ones are left alone.
// Extra addresses on the tunnel devices go too.
func TestApplySweepsStaleEntries(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	r.Set(model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	vx := f.byName(VXLANName)
	idx := vx.Attrs().Index
	for _, n := range []*netlink.Neigh{
		vtepNeigh(idx, vtepC), // node C left while the agent was down
		{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_FAILED, IP: ip("10.244.9.0").AsSlice()},
		{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: vtepB.TunnelIP.AsSlice(), HardwareAddr: macD}, // wrong MAC
		vtepFDB(idx, vtepC),
		// iproute2's "bridge fdb add ... permanent" state, for a MAC
		// nobody wants and for node B's desired entry (kept as is).
		{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			IP: ip("198.18.0.99").AsSlice(), HardwareAddr: mustMAC("66:00:00:00:00:09")},
		{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			IP: vtepB.NodeIP.AsSlice(), HardwareAddr: macB},
		{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			IP: ip("198.18.0.200").AsSlice(), HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}}, // flood-to-all entry
	} {
		if err := f.NeighSet(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"10.244.1.0/24", "10.244.7.7/32"} {
		if err := f.AddrAdd(vx, &netlink.Addr{IPNet: netipToNet(netip.MustParsePrefix(a))}); err != nil {
			t.Fatal(err)
		}
	}
	tunl := f.byName(IPIPName)
	if err := f.AddrAdd(tunl, hostAddr(ip("10.244.1.1"))); err != nil {
		t.Fatal(err)
	}
	if err := f.LinkSetUp(tunl); err != nil {
		t.Fatal(err)
	}

	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr, lineNeighB,
		"bridge fdb add 66:89:3a:22:7a:ac dev vxlan.calico dst 198.18.0.12 self permanent+noarp",
		"ip neigh add 10.244.9.0 dev vxlan.calico nud failed")
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

func netipToNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// Set is pure: it does no I/O, and it keeps its own copy of the input.
func TestSetIsPure(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	in := model.Tunnels{VXLAN: nodeA(), VTEPs: []model.VTEP{vtepB}}
	in.VXLAN.MAC = append(net.HardwareAddr(nil), macA...)
	in.VTEPs[0].MAC = append(net.HardwareAddr(nil), macB...)
	r.Set(in)
	r.Set(in)
	if f.reads != 0 || len(f.writes) != 0 {
		t.Fatalf("Set did I/O: %d reads, writes %q", f.reads, f.writes)
	}
	in.VXLAN.MAC[5] = 0xff
	in.VTEPs[0].MAC[5] = 0xff
	in.VTEPs[0].Node = "changed"
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := golden(lineEth0, lineTunlDown, lineVXLAN, lineVXLANAdr, lineNeighB, lineFDBB)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("Apply used the caller's mutated input (-want +got):\n%s", diff)
	}
}

func TestApplyHonoursCanceledContext(t *testing.T) {
	f := newFake(true)
	r := newTestReconciler(f)
	r.Set(model.Tunnels{VXLAN: nodeA()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Apply(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply = %v; want context.Canceled", err)
	}
	if len(f.writes) != 0 {
		t.Fatalf("canceled Apply wrote %q", f.writes)
	}
}
