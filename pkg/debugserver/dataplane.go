package debugserver

import (
	"context"
	"fmt"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/routes"
)

func (s *server) Routes(ctx context.Context, req *debugv1.RoutesRequest) (*debugv1.RoutesReply, error) {
	var within netip.Prefix
	if req.GetPrefix() != "" {
		p, err := netip.ParsePrefix(req.GetPrefix())
		if err != nil || !p.Addr().Is4() {
			return nil, status.Errorf(codes.InvalidArgument, "prefix %s: want an IPv4 prefix such as 10.244.0.0/16", clip(req.GetPrefix()))
		}
		within = p.Masked()
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := s.src.Routes(ctx, within)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &debugv1.RoutesReply{Routes: make([]*debugv1.Route, 0, len(v.Routes)), RejectedNotListed: uint64(v.RejectedNotListed)}
	for _, r := range v.Routes {
		out.Routes = append(out.Routes, &debugv1.Route{
			Prefix:       r.Prefix.String(),
			NextHop:      addr(r.NextHop),
			Peer:         addr(r.Peer),
			AsPathLength: uint32(r.ASPathLen),
			Programmed:   r.Programmed,
			Kernel:       r.Kernel,
			WhyNot:       r.WhyNot,
			Held:         r.Held,
			Rejected:     r.Rejected,
		})
	}
	return out, nil
}

func (s *server) KernelRoutes(ctx context.Context, _ *debugv1.KernelRoutesRequest) (*debugv1.KernelRoutesReply, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	krs, err := s.src.KernelRoutes(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &debugv1.KernelRoutesReply{Routes: make([]*debugv1.KernelRoute, 0, len(krs))}
	for _, k := range krs {
		typ := "unicast"
		if k.Route.Type == routes.TypeBlackhole {
			typ = "blackhole"
		}
		out.Routes = append(out.Routes, &debugv1.KernelRoute{
			Destination: k.Route.Dst.String(),
			Type:        typ,
			Gateway:     addr(k.Route.Gw),
			Device:      k.Device,
			Onlink:      k.Route.Flags&routes.FlagOnLink != 0,
			Mtu:         k.Route.MTU,
			Protocol:    uint32(k.Route.Protocol),
			Text:        k.Text(),
		})
	}
	return out, nil
}

func (s *server) Links(ctx context.Context, _ *debugv1.LinksRequest) (*debugv1.LinksReply, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ts, vs, err := s.src.Links(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &debugv1.LinksReply{}
	for _, t := range ts {
		out.Tunnels = append(out.Tunnels, &debugv1.Tunnel{Name: t.Name, Kind: t.Kind, Address: addr(t.Address),
			Mtu: uint32(t.MTU), VtepMac: t.MAC, Up: t.Up, Missing: t.Missing})
	}
	for _, v := range vs {
		out.Veths = append(out.Veths, &debugv1.Veth{Name: v.Name, Mtu: uint32(v.MTU), Up: v.Up, Pod: v.Pod,
			ContainerId: v.ContainerID, Ip: addr(v.IP), Missing: v.Missing})
	}
	return out, nil
}

func (s *server) Explain(ctx context.Context, req *debugv1.ExplainRequest) (*debugv1.ExplainReply, error) {
	ip, err := netip.ParseAddr(req.GetIp())
	if err != nil || !ip.Is4() {
		return nil, status.Errorf(codes.InvalidArgument, "ip %s: want an IPv4 address such as 10.244.1.5", clip(req.GetIp()))
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := s.src.Explain(ctx, ip)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &debugv1.ExplainReply{Ip: ip.String(), Pool: v.Pool, BlockNode: v.BlockNode, HostNode: v.HostNode, Pod: v.Pod,
		Ok: v.OK, Verdict: v.Verdict}
	if v.Block.IsValid() {
		out.Block = v.Block.String()
	}
	for _, f := range v.Findings {
		out.Findings = append(out.Findings, &debugv1.Finding{Source: f.Source, Says: f.Says, Ok: f.OK})
	}
	return out, nil
}

// clip quotes a request's argument for an error message, cut short: a
// bad request must not make the answer as big as itself.
func clip(s string) string {
	const most = 64
	if len(s) > most {
		return fmt.Sprintf("%q… (%d bytes)", s[:most], len(s))
	}
	return fmt.Sprintf("%q", s)
}
