// Package debugserver serves wren.debug.v1 (api/debug/v1) on the agent's
// unix socket, next to the CNI service: a thin layer that turns the
// agent's views into protobuf messages. Every call reads what the agent
// has already published (or asks the kernel or the BGP speaker directly);
// none waits for the agent's loop.
package debugserver

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/agent"
)

// Source is what the server reads: the agent.
type Source interface {
	Status(ctx context.Context) (agent.StatusView, error)
	Routes(ctx context.Context, within netip.Prefix) (agent.RoutesView, error)
	KernelRoutes(ctx context.Context) ([]agent.KernelRouteView, error)
	Links(ctx context.Context) ([]agent.TunnelView, []agent.VethView, error)
	Explain(ctx context.Context, ip netip.Addr) (agent.ExplainView, error)
	Blocks(ctx context.Context) (agent.BlocksView, error)
}

var _ Source = (*agent.Agent)(nil)

// callTimeout bounds one call's work inside the agent (GoBGP's counters
// walk each peer's table).
const callTimeout = 10 * time.Second

// Register adds the Debug service, backed by src, to s. version is the
// agent's build version, reported by Status.
func Register(s grpc.ServiceRegistrar, src Source, version string) {
	debugv1.RegisterDebugServer(s, &server{src: src, version: version})
}

type server struct {
	debugv1.UnimplementedDebugServer
	src     Source
	version string
}

func (s *server) Status(ctx context.Context, _ *debugv1.StatusRequest) (*debugv1.StatusReply, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := s.src.Status(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read the BGP speaker's sessions: %v", err)
	}
	r := &debugv1.StatusReply{
		Node:           v.Node,
		NodeIp:         addr(v.IP.Addr()),
		AsNumber:       v.AS,
		RouterId:       addr(v.RouterID),
		RouteReflector: v.RouteReflector,
		ClusterId:      addr(v.ClusterID),
		Ready:          v.NotReady == "",
		NotReady:       v.NotReady,
		Bgp:            v.BGP,
		LastSync:       ts(v.LastSync),
		LastSyncError:  v.LastSyncErr,
		Version:        s.version,
		Started:        ts(v.Started),
	}
	if v.IP.IsValid() {
		r.NodeCidr = v.IP.String()
	}
	now := time.Now()
	for _, p := range v.Peers {
		pp := &debugv1.Peer{
			Address:    addr(p.Address),
			AsNumber:   p.AS,
			Type:       p.Kind,
			Name:       p.Name,
			State:      p.State,
			Since:      ts(p.Since),
			Received:   p.Received,
			Accepted:   p.Accepted,
			Rejected:   p.Rejected,
			Advertised: p.Advertised,
			EndOfRib:   p.EndOfRIB,
			Flaps:      uint32(p.Flaps),
			LastDown:   p.LastDown,
		}
		if !p.Since.IsZero() && now.After(p.Since) {
			pp.UptimeSeconds = uint64(now.Sub(p.Since) / time.Second)
		}
		r.Peers = append(r.Peers, pp)
	}
	return r, nil
}

// addr is a's text form, "" for the zero Addr.
func addr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// ts is t as a Timestamp, nil for the zero time.
func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
