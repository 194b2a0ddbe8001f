package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// apiCluster is a Cluster whose API server is down (or not) as the test
// says; every other method is left unimplemented and panics if called.
type apiCluster struct {
	Cluster
	since time.Time
	err   error
	down  bool
}

func (c *apiCluster) APIDown() (time.Time, error, bool) { return c.since, c.err, c.down }
func (c *apiCluster) APIServer() string                 { return "https://198.18.0.2:6443" }

// readyAgent passes ready() without a kernel or an API: its allocator is a
// zero value that would panic if a request got as far as IPAM.
func readyAgent(c Cluster) *Agent {
	a := &Agent{cfg: Config{NodeName: "node-1"}, cluster: c, log: slog.New(slog.DiscardHandler),
		pinned: map[string]model.Workload{}, released: map[string]time.Time{}, alloc: &ipam.Allocator{}, done: 1}
	a.self.IP = netip.MustParsePrefix("198.18.0.11/24")
	return a
}

// TestCNIWhileAPIDown: while the API server is known to be unreachable,
// ADD and DEL fail at once, before touching IPAM or the node, with "try
// again later" and a message that names the API server, since when and
// why, and what the node cannot do; nothing blames the agent.
func TestCNIWhileAPIDown(t *testing.T) {
	refused := fmt.Errorf("dial tcp 198.18.0.2:6443: connect: %w", syscall.ECONNREFUSED)
	since := time.Date(2026, 11, 30, 12, 1, 2, 0, time.Local)
	a := readyAgent(&apiCluster{since: since, err: refused, down: true})
	pod := cniserver.Pod{ContainerID: "0123456789abcdef", NetNS: "/var/run/netns/cni-x", IfName: "eth0", Namespace: "default", Name: "web-0"}
	const prefix = "the Kubernetes API server https://198.18.0.2:6443 is unreachable (since 12:01:02: dial tcp 198.18.0.2:6443: connect: connection refused); node-1 cannot "

	_, err := a.Add(context.Background(), cniserver.AddRequest{Pod: pod})
	want := prefix + "record the pod's address until it returns; the runtime will retry"
	if err == nil || err.Error() != want {
		t.Errorf("ADD: %v\nwant: %s", err, want)
	}
	if r := cniserver.ReasonOf(err); r != cniserver.ReasonAPIUnavailable {
		t.Errorf("ADD: reason %s; want %s", r, cniserver.ReasonAPIUnavailable)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("ADD: the cause is not in the chain: %v", err)
	}

	err = a.Del(context.Background(), cniserver.DelRequest{Pod: pod})
	want = prefix + "release the pod's address until it returns; the runtime will retry"
	if err == nil || err.Error() != want || cniserver.ReasonOf(err) != cniserver.ReasonAPIUnavailable {
		t.Errorf("DEL: %v (%s)\nwant: %s", err, cniserver.ReasonOf(err), want)
	}
}

// TestAPIError: an IPAM error that says the API server is unavailable is
// framed for the runtime (with the request's own cause when the server is
// not marked down, e.g. a 429); any other error is left to the caller.
func TestAPIError(t *testing.T) {
	a := readyAgent(&apiCluster{})
	if err := a.apiError(whatAdd, fmt.Errorf("allocate: %w", ipam.ErrConflict)); err != nil {
		t.Errorf("a conflict was framed as an API outage: %v", err)
	}
	if err := a.apiError(whatAdd, fmt.Errorf("allocate: %w", ipam.ErrExhausted)); err != nil {
		t.Errorf("exhaustion was framed as an API outage: %v", err)
	}
	err := a.apiError(whatDel, fmt.Errorf("update ipamblock x: %w: Too many requests, please try again later.", ipam.ErrUnavailable))
	want := "the Kubernetes API server https://198.18.0.2:6443 is not serving requests now (update ipamblock x: IPAM store unavailable: Too many requests, please try again later.); node-1 cannot release the pod's address until it does; the runtime will retry"
	if err == nil || err.Error() != want || cniserver.ReasonOf(err) != cniserver.ReasonAPIUnavailable {
		t.Errorf("429: %v\nwant: %s", err, want)
	}
}

