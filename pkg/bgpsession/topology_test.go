package bgpsession

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/wren-net/wren/pkg/model"
)

func topoNode(name, ip string, rr netip.Addr) model.NodeInfo {
	n := model.NodeInfo{Node: model.Node{Name: name}, RouteReflector: rr.IsValid(), RRClusterID: rr}
	if ip != "" {
		n.IP = netip.MustParsePrefix(ip)
	}
	return n
}

// sessionLines renders sessions as "name addr as passive|active [client cid]".
func sessionLines(ss []model.BGPSession) string {
	var b strings.Builder
	for _, s := range ss {
		mode := "active"
		if s.Passive {
			mode = "passive"
		}
		fmt.Fprintf(&b, "%s %s:%d as%d %s", s.Name, s.Address, s.Port, s.AS, mode)
		if s.RRClient {
			fmt.Fprintf(&b, " client cluster-id %s", s.ClusterID)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestNodeSessions walks the mesh → route-reflector → mesh shapes SPEC.md
// describes, from each node's point of view.
func TestNodeSessions(t *testing.T) {
	rr := model.DefaultRRClusterID
	rrID := netip.MustParseAddr("10.0.0.9")
	none := netip.Addr{}
	a := topoNode("a", "198.18.0.11/24", none)
	b := topoNode("b", "198.18.0.12/24", none)
	c := topoNode("c", "198.18.1.13/24", none)
	unregistered := topoNode("new", "", none)
	cfg := MeshConfig{Enabled: true}
	cases := []struct {
		name  string
		self  model.NodeInfo
		nodes []model.NodeInfo
		cfg   MeshConfig
		want  string
	}{
		{name: "mesh from a: active to both (lower address)", self: a, nodes: []model.NodeInfo{a, b, c, unregistered}, cfg: cfg, want: `
mesh/b 198.18.0.12:0 as64512 active
mesh/c 198.18.1.13:0 as64512 active
`},
		{name: "mesh from b: passive towards a", self: b, nodes: []model.NodeInfo{c, a, b}, cfg: cfg, want: `
mesh/a 198.18.0.11:0 as64512 passive
mesh/c 198.18.1.13:0 as64512 active
`},
		{name: "c is RR; a peers with c only", self: a, nodes: []model.NodeInfo{a, b, topoNode("c", "198.18.1.13/24", rr)}, cfg: cfg, want: `
rr/c 198.18.1.13:0 as64512 active
`},
		{name: "c is RR; c serves a and b as clients with the default cluster ID", self: topoNode("c", "198.18.1.13/24", rr), nodes: []model.NodeInfo{a, b, topoNode("c", "198.18.1.13/24", rr)}, cfg: cfg, want: `
rr-client/a 198.18.0.11:0 as64512 passive client cluster-id 244.0.0.1
rr-client/b 198.18.0.12:0 as64512 passive client cluster-id 244.0.0.1
`},
		{name: "two RRs with a cluster ID: they peer as non-clients, serve c", self: topoNode("a", "198.18.0.11/24", rrID),
			nodes: []model.NodeInfo{topoNode("a", "198.18.0.11/24", rrID), topoNode("b", "198.18.0.12/24", rrID), c}, cfg: cfg, want: `
rr/b 198.18.0.12:0 as64512 active
rr-client/c 198.18.1.13:0 as64512 active client cluster-id 10.0.0.9
`},
		{name: "AS and port from the configuration and annotations", self: a,
			nodes: []model.NodeInfo{a, {Node: b.Node, AS: 65010}}, cfg: MeshConfig{Enabled: true, AS: 64600, Port: 1179}, want: `
mesh/b 198.18.0.12:1179 as65010 active
`},
		{name: "mesh disabled", self: a, nodes: []model.NodeInfo{a, b, c}, cfg: MeshConfig{}, want: ``},
		{name: "self not registered", self: unregistered, nodes: []model.NodeInfo{a, b, unregistered}, cfg: cfg, want: ``},
		{name: "an RR without an address does not switch the cluster to RR mode", self: a,
			nodes: []model.NodeInfo{a, b, topoNode("rr", "", rr)}, cfg: cfg, want: `
mesh/b 198.18.0.12:0 as64512 active
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sessionLines(NodeSessions(tc.self, tc.nodes, tc.cfg))
			if want := strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("got:\n%swant:\n%s", got, want)
			}
		})
	}
}
