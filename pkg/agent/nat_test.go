package agent

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/wren-net/wren/pkg/model"
)

// fakeNAT records what the loop sets.
type fakeNAT struct {
	n       model.NAT
	applied int
}

func (f *fakeNAT) Set(n model.NAT) { f.n = n }
func (f *fakeNAT) Apply(context.Context) error {
	f.applied++
	return nil
}

// TestLoopNAT: a full run hands the NAT reconciler every pool and the
// natOutgoing ones, and applies it; turning natOutgoing off leaves no
// pool to masquerade.
func TestLoopNAT(t *testing.T) {
	f := newFakeAgent(t)
	ctx := context.Background()
	f.cluster.pools[0].NATOutgoing = true
	f.cluster.pools = append(f.cluster.pools, model.Pool{Name: "plain", CIDR: netip.MustParsePrefix("10.245.0.0/16"), VXLAN: model.EncapNever, IPIP: model.EncapNever})
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	pools := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.245.0.0/16")}
	if !slices.Equal(f.nat.n.Masquerade, pools[:1]) || !slices.Equal(f.nat.n.Pools, pools) || f.nat.applied != 1 {
		t.Errorf("NAT set %+v, applied %d times; want masquerade %v of pools %v, applied once", f.nat.n, f.nat.applied, pools[:1], pools)
	}
	f.cluster.pools[0].NATOutgoing = false
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.nat.n.Masquerade) != 0 || !slices.Equal(f.nat.n.Pools, pools) || f.nat.applied != 2 {
		t.Errorf("natOutgoing off: NAT set %+v, applied %d times; want nothing masqueraded, applied again", f.nat.n, f.nat.applied)
	}
}
