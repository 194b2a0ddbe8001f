package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/debugserver"
	"github.com/wren-net/wren/pkg/routes"
)

// fakeAgent is the fast tier's stand-in for the agent behind the real
// debug server; the privileged tier (test/netns) runs real agents.
type fakeAgent struct {
	v       agent.StatusView
	routes  []agent.RouteView
	kernel  []agent.KernelRouteView
	tunnels []agent.TunnelView
	veths   []agent.VethView
	explain map[netip.Addr]agent.ExplainView
	b       agent.BlocksView

	rejectedNotListed int
}

func (f fakeAgent) Status(context.Context) (agent.StatusView, error) { return f.v, nil }
func (f fakeAgent) Routes(_ context.Context, within netip.Prefix) (agent.RoutesView, error) {
	var out agent.RoutesView
	for _, r := range f.routes {
		if !within.IsValid() || within.Overlaps(r.Prefix) && within.Bits() <= r.Prefix.Bits() {
			out.Routes = append(out.Routes, r)
		}
	}
	if !within.IsValid() {
		out.RejectedNotListed = f.rejectedNotListed
	}
	return out, nil
}
func (f fakeAgent) KernelRoutes(context.Context) ([]agent.KernelRouteView, error) {
	return f.kernel, nil
}
func (f fakeAgent) Explain(_ context.Context, ip netip.Addr) (agent.ExplainView, error) {
	return f.explain[ip], nil
}
func (f fakeAgent) Links(context.Context) ([]agent.TunnelView, []agent.VethView, error) {
	return f.tunnels, f.veths, nil
}
func (f fakeAgent) Blocks(context.Context) (agent.BlocksView, error) { return f.b, nil }

func serve(t *testing.T, src debugserver.Source) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "wren.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	debugserver.Register(s, src, "v-test")
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return sock
}

func wrenctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

var since = time.Now().Add(-90 * time.Second).Truncate(time.Second)

func meshNode() agent.StatusView {
	return agent.StatusView{
		Node: "node-1", IP: netip.MustParsePrefix("198.18.0.11/24"), AS: 64512, RouterID: netip.MustParseAddr("198.18.0.11"),
		BGP: true, LastSync: time.Now(), Started: since,
		Peers: []agent.PeerView{
			{Address: netip.MustParseAddr("198.18.0.13"), AS: 64512, Kind: "mesh", Name: "node-3", State: "active", LastDown: "hold timer expired", Flaps: 2},
			{Address: netip.MustParseAddr("198.18.0.12"), AS: 64512, Kind: "mesh", Name: "node-2", State: "established", Since: since,
				Received: 3, Accepted: 2, Rejected: 1, Advertised: 1, EndOfRIB: true},
		},
	}
}

