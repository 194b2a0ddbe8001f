package debugserver

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/agent"
)

func (s *server) Blocks(ctx context.Context, _ *debugv1.BlocksRequest) (*debugv1.BlocksReply, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := s.src.Blocks(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read the IPAM blocks: %v", err)
	}
	pools := slices.Clone(v.Pools)
	slices.SortFunc(pools, func(a, b agent.PoolView) int { return strings.Compare(a.Name, b.Name) })
	blocks := slices.Clone(v.Blocks)
	// By address, then prefix length (netip.Prefix.Compare puts the
	// length first, which would split pools of different block sizes).
	slices.SortFunc(blocks, func(a, b agent.BlockView) int {
		return cmp.Or(a.CIDR.Addr().Compare(b.CIDR.Addr()), cmp.Compare(a.CIDR.Bits(), b.CIDR.Bits()))
	})
	r := &debugv1.BlocksReply{}
	for _, p := range pools {
		r.Pools = append(r.Pools, &debugv1.Pool{
			Name:        p.Name,
			Cidr:        pfx(p.CIDR),
			Mode:        p.Mode,
			Disabled:    p.Disabled,
			NatOutgoing: p.NATOutgoing,
			BlockSize:   uint32(p.BlockSize),
			Size:        p.Size,
			Blocks:      uint64(p.Blocks),
			Used:        p.Used,
			Free:        p.Free,
		})
	}
	for _, b := range blocks {
		bb := &debugv1.Block{
			Cidr:  pfx(b.CIDR),
			Pool:  b.Pool,
			Node:  b.Node,
			State: b.State,
			Used:  uint32(b.Used),
			Free:  uint32(b.Free),
		}
		als := slices.Clone(b.Allocations)
		slices.SortFunc(als, func(x, y agent.AllocationView) int { return x.IP.Compare(y.IP) })
		for _, al := range als {
			bb.Allocations = append(bb.Allocations, &debugv1.Allocation{
				Ip:       addr(al.IP),
				Handle:   al.Handle,
				Pod:      al.Pod,
				Node:     al.Node,
				Borrowed: al.Borrowed,
			})
		}
		r.Blocks = append(r.Blocks, bb)
	}
	return r, nil
}

// pfx is p's text form, "" for the zero Prefix.
func pfx(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
