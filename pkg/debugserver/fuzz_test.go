package debugserver

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/agent"
)

// fakeSource answers every view with a little data; Explain and Routes
// echo their argument so a bad one that slipped through would show.
type fakeSource struct{}

func (fakeSource) Status(context.Context) (agent.StatusView, error) {
	return agent.StatusView{Node: "node-1", BGP: true, Peers: []agent.PeerView{{Address: netip.MustParseAddr("198.18.0.12"), State: "established"}}}, nil
}
func (fakeSource) Routes(_ context.Context, within netip.Prefix) (agent.RoutesView, error) {
	if within.IsValid() && !within.Addr().Is4() {
		panic("Routes got a non-IPv4 prefix")
	}
	return agent.RoutesView{Routes: []agent.RouteView{{Prefix: netip.MustParsePrefix("10.244.0.64/26")}}}, nil
}
func (fakeSource) KernelRoutes(context.Context) ([]agent.KernelRouteView, error) { return nil, nil }
func (fakeSource) Links(context.Context) ([]agent.TunnelView, []agent.VethView, error) {
	return nil, nil, nil
}
func (fakeSource) Explain(_ context.Context, ip netip.Addr) (agent.ExplainView, error) {
	if !ip.Is4() {
		panic("Explain got a non-IPv4 address")
	}
	return agent.ExplainView{IP: ip, OK: true, Verdict: "reachable"}, nil
}
func (fakeSource) Blocks(context.Context) (agent.BlocksView, error) { return agent.BlocksView{}, nil }

// FuzzRequests decodes arbitrary bytes as each request message, as the
// gRPC server would, and calls its handler: it must answer or return an
// InvalidArgument status, never panic. The test command (hack/test.sh)
// runs it with -fuzz for a bounded time; plain go test runs the seeds.
func FuzzRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&debugv1.RoutesRequest{Prefix: "10.244.0.0/16"}, &debugv1.RoutesRequest{Prefix: "::/0"},
		&debugv1.ExplainRequest{Ip: "10.244.0.5"}, &debugv1.ExplainRequest{Ip: "fe80::1%eth0"}, &debugv1.ExplainRequest{Ip: "10.244.0.5/32"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a length that runs past the end
	s := &server{src: fakeSource{}, version: "fuzz"}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) {
			if err != nil && status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%v", err)
			}
		}
		var rr debugv1.RoutesRequest
		if proto.Unmarshal(b, &rr) == nil {
			_, err := s.Routes(ctx, &rr)
			check(err)
		}
		var er debugv1.ExplainRequest
		if proto.Unmarshal(b, &er) == nil {
			_, err := s.Explain(ctx, &er)
			check(err)
		}
		for _, m := range []proto.Message{&debugv1.StatusRequest{}, &debugv1.KernelRoutesRequest{}, &debugv1.LinksRequest{}, &debugv1.BlocksRequest{}} {
			_ = proto.Unmarshal(b, m) // unknown fields are kept, never an error that matters
		}
		if _, err := s.Status(ctx, &debugv1.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOversizedRequest: a request over gRPC's 4 MiB limit is refused with
// ResourceExhausted, and the server keeps answering.
func TestOversizedRequest(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "wren.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	Register(srv, fakeSource{}, "test")
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := debugv1.NewDebugClient(conn)
	_, err = c.Explain(context.Background(), &debugv1.ExplainRequest{Ip: strings.Repeat("1", 5<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 5 MiB request: %v; want ResourceExhausted", err)
	}
	_, err = c.Explain(context.Background(), &debugv1.ExplainRequest{Ip: strings.Repeat("1", 1<<20)})
	if status.Code(err) != codes.InvalidArgument || len(status.Convert(err).Message()) > 200 {
		t.Errorf("a 1 MiB address: %.300v; want a short InvalidArgument", err)
	}
	r, err := c.Status(context.Background(), &debugv1.StatusRequest{})
	if err != nil || r.Node != "node-1" {
		t.Errorf("Status after the big requests: %v, %v", r, err)
	}
}