// TestStatusTable: the table has calicoctl's columns plus the prefix
// counts, peers sorted by address; wide adds the rest.
func TestStatusTable(t *testing.T) {
	// The uptime column counts from since: set it now, not when the
	// package's tests started (others, which build binaries, run first).
	since = time.Now().Add(-90 * time.Second).Truncate(time.Second)
	sock := serve(t, fakeAgent{v: meshNode()})
	out, errOut, code := wrenctl(t, "--socket", sock, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"wren-agent v-test on node node-1 is running: ready",
		"Node address 198.18.0.11/24, AS 64512, router ID 198.18.0.11.",
		"| PEER ADDRESS | PEER TYPE |  NAME  | STATE |  SINCE   | ACCEPTED | REJECTED | ADVERTISED |",
		"| 198.18.0.12  | mesh      | node-2 | up    | " + since.Local().Format("15:04:05") + " |        2 |        1 |          1 | Established",
		"| 198.18.0.13  | mesh      | node-3 | down  | -        |        0 |        0 |          0 | active: last down: hold timer expired |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "198.18.0.12") > strings.Index(out, "198.18.0.13") {
		t.Errorf("peers not sorted by address:\n%s", out)
	}
	out, _, _ = wrenctl(t, "--socket", sock, "-o", "wide", "peers")
	for _, want := range []string{"END-OF-RIB", "| 64512 |        3 | yes        | 1m3", "|     2 | hold timer expired |"} {
		if !strings.Contains(out, want) {
			t.Errorf("peers -o wide lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusJSONRoundTrip: -o json and -o yaml parse back into the same
// message.
func TestStatusJSONRoundTrip(t *testing.T) {
	sock := serve(t, fakeAgent{v: meshNode()})
	var fromJSON, fromYAML debugv1.StatusReply
	out, errOut, code := wrenctl(t, "--socket", sock, "-o", "json", "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if err := protojson.Unmarshal([]byte(out), &fromJSON); err != nil {
		t.Fatalf("-o json does not parse: %v\n%s", err, out)
	}
	if len(fromJSON.Peers) != 2 || fromJSON.Peers[0].Address != "198.18.0.12" || fromJSON.Peers[0].Accepted != 2 || !fromJSON.Peers[0].Since.AsTime().Equal(since) {
		t.Errorf("-o json: %v", &fromJSON)
	}
	out, _, _ = wrenctl(t, "--socket", sock, "-o", "yaml", "status")
	j, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatalf("-o yaml does not parse: %v\n%s", err, out)
	}
	if err := protojson.Unmarshal(j, &fromYAML); err != nil {
		t.Fatalf("-o yaml is not the message: %v\n%s", err, out)
	}
	if !proto.Equal(&fromJSON, &fromYAML) {
		t.Errorf("json and yaml differ:\n%v\n%v", &fromJSON, &fromYAML)
	}
}

// TestUnreachableAgent: the error names the socket and what to do.
func TestUnreachableAgent(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := wrenctl(t, "--socket", filepath.Join(dir, "none.sock"), "status")
	if code != 1 || !strings.Contains(errOut, "no agent socket at "+filepath.Join(dir, "none.sock")) || !strings.Contains(errOut, "kubectl exec") {
		t.Errorf("missing socket: exit %d, %q", code, errOut)
	}
	// A socket file nobody listens on (an agent that died).
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, errOut, code = wrenctl(t, "--socket", stale, "status")
	if code != 1 || !strings.Contains(errOut, "nothing listens on "+stale) {
		t.Errorf("stale socket: exit %d, %q", code, errOut)
	}
	out, errOut, code := wrenctl(t, "--socket", filepath.Join(dir, "none.sock"), "version")
	if code != 1 || out != "wrenctl dev\n" || !strings.Contains(errOut, "no agent socket") {
		t.Errorf("version without an agent: exit %d, %q, %q", code, out, errOut)
	}
	_, errOut, code = wrenctl(t, "-o", "xml", "status")
	if code != 2 || !strings.Contains(errOut, `-o "xml"`) {
		t.Errorf("bad -o: exit %d, %q", code, errOut)
	}
}

func dataplaneNode() fakeAgent {
	kr := func(s string) routes.KRoute {
		p := netip.MustParsePrefix(s)
		return routes.KRoute{Dst: p, Gw: netip.MustParseAddr("198.18.0.12"), Oif: 2, Protocol: routes.Protocol, Type: routes.TypeUnicast}
	}
	return fakeAgent{
		v: meshNode(),
		routes: []agent.RouteView{
			{Prefix: netip.MustParsePrefix("10.244.0.64/26"), NextHop: netip.MustParseAddr("198.18.0.12"), Peer: netip.MustParseAddr("198.18.0.12"),
				Programmed: true, Kernel: "10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren"},
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), NextHop: netip.MustParseAddr("198.18.0.1"), Peer: netip.MustParseAddr("198.18.0.1"),
				ASPathLen: 1, WhyNot: "outside every IPPool"},
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Peer: netip.MustParseAddr("198.18.0.1"), Rejected: true,
				WhyNot: "rejected by the import policy: outside every IPPool"},
		},
		rejectedNotListed: 7,
		kernel: []agent.KernelRouteView{
			{Route: routes.KRoute{Dst: netip.MustParsePrefix("10.244.0.0/26"), Type: routes.TypeBlackhole, Protocol: routes.Protocol}},
			{Route: kr("10.244.0.64/26"), Device: "eth0"},
		},
		tunnels: []agent.TunnelView{{Name: "vxlan.calico", Kind: "vxlan", Address: netip.MustParseAddr("10.244.0.3"), MTU: 1450, MAC: "66:0b:9b:3c:5d:1e", Up: true}},
		veths: []agent.VethView{
			{Name: "cali459e1deae92", MTU: 1450, Up: true, Pod: "default/web-1", ContainerID: "ctr-1", IP: netip.MustParseAddr("10.244.0.1")},
			{Name: "cali0000000000", Pod: "default/web-2", IP: netip.MustParseAddr("10.244.0.2"), Missing: true},
		},
	}
}

