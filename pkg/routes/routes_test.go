// Test addresses: nodes 198.18.0.0/15, pods 10.244.0.0/16 (never routed
// outside the test's fake or namespaces).
package routes

import (
	"context"
	"io"
	"log/slog"
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wren-net/wren/pkg/model"
)

var (
	pfx = netip.MustParsePrefix
	ip  = netip.MustParseAddr
)

func blackhole(p string) model.Route { return model.Route{Dst: pfx(p), Kind: model.RouteBlackhole} }
func pod(p, dev string) model.Route {
	return model.Route{Dst: pfx(p), Kind: model.RoutePod, Device: dev}
}
func tunnel(p, gw, dev string, mtu int) model.Route {
	return model.Route{Dst: pfx(p), Kind: model.RouteRemoteTunnel, Gateway: ip(gw), Device: dev, MTU: mtu}
}
func direct(p, gw, dev string, onlink bool) model.Route {
	return model.Route{Dst: pfx(p), Kind: model.RouteRemoteDirect, Gateway: ip(gw), Device: dev, OnLink: onlink}
}

func newRec(t *testing.T, k Kernel) *Reconciler {
	t.Helper()
	r, err := New(Config{Logger: quietLog}, k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKernelShapes checks the netlink attributes each kind becomes,
// including the IPIP shape "via NODE dev tunl0 onlink" that this machine
// cannot program (no ipip module).
func TestKernelShapes(t *testing.T) {
	links := map[string]int{"eth0": 2, "tunl0": 3, "vxlan.calico": 4, "cali0123456789a": 5}
	r := newRec(t, newFake())
	tests := []struct {
		in   model.Route
		want KRoute
	}{
		{blackhole("10.244.1.0/26"), KRoute{Dst: pfx("10.244.1.0/26"), Type: TypeBlackhole, Scope: ScopeUniverse}},
		{pod("10.244.1.5/32", "cali0123456789a"), KRoute{Dst: pfx("10.244.1.5/32"), Type: TypeUnicast, Scope: ScopeLink, Oif: 5}},
		{tunnel("10.244.2.0/26", "198.18.0.12", "tunl0", 1480), KRoute{Dst: pfx("10.244.2.0/26"), Type: TypeUnicast, Gw: ip("198.18.0.12"), Oif: 3, Flags: FlagOnLink, MTU: 1480}},
		{tunnel("10.244.2.0/26", "10.244.2.0", "vxlan.calico", 1450), KRoute{Dst: pfx("10.244.2.0/26"), Type: TypeUnicast, Gw: ip("10.244.2.0"), Oif: 4, Flags: FlagOnLink, MTU: 1450}},
		{direct("10.244.2.0/26", "198.18.0.12", "eth0", false), KRoute{Dst: pfx("10.244.2.0/26"), Type: TypeUnicast, Gw: ip("198.18.0.12"), Oif: 2}},
		{direct("10.244.2.0/26", "198.18.0.12", "eth0", true), KRoute{Dst: pfx("10.244.2.0/26"), Type: TypeUnicast, Gw: ip("198.18.0.12"), Oif: 2, Flags: FlagOnLink}},
	}
	for _, tt := range tests {
		got, err := r.kroute(tt.in, links)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		tt.want.Table, tt.want.Protocol = MainTable, Protocol
		if diff := cmp.Diff(tt.want, got, netCmp); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tt.in, diff)
		}
	}
}

// TestMessageRoundTrip encodes each shape as RTM_NEWROUTE and decodes it
// with the dump parser: what we write is what we later compare.
func TestMessageRoundTrip(t *testing.T) {
	for _, r := range []KRoute{
		{Dst: pfx("10.244.1.0/26"), Table: MainTable, Protocol: Protocol, Type: TypeBlackhole},
		{Dst: pfx("10.244.1.5/32"), Table: MainTable, Protocol: Protocol, Type: TypeUnicast, Scope: ScopeLink, Oif: 7},
		{Dst: pfx("10.244.2.0/26"), Table: 1000, Protocol: Protocol, Type: TypeUnicast, Gw: ip("198.18.0.12"), Oif: 3, Flags: FlagOnLink, MTU: 1480, Priority: 20},
	} {
		b := appendRouteMsg(nil, Op{Route: r}, 1, true)
		got, ok := parseRoute(b[16:])
		if !ok {
			t.Fatalf("%s: not parsed", r)
		}
		if diff := cmp.Diff(r, got, netCmp); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", r, diff)
		}
	}
}

