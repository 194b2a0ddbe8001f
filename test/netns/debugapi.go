//go:build linux

package nstest

// A wren-agent's debug API (wren.debug.v1, api/debug/v1) as the tests
// read it: one gRPC call per question over the agent's unix socket (its
// --socket, the one wren-cni uses), as wrenctl asks. A unix socket is
// reached by its path from any network namespace, so the tests dial it
// from the root namespace whatever namespace the agent runs in.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
)

// debugCall dials socket and makes one call with a deadline of timeout.
func debugCall[R any](socket string, timeout time.Duration, call func(context.Context, debugv1.DebugClient) (R, error)) (R, error) {
	var zero R
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return zero, fmt.Errorf("debug API at %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := call(ctx, debugv1.NewDebugClient(conn))
	if err != nil {
		return zero, fmt.Errorf("debug API at %s: %w", socket, err)
	}
	return r, nil
}

// DebugStatus asks the agent serving socket for its Status: the node and
// every BGP session with its prefix counts (wrenctl status). GoBGP makes
// the counts inside its management loop: poll it every 100 ms or slower
// where that loop's speed matters.
func DebugStatus(socket string, timeout time.Duration) (*debugv1.StatusReply, error) {
	return debugCall(socket, timeout, func(ctx context.Context, c debugv1.DebugClient) (*debugv1.StatusReply, error) {
		return c.Status(ctx, &debugv1.StatusRequest{})
	})
}

// DebugRoutes asks the agent serving socket for Routes: the best paths
// its speaker has learned (and those it holds), each with what the kernel
// has for it (wrenctl routes). It fails until the agent's first full run.
func DebugRoutes(socket string, timeout time.Duration) (*debugv1.RoutesReply, error) {
	return debugCall(socket, timeout, func(ctx context.Context, c debugv1.DebugClient) (*debugv1.RoutesReply, error) {
		return c.Routes(ctx, &debugv1.RoutesRequest{})
	})
}

// DebugPeer returns the session to addr in st, or an empty Peer and false
// when the speaker has none.
func DebugPeer(st *debugv1.StatusReply, addr string) (*debugv1.Peer, bool) {
	for _, p := range st.GetPeers() {
		if p.GetAddress() == addr {
			return p, true
		}
	}
	return &debugv1.Peer{}, false
}

// PeerSince is when p became established; zero when it is not.
func PeerSince(p *debugv1.Peer) time.Time {
	if p.GetSince() == nil {
		return time.Time{}
	}
	return p.GetSince().AsTime()
}

// AgentBGP is an agent's BGP state as its debug API shows it: Status and
// Routes, asked one after the other.
type AgentBGP struct {
	Status *debugv1.StatusReply
	Routes *debugv1.RoutesReply
	// Learned are the best paths the speaker has now, "prefix via next
	// hop", sorted: the routes whose Held is false. A held route is one
	// BGP no longer announces that the agent keeps in the kernel for a
	// while; it is not learned.
	Learned []string
}

// DebugBGP asks the agent serving socket for Status and Routes, each
// within timeout.
func DebugBGP(socket string, timeout time.Duration) (AgentBGP, error) {
	var v AgentBGP
	var err error
	if v.Status, err = DebugStatus(socket, timeout); err != nil {
		return v, err
	}
	if v.Routes, err = DebugRoutes(socket, timeout); err != nil {
		return v, err
	}
	for _, r := range v.Routes.GetRoutes() {
		if !r.GetHeld() && !r.GetRejected() {
			v.Learned = append(v.Learned, r.GetPrefix()+" via "+r.GetNextHop())
		}
	}
	slices.Sort(v.Learned)
	return v, nil
}

// Peer returns the session to addr, or an empty Peer and false.
func (v AgentBGP) Peer(addr string) (*debugv1.Peer, bool) { return DebugPeer(v.Status, addr) }

// HasLearned says whether the speaker has a best path for prefix.
func (v AgentBGP) HasLearned(prefix string) bool {
	return slices.ContainsFunc(v.Learned, func(l string) bool { return strings.HasPrefix(l, prefix+" ") })
}

// String is both replies as JSON, for a failed test's log.
func (v AgentBGP) String() string {
	o := protojson.MarshalOptions{Multiline: true}
	return "status: " + o.Format(v.Status) + "\nroutes: " + o.Format(v.Routes)
}
