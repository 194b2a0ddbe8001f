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
)

// fakeAgent is the fast tier's stand-in for the agent behind the real
// debug server; the privileged tier (test/netns) runs real agents.
type fakeAgent struct {
	v agent.StatusView
	b agent.BlocksView
}

func (f fakeAgent) Status(context.Context) (agent.StatusView, error) { return f.v, nil }
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
	_, errOut, code = wrenctl(t, "-o", "xml", "status")
	if code != 2 || !strings.Contains(errOut, `-o "xml"`) {
		t.Errorf("bad -o: exit %d, %q", code, errOut)
	}
}