// foreign are routes somebody else owns, inside and outside the pool.
func seedForeign(f *fakeKernel) {
	f.routes[fkey{MainTable, pfx("10.244.9.0/24"), 0, 0}] = KRoute{Dst: pfx("10.244.9.0/24"), Table: MainTable, Protocol: 4, Type: TypeUnicast, Gw: ip("198.18.0.1"), Oif: 2}
	f.routes[fkey{MainTable, pfx("198.18.0.0/24"), 0, 0}] = KRoute{Dst: pfx("198.18.0.0/24"), Table: MainTable, Protocol: 2, Type: TypeUnicast, Scope: ScopeLink, Oif: 2}
}

const foreignText = "ip route add 10.244.9.0/24 via 198.18.0.1 dev eth0 proto 4\n" +
	"ip route add 198.18.0.0/24 dev eth0 proto 2 scope link\n"

var states = []struct {
	name string
	in   []model.Route
	want string // own routes only; foreign lines are added by the test
}{
	{"empty", nil, ""},
	{"own block", []model.Route{blackhole("10.244.1.0/26")},
		"ip route add blackhole 10.244.1.0/26 proto 87\n"},
	{"pods and vxlan peers", []model.Route{
		blackhole("10.244.1.0/26"), pod("10.244.1.5/32", "cali1"), pod("10.244.1.6/32", "cali2"),
		tunnel("10.244.2.0/26", "10.244.2.0", "vxlan.calico", 1450),
		tunnel("10.244.3.0/26", "10.244.3.0", "vxlan.calico", 1450),
	}, "ip route add blackhole 10.244.1.0/26 proto 87\n" +
		"ip route add 10.244.1.5/32 dev cali1 proto 87 scope link\n" +
		"ip route add 10.244.1.6/32 dev cali2 proto 87 scope link\n" +
		"ip route add 10.244.2.0/26 via 10.244.2.0 dev vxlan.calico proto 87 onlink mtu 1450\n" +
		"ip route add 10.244.3.0/26 via 10.244.3.0 dev vxlan.calico proto 87 onlink mtu 1450\n"},
	{"cross subnet", []model.Route{
		blackhole("10.244.1.0/26"), pod("10.244.1.5/32", "cali1"),
		direct("10.244.2.0/26", "198.18.0.12", "eth0", true),
		tunnel("10.244.3.0/26", "10.244.3.0", "vxlan.calico", 1450),
	}, "ip route add blackhole 10.244.1.0/26 proto 87\n" +
		"ip route add 10.244.1.5/32 dev cali1 proto 87 scope link\n" +
		"ip route add 10.244.2.0/26 via 198.18.0.12 dev eth0 proto 87 onlink\n" +
		"ip route add 10.244.3.0/26 via 10.244.3.0 dev vxlan.calico proto 87 onlink mtu 1450\n"},
	{"no encap, second block", []model.Route{
		blackhole("10.244.1.0/26"), blackhole("10.244.1.64/26"), pod("10.244.1.70/32", "cali2"),
		direct("10.244.2.0/26", "198.18.0.12", "eth0", false),
	}, "ip route add blackhole 10.244.1.0/26 proto 87\n" +
		"ip route add 10.244.1.70/32 dev cali2 proto 87 scope link\n" +
		"ip route add blackhole 10.244.1.64/26 proto 87\n" +
		"ip route add 10.244.2.0/26 via 198.18.0.12 dev eth0 proto 87\n"},
}

