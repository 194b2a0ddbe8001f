package routes

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/model"
)

// TestDelta: a delta writes only the routes it names, keeps foreign routes,
// and leaves the desired set so that the next full Apply changes nothing.
func TestDelta(t *testing.T) {
	f := newFake("eth0")
	seedForeign(f)
	r := newRec(t, f)
	ctx := context.Background()
	r.Set([]model.Route{blackhole("10.244.1.0/26"), direct("10.244.2.0/26", "198.18.0.12", "eth0", false)})
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	writes := f.writes
	err := r.Delta(ctx,
		[]model.Route{
			direct("10.244.3.0/26", "198.18.0.13", "eth0", false), // new
			direct("10.244.2.0/26", "198.18.0.14", "eth0", false), // changed
		},
		[]netip.Prefix{pfx("10.244.1.0/26"), pfx("10.244.8.0/26")}) // one ours, one unknown
	if err != nil {
		t.Fatal(err)
	}
	if got := f.writes - writes; got != 3 {
		t.Errorf("delta wrote %d routes, want 3", got)
	}
	want := mergeLines("ip route add 10.244.2.0/26 via 198.18.0.14 dev eth0 proto 87\n"+
		"ip route add 10.244.3.0/26 via 198.18.0.13 dev eth0 proto 87\n", foreignText)
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Fatalf("after the delta (-want +got)\n%s", diff)
	}
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.LastStats(); st.Added+st.Replaced+st.Deleted != 0 || st.Unchanged != 2 {
		t.Errorf("full Apply after the delta changed the kernel: %+v", st)
	}
}

// TestDeltaForeign: a new destination held by a foreign route is not
// overwritten; the failure names the route.
func TestDeltaForeign(t *testing.T) {
	f := newFake("eth0")
	seedForeign(f)
	r := newRec(t, f)
	err := r.Delta(context.Background(), []model.Route{direct("10.244.9.0/24", "198.18.0.13", "eth0", false)}, nil)
	if err == nil || !strings.Contains(err.Error(), "10.244.9.0/24") {
		t.Fatalf("delta over a foreign route: err = %v, want one naming 10.244.9.0/24", err)
	}
	if diff := cmp.Diff(mergeLines("", foreignText), f.String()); diff != "" {
		t.Fatalf("foreign route changed (-want +got)\n%s", diff)
	}
}

// TestAddNowPinned: an Apply whose desired set was built before a CNI ADD
// keeps the route AddNow wrote; once a Set includes it the pin is gone, and
// an unpinned route no Set wants is swept.
func TestAddNowPinned(t *testing.T) {
	f := newFake("eth0", "cali1", "cali2")
	r := newRec(t, f)
	ctx := context.Background()
	r.Set(nil) // the loop's set, from before the ADDs
	if err := r.AddNow(pod("10.244.1.5/32", "cali1"), 3); err != nil {
		t.Fatal(err)
	}
	if err := r.AddNow(pod("10.244.1.6/32", "cali2"), 4); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.LastStats(); st.Deleted != 0 {
		t.Fatalf("Apply with a stale set deleted %d pinned routes", st.Deleted)
	}
	r.Unpin(pfx("10.244.1.6/32"))                       // that ADD failed
	r.Set([]model.Route{pod("10.244.1.5/32", "cali1")}) // the loop saw the other
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	want := "ip route add 10.244.1.5/32 dev cali1 proto 87 scope link"
	if got := strings.TrimSpace(f.String()); got != want {
		t.Fatalf("kernel:\n%s\nwant\n%s", got, want)
	}
	r.Set(nil) // the pod is gone; its pin went with the Set that had it
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(f.String()); got != "" {
		t.Fatalf("kernel after the pod left:\n%s", got)
	}
}

// TestDeltaLinks: a delta uses the devices of the last Apply (no link dump
// per batch) and lists them again only for a device it does not know.
func TestDeltaLinks(t *testing.T) {
	f := newFake("eth0")
	r := newRec(t, f)
	ctx := context.Background()
	r.Set(nil)
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	lists := f.linkLists
	for i := range 3 {
		if err := r.Delta(ctx, []model.Route{direct(fmt.Sprintf("10.244.%d.0/26", i+1), "198.18.0.12", "eth0", false)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.linkLists - lists; n != 0 {
		t.Errorf("3 deltas through a known device listed the links %d times", n)
	}
	f.links["vxlan.calico"] = 9 // created after the last Apply
	if err := r.Delta(ctx, []model.Route{tunnel("10.244.9.0/26", "10.244.200.1", "vxlan.calico", 1450)}, nil); err != nil {
		t.Fatalf("delta through a new device: %v", err)
	}
	if n := f.linkLists - lists; n != 1 {
		t.Errorf("a delta through a new device listed the links %d times, want 1", n)
	}
	if !strings.Contains(f.String(), "10.244.9.0/26 via 10.244.200.1 dev vxlan.calico") {
		t.Errorf("route through the new device missing:\n%s", f.String())
	}
}
