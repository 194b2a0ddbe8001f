package routes

// The counters the agent's metrics read: repairs (a route Wren had in
// place that the kernel lost or that someone changed), write errors
// through Config.Observe, and the routes in place by kind (Programmed).
//
// Test addresses: nodes 198.18.0.0/24, pods 10.244.0.0/16 (a fake kernel).

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/model"
)

func TestRepairsAndProgrammed(t *testing.T) {
	f := newFake("eth0", "vxlan.calico", "cali0123456789a")
	seedForeign(f)
	var seen []Stats
	r, err := New(Config{Logger: quietLog, Observe: func(s Stats) { seen = append(seen, s) }}, f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := []model.Route{
		blackhole("10.244.1.0/26"),
		pod("10.244.1.5/32", "cali0123456789a"),
		tunnel("10.244.2.0/26", "10.244.2.0", "vxlan.calico", 1450),
		direct("10.244.3.0/26", "198.18.0.13", "eth0", false),
	}
	kinds := func(bh, pd, tun, dir int) map[model.RouteKind]int {
		return map[model.RouteKind]int{model.RouteBlackhole: bh, model.RoutePod: pd, model.RouteRemoteTunnel: tun, model.RouteRemoteDirect: dir}
	}
	// step applies (after do), then checks the last Apply's counters, what
	// Observe got (nothing when the Apply wrote nothing) and Programmed.
	step := func(name string, do func(), added, replaced, repaired, errs int, prog map[model.RouteKind]int) {
		t.Helper()
		do()
		n := len(seen)
		_ = r.Apply(ctx)
		st := r.LastStats()
		if st.Added != added || st.Replaced != replaced || st.Repaired != repaired || st.Errors != errs {
			t.Errorf("%s: added %d replaced %d repaired %d errors %d; want %d %d %d %d", name,
				st.Added, st.Replaced, st.Repaired, st.Errors, added, replaced, repaired, errs)
		}
		wrote := added+replaced+st.Deleted+errs > 0
		switch {
		case wrote && (len(seen) != n+1 || seen[n] != st):
			t.Errorf("%s: Observe got %v, want the Apply's %+v once", name, seen[n:], st)
		case !wrote && len(seen) != n:
			t.Errorf("%s: Observe called for an Apply that wrote nothing: %v", name, seen[n:])
		}
		if diff := cmp.Diff(prog, r.Programmed()); diff != "" {
			t.Errorf("%s: Programmed (-want +got)\n%s", name, diff)
		}
	}
	step("first apply: written, nothing repaired", func() { r.Set(want) }, 4, 0, 0, 0, kinds(1, 1, 1, 1))
	step("resync: nothing to do", func() {}, 0, 0, 0, 0, kinds(1, 1, 1, 1))
	step("pod route deleted by hand: repaired", func() {
		delete(f.routes, fkey{MainTable, pfx("10.244.1.5/32"), 0, 0})
	}, 1, 0, 1, 0, kinds(1, 1, 1, 1))
	step("remote route rewritten by someone else: repaired", func() {
		k := fkey{MainTable, pfx("10.244.3.0/26"), 0, 0}
		rt := f.routes[k]
		rt.Gw = ip("198.18.0.99")
		f.routes[k] = rt
	}, 0, 1, 1, 0, kinds(1, 1, 1, 1))
	step("desired gateway changes: replaced, not a repair", func() {
		want[3] = direct("10.244.3.0/26", "198.18.0.14", "eth0", false)
		r.Set(want)
	}, 0, 1, 0, 0, kinds(1, 1, 1, 1))
	step("pod's veth gone: held, not programmed", func() {
		delete(f.links, "cali0123456789a")
		delete(f.routes, fkey{MainTable, pfx("10.244.1.5/32"), 0, 0}) // the kernel drops it with the device
	}, 0, 0, 0, 0, kinds(1, 0, 1, 1))
	step("veth back: added, not a repair (it was not in place)", func() { f.links["cali0123456789a"] = 9 }, 1, 0, 0, 0, kinds(1, 1, 1, 1))
	step("a foreign route holds a new destination: a write error, not programmed", func() {
		r.Set(append(want, direct("10.244.9.0/24", "198.18.0.13", "eth0", false)))
	}, 1, 0, 0, 1, kinds(1, 1, 1, 1))

	// The fast lane: placed routes count, and a delta route deleted by
	// hand is a repair for the next Apply.
	r.Set(want)
	_ = r.Apply(ctx)
	n := len(seen)
	if err := r.Delta(ctx, []model.Route{direct("10.244.4.0/26", "198.18.0.14", "eth0", false)}, []netip.Prefix{pfx("10.244.2.0/26")}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n+1 || seen[n].Added != 1 || seen[n].Deleted != 1 || seen[n].Errors != 0 {
		t.Errorf("delta: Observe got %+v, want one call with 1 added, 1 deleted", seen[n:])
	}
	if diff := cmp.Diff(kinds(1, 1, 0, 2), r.Programmed()); diff != "" {
		t.Errorf("after the delta: Programmed (-want +got)\n%s", diff)
	}
	n = len(seen)
	if err := r.Delta(ctx, []model.Route{direct("10.244.9.0/24", "198.18.0.14", "eth0", false)}, nil); err == nil {
		t.Error("delta over a foreign route: no error")
	}
	if len(seen) != n+1 || seen[n].Errors != 1 {
		t.Errorf("failed delta: Observe got %+v, want one call with 1 error", seen[n:])
	}
	delete(f.routes, fkey{MainTable, pfx("10.244.4.0/26"), 0, 0})
	r.Set(append(want[:2:2], want[3], direct("10.244.4.0/26", "198.18.0.14", "eth0", false)))
	_ = r.Apply(ctx)
	if st := r.LastStats(); st.Added != 1 || st.Repaired != 1 {
		t.Errorf("a delta's route deleted by hand: added %d repaired %d, want 1 and 1", st.Added, st.Repaired)
	}
}