// TestReconcilerStates walks the desired states in order, then in random
// orders, each time comparing the whole rendered table (foreign routes
// included: they must never change).
func TestReconcilerStates(t *testing.T) {
	run := func(t *testing.T, order []int) {
		f := newFake("eth0", "vxlan.calico", "cali1", "cali2")
		seedForeign(f)
		r := newRec(t, f)
		for _, i := range order {
			st := states[i]
			r.Set(st.in)
			if err := r.Apply(context.Background()); err != nil {
				t.Fatalf("state %q: %v", st.name, err)
			}
			want := mergeLines(st.want, foreignText)
			if diff := cmp.Diff(want, f.String()); diff != "" {
				t.Fatalf("state %q (order %v): (-want +got)\n%s", st.name, order, diff)
			}
			// A second Apply of the same state writes nothing.
			before := f.writes
			if err := r.Apply(context.Background()); err != nil {
				t.Fatal(err)
			}
			if f.writes != before {
				t.Fatalf("state %q: no-change Apply wrote %d ops", st.name, f.writes-before)
			}
		}
	}
	inOrder := make([]int, len(states))
	for i := range inOrder {
		inOrder[i] = i
	}
	t.Run("in order", func(t *testing.T) { run(t, inOrder) })
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 20; n++ {
		order := rng.Perm(len(states))
		order = append(order, rng.Perm(len(states))...)
		t.Run("random", func(t *testing.T) { run(t, order) })
	}
}

func mergeLines(a, b string) string {
	lines := append(strings.Split(strings.TrimSpace(a), "\n"), strings.Split(strings.TrimSpace(b), "\n")...)
	var out []string
	for _, l := range lines {
		if l != "" {
			out = append(out, l)
		}
	}
	// same order as fakeKernel.sorted: by destination string
	sortByDst(out)
	return strings.Join(out, "\n") + "\n"
}

func sortByDst(lines []string) {
	dst := func(l string) string {
		f := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(l, "ip route add "), "blackhole "))
		return f[0]
	}
	for i := 1; i < len(lines); i++ {
		for j := i; j > 0 && dst(lines[j]) < dst(lines[j-1]); j-- {
			lines[j], lines[j-1] = lines[j-1], lines[j]
		}
	}
}

// TestStalePruned: own routes from a "previous run" (including one with a
// metric, which is a different kernel key) go on the first Apply.
func TestStalePruned(t *testing.T) {
	f := newFake("eth0")
	seedForeign(f)
	f.routes[fkey{MainTable, pfx("10.244.7.0/26"), 0, 0}] = KRoute{Dst: pfx("10.244.7.0/26"), Table: MainTable, Protocol: Protocol, Type: TypeBlackhole}
	f.routes[fkey{MainTable, pfx("10.244.1.0/26"), 0, 100}] = KRoute{Dst: pfx("10.244.1.0/26"), Table: MainTable, Protocol: Protocol, Type: TypeBlackhole, Priority: 100}
	r := newRec(t, f)
	r.Set([]model.Route{blackhole("10.244.1.0/26")})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := mergeLines("ip route add blackhole 10.244.1.0/26 proto 87\n", foreignText)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	if st := r.LastStats(); st.Deleted != 2 || st.Added != 1 {
		t.Fatalf("stats = %+v, want 2 deleted 1 added", st)
	}
}

