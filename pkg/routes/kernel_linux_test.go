// Privileged tier: a real routing table in a throwaway namespace.
// Test addresses: node 198.18.0.11/24 (underlay inside the namespace
// only), pods and blocks from 10.244.0.0/16.
package routes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/wren-net/wren/pkg/model"
	nstest "github.com/wren-net/wren/test/netns"
	"golang.org/x/sys/unix"
)

// node builds a namespace with eth0 on a switch and veth pairs standing
// in for vxlan.calico and a pod veth (this kernel has no dummy links).
func node(t testing.TB) *nstest.NS {
	sw := nstest.NewSwitch(t, "sw")
	n := nstest.New(t, "node")
	sw.Attach(t, n, "eth0", "198.18.0.11/24", 0)
	for i, name := range []string{"vxlan.calico", "cali0123456789a"} {
		nstest.Veth(t, n, name, n, fmt.Sprintf("peer%d", i), 0)
	}
	return n
}

func newKernelRec(t testing.TB, n *nstest.NS) (*Reconciler, *NetlinkKernel) {
	k, err := NewKernel(n.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	r, err := New(Config{Logger: quietLog}, k)
	if err != nil {
		t.Fatal(err)
	}
	return r, k
}

// ownRoutes reads the table back through the netlink library (a second,
// independent decoder) filtered by our protocol.
func ownRoutes(t testing.TB, n *nstest.NS) map[string]netlink.Route {
	t.Helper()
	rs, err := n.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: MainTable, Protocol: Protocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]netlink.Route{}
	for _, r := range rs {
		m[r.Dst.String()] = r
	}
	return m
}

func TestKernelApply(t *testing.T) {
	n := node(t)
	r, _ := newKernelRec(t, n)
	eth0 := n.Link(t, "eth0").Attrs().Index
	vx := n.Link(t, "vxlan.calico").Attrs().Index
	cali := n.Link(t, "cali0123456789a").Attrs().Index

	// A foreign route inside the pool, and stale own routes of a
	// "previous run" (one at a metric: a different kernel key).
	n.AddRoute(t, "10.244.9.0/24", "via", "198.18.0.1", "proto", "static")
	n.AddRoute(t, "blackhole", "10.244.7.0/26", "proto", "87")
	n.AddRoute(t, "blackhole", "10.244.1.0/26", "proto", "87", "metric", "100")

	r.Set([]model.Route{
		blackhole("10.244.1.0/26"),
		pod("10.244.1.5/32", "cali0123456789a"),
		tunnel("10.244.2.0/26", "10.244.2.0", "vxlan.calico", 1450),
		direct("10.244.3.0/26", "198.18.0.13", "eth0", false),
		direct("10.244.4.0/26", "198.18.1.14", "eth0", true),
	})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := ownRoutes(t, n)
	type shape struct {
		typ, scope, flags, oif, mtu int
		gw                          string
	}
	want := map[string]shape{
		"10.244.1.0/26": {unix.RTN_BLACKHOLE, unix.RT_SCOPE_UNIVERSE, 0, 0, 0, "<nil>"},
		"10.244.1.5/32": {unix.RTN_UNICAST, unix.RT_SCOPE_LINK, 0, cali, 0, "<nil>"},
		"10.244.2.0/26": {unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, unix.RTNH_F_ONLINK, vx, 1450, "10.244.2.0"},
		"10.244.3.0/26": {unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, 0, eth0, 0, "198.18.0.13"},
		"10.244.4.0/26": {unix.RTN_UNICAST, unix.RT_SCOPE_UNIVERSE, unix.RTNH_F_ONLINK, eth0, 0, "198.18.1.14"},
	}
	if len(got) != len(want) {
		t.Fatalf("own routes %v, want %d (stale ones pruned)", keys(got), len(want))
	}
	for dst, w := range want {
		g, ok := got[dst]
		if !ok {
			t.Fatalf("route %s missing", dst)
		}
		if g.Type != w.typ || int(g.Scope) != w.scope || g.Flags&unix.RTNH_F_ONLINK != w.flags || g.LinkIndex != w.oif || g.MTU != w.mtu || g.Gw.String() != w.gw || g.Priority != 0 || int(g.Protocol) != Protocol {
			t.Errorf("route %s = type %d scope %d flags %d oif %d mtu %d gw %s prio %d proto %d; want %+v",
				dst, g.Type, g.Scope, g.Flags, g.LinkIndex, g.MTU, g.Gw, g.Priority, g.Protocol, w)
		}
	}
	// The foreign route is untouched.
	fr, err := n.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: mustNet("10.244.9.0/24")}, netlink.RT_FILTER_DST)
	if err != nil || len(fr) != 1 || fr[0].Protocol != unix.RTPROT_STATIC || fr[0].Gw.String() != "198.18.0.1" {
		t.Fatalf("foreign route changed: %v %v", fr, err)
	}
	// A no-change Apply writes nothing.
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.LastStats(); st.Added+st.Replaced+st.Deleted != 0 || st.Unchanged != 5 {
		t.Fatalf("resync stats %+v", st)
	}
	// An altered own route (new gateway, same protocol) is put back.
	n.MustRun(t, "ip", "route", "replace", "10.244.3.0/26", "via", "198.18.0.99", "dev", "eth0", "proto", "87")
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := ownRoutes(t, n)["10.244.3.0/26"]; g.Gw.String() != "198.18.0.13" {
		t.Fatalf("altered route not repaired: gw %s", g.Gw)
	}
	// Empty desired state removes every own route and nothing else.
	r.Set(nil)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ownRoutes(t, n); len(got) != 0 {
		t.Fatalf("own routes left: %v", keys(got))
	}
	if fr, _ := n.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: mustNet("10.244.9.0/24")}, netlink.RT_FILTER_DST); len(fr) != 1 {
		t.Fatal("foreign route removed")
	}
}