// TestReleasedTTLWhileAPIDown: a DEL'd handle stays hidden while the API
// server is unreachable (the stale cache still shows the allocation), and
// its TTL counts from the server's return, not from the DEL.
func TestReleasedTTLWhileAPIDown(t *testing.T) {
	a := readyAgent(&apiCluster{})
	const h = "default/web-0/ctr"
	blocks := []ipam.Block{{CIDR: netip.MustParsePrefix("10.244.0.0/26"), Allocations: []ipam.Allocation{{Handle: h}}}}
	a.released[h] = time.Now().Add(-time.Hour)
	if got := a.pruneReleased(blocks, true); !got[h] {
		t.Fatalf("while the API is down a cached, DEL'd handle was forgotten after its TTL")
	}
	if got := a.pruneReleased(blocks, false); !got[h] {
		t.Fatalf("right after the API returned the handle was forgotten: its TTL did not start again")
	}
	a.released[h] = time.Now().Add(-2 * releasedTTL)
	if got := a.pruneReleased(blocks, false); got[h] {
		t.Errorf("a handle older than the TTL with the API up is still hidden")
	}
	a.released[h] = time.Now()
	if got := a.pruneReleased(nil, false); got[h] || len(a.released) != 0 {
		t.Errorf("a handle the cache no longer shows is still hidden")
	}
}

// choiceCluster answers PodChoice with a fixed error; the API server is up.
type choiceCluster struct {
	apiCluster
	err error
}

func (c *choiceCluster) PodChoice(context.Context, string, string) (ipam.Choice, error) {
	return ipam.Choice{}, c.err
}

// TestAddPodChoiceErrors: ADD reads the pod's choice before anything
// else. An annotation IPAM cannot meet goes to the runtime as it is
// (ReasonRefused, its message already names the pod and the annotation);
// a read that found the API server unavailable is "try again later"
// naming the server; any other read error names the pod. Nothing reaches
// IPAM or the node: the agent's allocator is a zero value that would
// panic.
func TestAddPodChoiceErrors(t *testing.T) {
	pod := cniserver.Pod{ContainerID: "0123456789abcdef", NetNS: "/var/run/netns/cni-x", IfName: "eth0", Namespace: "default", Name: "web-0"}
	refused := fmt.Errorf("%w: annotation wren.network/ipAddrs of pod default/web-0: \"10.244.1.7\" is not a JSON list of addresses", ipam.ErrRefused)
	for _, tt := range []struct {
		name   string
		err    error
		reason cniserver.Reason
		msg    string
	}{
		{"refused", refused, cniserver.ReasonRefused, refused.Error()},
		{"API unavailable", fmt.Errorf("get *v1.Pod default/web-0: %w: Too many requests", ipam.ErrUnavailable), cniserver.ReasonAPIUnavailable,
			"the Kubernetes API server https://198.18.0.2:6443 is not serving requests now (get *v1.Pod default/web-0: IPAM store unavailable: Too many requests); node-1 cannot record the pod's address until it does; the runtime will retry"},
		{"other", errors.New("get *v1.Pod default/web-0: boom"), cniserver.ReasonInternal,
			"pod default/web-0: read its IPAM annotations: get *v1.Pod default/web-0: boom"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := readyAgent(&choiceCluster{err: tt.err})
			_, err := a.Add(context.Background(), cniserver.AddRequest{Pod: pod})
			if err == nil || err.Error() != tt.msg || cniserver.ReasonOf(err) != tt.reason {
				t.Errorf("ADD: %v (%s)\nwant: %s (%s)", err, cniserver.ReasonOf(err), tt.msg, tt.reason)
			}
		})
	}
}