// TestBadInput: every bad route is named in the error and the good ones
// are still programmed; a foreign route holding a wanted key is kept.
func TestBadInput(t *testing.T) {
	f := newFake("eth0", "cali1")
	seedForeign(f)
	f.routes[fkey{MainTable, pfx("10.244.5.0/26"), 0, 0}] = KRoute{Dst: pfx("10.244.5.0/26"), Table: MainTable, Protocol: 4, Type: TypeUnicast, Gw: ip("198.18.0.1"), Oif: 2}
	r := newRec(t, f)
	r.Set([]model.Route{
		blackhole("10.244.1.0/26"),
		{Dst: netip.Prefix{}, Kind: model.RouteBlackhole},                           // invalid prefix
		blackhole("10.244.1.3/26"),                                                  // host bits
		pod("10.244.1.5/32", "cali-gone"),                                           // missing device
		{Dst: pfx("10.244.4.0/26"), Kind: model.RouteRemoteTunnel, Device: "tunl0"}, // no gateway
		direct("10.244.1.0/26", "198.18.0.12", "eth0", false),                       // duplicate dst
		direct("10.244.5.0/26", "198.18.0.12", "eth0", false),                       // foreign holds key
		pod("10.244.1.6/32", "cali1"),
		{Dst: pfx("fd00::/64"), Kind: model.RouteBlackhole}, // not IPv4
	})
	err := r.Apply(context.Background())
	if err == nil {
		t.Fatal("Apply with bad routes returned nil")
	}
	for _, want := range []string{
		`route "invalid Prefix"`, "10.244.1.3/26: destination has host bits set",
		"10.244.1.5/32 dev cali-gone scope link: device cali-gone does not exist",
		"route 10.244.4.0/26: remote route needs an IPv4 gateway",
		"conflicts with blackhole 10.244.1.0/26",
		"add route 10.244.5.0/26 via 198.18.0.12 oif 2: another route (not proto wren) holds this destination",
		`route "fd00::/64"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	want := mergeLines("ip route add blackhole 10.244.1.0/26 proto 87\n"+
		"ip route add 10.244.1.6/32 dev cali1 proto 87 scope link\n"+
		"ip route add 10.244.5.0/26 via 198.18.0.1 dev eth0 proto 4\n", foreignText)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
}

// TestHeldRouteKept: while a pod's device is missing its existing route is
// neither replaced nor deleted.
func TestHeldRouteKept(t *testing.T) {
	f := newFake("eth0", "cali1")
	r := newRec(t, f)
	r.Set([]model.Route{pod("10.244.1.5/32", "cali1")})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	delete(f.links, "cali1")
	if err := r.Apply(context.Background()); err == nil {
		t.Fatal("missing device not reported")
	}
	if !strings.Contains(f.String(), "10.244.1.5/32") {
		t.Fatalf("held route deleted:\n%s", f)
	}
}

// TestAddNow: a pod route written ahead of Apply is exactly what Apply
// wants (no rewrite), a repeated AddNow succeeds, and a foreign route on
// the destination is left alone.
func TestAddNow(t *testing.T) {
	f := newFake("eth0", "cali1")
	seedForeign(f)
	f.routes[fkey{MainTable, pfx("10.244.1.9/32"), 0, 0}] = KRoute{Dst: pfx("10.244.1.9/32"), Table: MainTable, Protocol: 4, Type: TypeUnicast, Gw: ip("198.18.0.1"), Oif: 2}
	r := newRec(t, f)
	for range 2 {
		if err := r.AddNow(pod("10.244.1.5/32", "cali1"), 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.AddNow(pod("10.244.1.9/32", "cali1"), 3); err != nil {
		t.Fatalf("AddNow over a foreign route: %v", err)
	}
	if err := r.AddNow(pod("10.244.1.7/26", "cali1"), 3); err == nil {
		t.Fatal("AddNow of an invalid route succeeded")
	}
	want := mergeLines("ip route add 10.244.1.5/32 dev cali1 proto 87 scope link\n"+
		"ip route add 10.244.1.9/32 via 198.18.0.1 dev eth0 proto 4\n", foreignText)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	r.Set([]model.Route{pod("10.244.1.5/32", "cali1")})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.LastStats(); st.Unchanged != 1 || st.Added+st.Replaced+st.Deleted != 0 {
		t.Fatalf("Apply after AddNow: %+v, want 1 unchanged and no writes", st)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, p := range []uint8{2, 3, 4, 11, 12, 80, 186, 192} {
		c := Config{Protocol: p}
		c.Defaults()
		if c.Validate() == nil {
			t.Errorf("protocol %d accepted", p)
		}
	}
	c := Config{}
	c.Defaults()
	if err := c.Validate(); err != nil || c.Protocol != Protocol || c.Table != MainTable {
		t.Fatalf("defaults %+v: %v", c, err)
	}
}

var netCmp = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