// TestKernelForeignConflict: a foreign route on a wanted destination is
// reported by name and kept; the other routes are programmed.
func TestKernelForeignConflict(t *testing.T) {
	n := node(t)
	r, _ := newKernelRec(t, n)
	n.AddRoute(t, "10.244.2.0/26", "via", "198.18.0.1", "proto", "static")
	r.Set([]model.Route{direct("10.244.2.0/26", "198.18.0.12", "eth0", false), blackhole("10.244.1.0/26")})
	err := r.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "add route 10.244.2.0/26 via 198.18.0.12") || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("want a conflict error naming 10.244.2.0/26, got %v", err)
	}
	if _, ok := ownRoutes(t, n)["10.244.1.0/26"]; !ok {
		t.Fatal("blackhole not programmed next to the conflict")
	}
	// Kernel error text comes through extended acks for bad gateways.
	r.Set([]model.Route{direct("10.244.3.0/26", "198.19.255.1", "eth0", false)})
	err = r.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.244.3.0/26") {
		t.Fatalf("unreachable gateway not reported: %v", err)
	}
	t.Logf("kernel says: %v", err)
}

// TestKernelBatchFailureInside: only the last message of a batch asks for
// an ack, so a failure inside a batch must still be reported against its
// own route, and the routes around it programmed.
func TestKernelBatchFailureInside(t *testing.T) {
	n := node(t)
	r, _ := newKernelRec(t, n)
	const total = 3*DefaultBatch + 5
	var want []model.Route
	for i := range total {
		want = append(want, blackhole(blockN(i)))
	}
	foreign := []int{7, DefaultBatch + 60, 2 * DefaultBatch} // inside, inside, first of a batch
	for _, i := range foreign {
		n.AddRoute(t, blockN(i), "via", "198.18.0.1", "proto", "static")
	}
	r.Set(want)
	err := r.Apply(context.Background())
	if err == nil {
		t.Fatal("no error for the foreign routes")
	}
	for _, i := range foreign {
		if !strings.Contains(err.Error(), " "+blockN(i)+":") {
			t.Errorf("error does not name %s: %v", blockN(i), err)
		}
	}
	if got := strings.Count(err.Error(), "file exists"); got != len(foreign) {
		t.Errorf("%d failures reported, want %d: %v", got, len(foreign), err)
	}
	if got := len(ownRoutes(t, n)); got != total-len(foreign) {
		t.Errorf("%d own routes programmed, want %d", got, total-len(foreign))
	}
}

// TestKernelDumpUnderChurn lists 20k own routes while another goroutine
// adds and deletes foreign routes: every listing must be complete, which
// needs the interrupted-dump retry.
func TestKernelDumpUnderChurn(t *testing.T) {
	n := node(t)
	r, k := newKernelRec(t, n)
	var want []model.Route
	for i := 0; i < 20000; i++ {
		want = append(want, tunnel(blockN(i), "10.244.255.1", "vxlan.calico", 0))
	}
	r.Set(want)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dummy := n.Link(t, "cali0123456789a")
		for i := 0; !stop.Load(); i++ {
			rt := &netlink.Route{Dst: mustNet(fmt.Sprintf("10.200.%d.0/24", i%200)), LinkIndex: dummy.Attrs().Index, Protocol: unix.RTPROT_STATIC}
			_ = n.NL.RouteAdd(rt)
			_ = n.NL.RouteDel(rt)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	for i := 0; i < 30; i++ {
		c := 0
		if err := k.List(MainTable, Protocol, func(KRoute) { c++ }); err != nil {
			t.Fatal(err)
		}
		if c != 20000 {
			t.Fatalf("listing %d saw %d routes, want 20000", i, c)
		}
	}
	t.Logf("30 listings under churn, %d interrupted dumps retried", k.Interrupts())
}

func blockN(i int) string {
	return netip.AddrFrom4([4]byte{10, byte(64 + i/1024), byte(i / 4 % 256), byte(i % 4 * 64)}).String() + "/26"
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func keys(m map[string]netlink.Route) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
