package bgpspeaker

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestImportPolicy: B's import policy accepts only prefixes inside its
// pools and rejects the default route, a node /32, a prefix outside the
// pools and B's own block (but not a /32 borrowed from it), while A sends
// all of them; B counts the rejections; B's own advertisements still go
// out under its policy; a policy change is applied to what was already
// received without resetting the session.
func TestImportPolicy(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	pool := netip.MustParsePrefix("10.244.0.0/16")
	ownB := netip.MustParsePrefix("10.244.3.0/26")
	good := netip.MustParsePrefix("10.244.1.0/26")
	borrowed := netip.MustParsePrefix("10.244.3.7/32") // borrowed from B's block by A: accepted
	sent := []netip.Prefix{
		good, borrowed,
		netip.MustParsePrefix("0.0.0.0/0"),       // default route
		netip.MustParsePrefix("198.18.0.12/32"),  // a node address
		netip.MustParsePrefix("192.168.50.0/24"), // outside every pool
		ownB,                                     // B's own block
	}
	for _, s := range []*Speaker{p.a, p.b} {
		if err := s.SetPolicy(ctx, Policy{Accept: []netip.Prefix{pool}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.b.SetPolicy(ctx, Policy{Accept: []netip.Prefix{pool}, Reject: []netip.Prefix{ownB, netip.MustParsePrefix("198.18.0.0/15")}}); err != nil {
		t.Fatal(err)
	}
	before, _ := peerStatus(t, p.b, addrA)
	if err := p.a.SetAdvertisements(ctx, sent, nodeA); err != nil {
		t.Fatal(err)
	}
	if err := p.b.SetAdvertisements(ctx, []netip.Prefix{ownB}, nodeB); err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]Route{good: {Prefix: good, NextHop: nodeA, PeerAddr: addrA}, borrowed: {Prefix: borrowed, NextHop: nodeA, PeerAddr: addrA}}
	poll(t, 10*time.Second, "B accepts only the pool prefix", func() string {
		st, _ := peerStatus(t, p.b, addrA)
		if st.Received != uint64(len(sent)) {
			return fmt.Sprintf("B received %d of %d", st.Received, len(sent))
		}
		return cmp.Diff(want, p.b.Learned(), netipCmp)
	})
	rej, err := p.b.Rejected(ctx)
	if err != nil || rej[addrA] != len(sent)-2 {
		t.Errorf("B counts %d rejected from A (err %v), want %d", rej[addrA], err, len(sent)-2)
	}
	// B's own paths pass B's export policy and A's import policy.
	other := netip.MustParsePrefix("10.244.9.0/26")
	if err := p.b.SetAdvertisements(ctx, []netip.Prefix{ownB, other}, nodeB); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "A learns B's block", func() string {
		if r, ok := p.a.Learned()[other]; !ok || r.NextHop != nodeB {
			return fmt.Sprintf("A has %v", p.a.Learned())
		}
		return ""
	})

	// Widen B's policy: the prefix outside the pool now passes,
	// re-evaluated from what B already holds, on the same session.
	outside := netip.MustParsePrefix("192.168.50.0/24")
	widened := Policy{Accept: []netip.Prefix{pool, outside}, Reject: []netip.Prefix{ownB}}
	if err := p.b.SetPolicy(ctx, widened); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "B re-evaluates under the new policy", func() string {
		if r, ok := p.b.Learned()[outside]; !ok || r.NextHop != nodeA {
			return fmt.Sprintf("B has %v", p.b.Learned())
		}
		return ""
	})
	after, _ := peerStatus(t, p.b, addrA)
	if !after.Since.Equal(before.Since) {
		t.Errorf("policy change reset the session (since %s -> %s)", before.Since, after.Since)
	}
	// The same policy again is a no-op.
	gen := p.b.policyGen
	if err := p.b.SetPolicy(ctx, widened); err != nil || p.b.policyGen != gen {
		t.Errorf("same policy again: err %v, generation %d -> %d", err, gen, p.b.policyGen)
	}
}