// TestRoutesKernelRoutesLinks: the three dataplane commands' tables, the
// prefix filter of routes, and a usage error for a bad prefix.
func TestRoutesKernelRoutesLinks(t *testing.T) {
	sock := serve(t, dataplaneNode())
	out, errOut, code := wrenctl(t, "--socket", sock, "routes")
	if code != 0 {
		t.Fatalf("routes: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"| 10.244.0.64/26 | 198.18.0.12 | 198.18.0.12 | yes       | -                                                   |",
		"| 192.0.2.0/24   | 198.18.0.1  | 198.18.0.1  | no        | outside every IPPool                                |",
		"| 203.0.113.0/24 | -           | 198.18.0.1  | no        | rejected by the import policy: outside every IPPool |",
		"7 more paths rejected by the import policy are not listed (wrenctl routes PREFIX narrows the list).",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("routes lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = wrenctl(t, "--socket", sock, "routes", "10.244.0.0/16")
	if strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, "10.244.0.64/26") {
		t.Errorf("routes 10.244.0.0/16 does not filter:\n%s", out)
	}
	if _, errOut, code := wrenctl(t, "--socket", sock, "routes", "ten"); code != 2 || !strings.Contains(errOut, `"ten": want a prefix`) {
		t.Errorf("routes ten: exit %d, %q", code, errOut)
	}
	out, _, _ = wrenctl(t, "--socket", sock, "kernel-routes")
	if want := "blackhole 10.244.0.0/26 proto wren\n10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren\n"; out != want {
		t.Errorf("kernel-routes:\n%s\nwant:\n%s", out, want)
	}
	out, _, _ = wrenctl(t, "--socket", sock, "links")
	for _, want := range []string{
		"| vxlan.calico | vxlan | 10.244.0.3 | 1450 | 66:0b:9b:3c:5d:1e | up    |",
		"| cali459e1deae92 | default/web-1 | 10.244.0.1 | 1450 | up      |",
		"| cali0000000000  | default/web-2 | 10.244.0.2 |    - | MISSING |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("links lacks %q:\n%s", want, out)
		}
	}
	var lr debugv1.LinksReply
	out, _, _ = wrenctl(t, "--socket", sock, "-o", "json", "links")
	if err := protojson.Unmarshal([]byte(out), &lr); err != nil || len(lr.Veths) != 2 || !lr.Veths[1].Missing {
		t.Errorf("links -o json: %v %v\n%s", err, &lr, out)
	}
}

// TestExplain: the findings one per line, the verdict last, exit 1 when
// something is wrong, and a usage error for a bad address.
func TestExplain(t *testing.T) {
	good, bad := netip.MustParseAddr("10.244.0.65"), netip.MustParseAddr("10.244.0.66")
	f := fakeAgent{v: meshNode(), explain: map[netip.Addr]agent.ExplainView{
		good: {IP: good, Pool: "default", Block: netip.MustParsePrefix("10.244.0.64/26"), BlockNode: "node-2", HostNode: "node-2", Pod: "default/web-2",
			Findings: []agent.Finding{{Source: "ipam", Says: "allocated", OK: true}, {Source: "kernel", Says: "10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren", OK: true}},
			OK:       true, Verdict: "reachable via 10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren (pod default/web-2 on node node-2)"},
		bad: {IP: bad, Pool: "default", Findings: []agent.Finding{{Source: "kernel", Says: "no route", OK: false}}, Verdict: "the kernel has no route"},
	}}
	sock := serve(t, f)
	out, errOut, code := wrenctl(t, "--socket", sock, "explain", "10.244.0.65")
	want := `10.244.0.65
  pool:       default
  block:      10.244.0.64/26
  block node: node-2
  host node:  node-2
  pod:        default/web-2
  [ok] ipam   allocated
  [ok] kernel 10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren
=> reachable via 10.244.0.64/26 via 198.18.0.12 dev eth0 proto wren (pod default/web-2 on node node-2)
`
	if code != 0 || out != want {
		t.Errorf("explain: exit %d (%s):\n%s\nwant:\n%s", code, errOut, out, want)
	}
	out, errOut, code = wrenctl(t, "--socket", sock, "explain", "10.244.0.66")
	if code != 1 || !strings.Contains(out, "  [!!] kernel no route\n=> the kernel has no route\n") || errOut != "" {
		t.Errorf("explain of a broken address: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := wrenctl(t, "--socket", sock, "explain", "fe80::1"); code != 2 || !strings.Contains(errOut, "want an IPv4 address") {
		t.Errorf("explain fe80::1: exit %d, %q", code, errOut)
	}
}
