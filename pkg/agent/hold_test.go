package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// learned builds routes learned from the peer at their next hop (as in
// a mesh); kernelRoutes the same without a peer (found at start).
func learned(specs ...string) []model.LearnedRoute {
	var out []model.LearnedRoute
	for i := 0; i < len(specs); i += 2 {
		out = append(out, model.LearnedRoute{Prefix: pfx(specs[i]), NextHop: addr(specs[i+1]), Peer: addr(specs[i+1])})
	}
	return out
}

func kernelRoutes(specs ...string) []model.LearnedRoute {
	out := learned(specs...)
	for i := range out {
		out[i].Peer = netip.Addr{}
	}
	return out
}

func lrText(rs []model.LearnedRoute) string { return fmt.Sprint(rs) }

// TestRouteHold: seeded kernel routes survive until the window ends or a
// learned path replaces them; a withdrawal inside a window is held, one
// outside goes at once.
func TestRouteHold(t *testing.T) {
	t0 := time.Unix(1000, 0)
	h := newRouteHold()
	h.Seed(kernelRoutes("10.244.2.0/26", "198.18.0.12", "10.244.3.0/26", "198.18.0.13"))
	h.Extend(t0.Add(30 * time.Second))

	// Start: BGP has nothing yet; both seeded routes stay.
	if got, want := lrText(h.Merge(t0, nil, nil, nil)), lrText(kernelRoutes("10.244.2.0/26", "198.18.0.12", "10.244.3.0/26", "198.18.0.13")); got != want {
		t.Fatalf("at start: %s, want %s", got, want)
	}
	// One comes back from BGP with a new next hop; the other is still held.
	if got, want := lrText(h.Merge(t0.Add(time.Second), learned("10.244.2.0/26", "198.18.0.22"), nil, nil)),
		lrText(append(learned("10.244.2.0/26", "198.18.0.22"), kernelRoutes("10.244.3.0/26", "198.18.0.13")...)); got != want {
		t.Fatalf("converging: %s, want %s", got, want)
	}
	// Window over (converged): the unannounced one goes.
	h.End()
	if got, want := lrText(h.Merge(t0.Add(2*time.Second), learned("10.244.2.0/26", "198.18.0.22"), nil, nil)), lrText(learned("10.244.2.0/26", "198.18.0.22")); got != want {
		t.Fatalf("after the window: %s, want %s", got, want)
	}
	// Outside a window a withdrawal is immediate.
	if got := h.Merge(t0.Add(3*time.Second), nil, nil, nil); len(got) != 0 {
		t.Fatalf("withdrawn outside a window: %v", got)
	}
	// Inside a reshaping window a withdrawal from a peer being reshaped is
	// held, until the window ends by time; one from any other peer (a
	// node that died) is not.
	h.Merge(t0.Add(4*time.Second), learned("10.244.4.0/26", "198.18.0.14", "10.244.5.0/26", "198.18.0.15"), nil, nil)
	h.Extend(t0.Add(10 * time.Second))
	reshaping := func(p netip.Addr) bool { return p == addr("198.18.0.14") }
	if got := h.Merge(t0.Add(5*time.Second), nil, reshaping, nil); lrText(got) != lrText(learned("10.244.4.0/26", "198.18.0.14")) {
		t.Fatalf("withdrawn inside a window: %v", got)
	}
	if got := h.Merge(t0.Add(10*time.Second), nil, reshaping, nil); len(got) != 0 {
		t.Fatalf("window expired, still held: %v", got)
	}
}

// TestRouteHoldVouched: outside a window, a withdrawn route the cluster
// still vouches for stays for lossHold, one it does not goes at once.
func TestRouteHoldVouched(t *testing.T) {
	t0 := time.Unix(1000, 0)
	h := newRouteHold()
	both := learned("10.244.2.0/26", "198.18.0.12", "10.244.5.0/26", "198.18.0.1")
	h.Merge(t0, both, nil, nil)
	vouched := func(r model.LearnedRoute) bool { return r.NextHop == addr("198.18.0.12") } // a node's confirmed block
	if got, want := lrText(h.Merge(t0.Add(time.Second), nil, nil, vouched)), lrText(learned("10.244.2.0/26", "198.18.0.12")); got != want {
		t.Fatalf("just withdrawn: %s, want %s", got, want)
	}
	if got := h.NextExpiry(t0.Add(time.Second)); !got.Equal(t0.Add(time.Second + lossHold)) {
		t.Errorf("next expiry %s, want %s", got, t0.Add(time.Second+lossHold))
	}
	// Announced again within lossHold: the clock restarts.
	h.Merge(t0.Add(5*time.Second), learned("10.244.2.0/26", "198.18.0.12"), nil, vouched)
	if got := h.Merge(t0.Add(6*time.Second), nil, nil, vouched); len(got) != 1 {
		t.Fatalf("withdrawn again: %v", got)
	}
	if got := h.Merge(t0.Add(6*time.Second+lossHold), nil, nil, vouched); len(got) != 0 {
		t.Fatalf("after lossHold: %v", got)
	}
}
