package bgpsession

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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

// TestExplicitSessionsCalicoMeaning: BGPPeer fields with Calico's meaning,
// from each node's point of view: nodeSelector/node pick the local side,
// peerSelector the remote nodes, and a selected node peers back.
func TestExplicitSessionsCalicoMeaning(t *testing.T) {
	rr := model.DefaultRRClusterID
	none := netip.Addr{}
	label := func(n model.NodeInfo, kv ...string) model.NodeInfo {
		n.Labels = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
		return n
	}
	a := label(topoNode("a", "198.18.0.11/24", none), "rack", "r1")
	b := label(topoNode("b", "198.18.0.12/24", none), "rack", "r2")
	c := label(topoNode("c", "198.18.1.13/24", rr), "rack", "r1", "wren.network/route-reflector", "true")
	nodes := []model.NodeInfo{a, b, c}
	toRR := model.BGPPeer{Name: "peer-with-route-reflectors", NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'"}
	racks := model.BGPPeer{Name: "r1-to-r2", NodeSelector: "rack == 'r1'", PeerSelector: "rack == 'r2'", Keepalive: 7 * time.Second}
	tor := model.BGPPeer{Name: "tor", IP: netip.MustParseAddr("198.18.0.1"), AS: 65001, NodeSelector: "rack == 'r2'"}
	viaIP := model.BGPPeer{Name: "to-c-by-ip", IP: netip.MustParseAddr("198.18.1.13"), AS: 64512, Node: "a"}
	cases := []struct {
		name  string
		self  model.NodeInfo
		peers []model.BGPPeer
		want  string
	}{
		{name: "plain node: the reflector its peerSelector picks", self: a, peers: []model.BGPPeer{toRR}, want: `
bgppeer/peer-with-route-reflectors/c 198.18.1.13:0 as64512 active
`},
		{name: "the reflector peers back with every node of nodeSelector, as its clients", self: c, peers: []model.BGPPeer{toRR}, want: `
bgppeer/peer-with-route-reflectors/a 198.18.0.11:0 as64512 passive client cluster-id 244.0.0.1
bgppeer/peer-with-route-reflectors/b 198.18.0.12:0 as64512 passive client cluster-id 244.0.0.1
`},
		{name: "rack r1 to rack r2 from r1's a", self: a, peers: []model.BGPPeer{racks}, want: `
bgppeer/r1-to-r2/b 198.18.0.12:0 as64512 active
`},
		{name: "rack r2's b peers back with r1's a and c", self: b, peers: []model.BGPPeer{racks}, want: `
bgppeer/r1-to-r2/a 198.18.0.11:0 as64512 passive
bgppeer/r1-to-r2/c 198.18.1.13:0 as64512 active
`},
		{name: "a router by peerIP for rack r2 only", self: b, peers: []model.BGPPeer{tor}, want: `
bgppeer/tor 198.18.0.1:0 as65001 active
`},
		{name: "not for rack r1", self: a, peers: []model.BGPPeer{tor}, want: ``},
		{name: "a peerIP naming a node is a node session", self: a, peers: []model.BGPPeer{viaIP}, want: `
bgppeer/to-c-by-ip/c 198.18.1.13:0 as64512 active
`},
		{name: "and that node peers back", self: c, peers: []model.BGPPeer{viaIP}, want: `
bgppeer/to-c-by-ip/a 198.18.0.11:0 as64512 passive client cluster-id 244.0.0.1
`},
		{name: "the first BGPPeer for an address wins", self: a, peers: []model.BGPPeer{toRR, viaIP}, want: `
bgppeer/peer-with-route-reflectors/c 198.18.1.13:0 as64512 active
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			warn := func(kind, name, reason, message string) {
				t.Errorf("unexpected warning %s %s %s: %s", kind, name, reason, message)
			}
			got := sessionLines(ExplicitSessions(tc.self, nodes, tc.peers, MeshConfig{}, warn))
			if want := strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("got:\n%swant:\n%s", got, want)
			}
		})
	}

	t.Run("a selector that does not parse is reported and gives nothing", func(t *testing.T) {
		var warned []string
		bad := model.BGPPeer{Name: "typo", PeerSelector: "route-reflector == "}
		got := ExplicitSessions(a, nodes, []model.BGPPeer{bad}, MeshConfig{}, func(kind, name, reason, message string) {
			warned = append(warned, kind+"/"+name+" "+reason)
		})
		if len(got) != 0 || !slices.Equal(warned, []string{"BGPPeer/typo InvalidPeerSelector"}) {
			t.Errorf("sessions %v, warnings %v; want none and one InvalidPeerSelector", got, warned)
		}
	})
}

// TestCalicoRouteReflectorGuide: the sessions of Calico's route-reflector
// guide (a labelled reflector, a peerSelector BGPPeer to it, the mesh off)
// are exactly the speaker configurations of the label-driven topology on
// every node, so switching from one to the other changes nothing on the
// wire; sourceAddress None leaves the local address to the kernel.
func TestCalicoRouteReflectorGuide(t *testing.T) {
	rr := model.DefaultRRClusterID
	none := netip.Addr{}
	withRR := func(n model.NodeInfo) model.NodeInfo {
		n.Labels = map[string]string{"wren.network/route-reflector": "true"}
		return n
	}
	nodes := []model.NodeInfo{topoNode("a", "198.18.0.11/24", none), topoNode("b", "198.18.0.12/24", none), withRR(topoNode("c", "198.18.1.13/24", rr))}
	guide := model.BGPPeer{Name: "peer-with-route-reflectors", NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'"}
	peersOf := func(ws []Want) []string {
		var out []string
		for _, w := range ws {
			out = append(out, fmt.Sprintf("%+v", w.Peer))
		}
		return out
	}
	noWarn := func(kind, name, reason, message string) {
		t.Errorf("unexpected warning %s %s %s: %s", kind, name, reason, message)
	}
	for _, self := range nodes {
		local := self.IP.Addr()
		label := Wants(self, nodes, nil, model.BGPConfig{MeshEnabled: true, ListenPort: 179}, local, noWarn)
		both := Wants(self, nodes, []model.BGPPeer{guide}, model.BGPConfig{MeshEnabled: true, ListenPort: 179}, local, noWarn)
		guided := Wants(self, nodes, []model.BGPPeer{guide}, model.BGPConfig{MeshEnabled: false, ListenPort: 179}, local, noWarn)
		if len(label) == 0 {
			t.Fatalf("%s: no sessions from the label", self.Name)
		}
		if d := cmp.Diff(peersOf(label), peersOf(guided)); d != "" {
			t.Errorf("%s: label-driven vs Calico's guide (-label +guide):\n%s", self.Name, d)
		}
		if d := cmp.Diff(peersOf(label), peersOf(both)); d != "" {
			t.Errorf("%s: label-driven vs both (-label +both):\n%s", self.Name, d)
		}
		if off := Wants(self, nodes, nil, model.BGPConfig{MeshEnabled: false, ListenPort: 179}, local, noWarn); len(off) != 0 {
			t.Errorf("%s: mesh off without BGPPeers still wants %v", self.Name, peersOf(off))
		}
	}
	kernel := guide
	kernel.KernelSource = true
	ws := Wants(nodes[0], nodes, []model.BGPPeer{kernel}, model.BGPConfig{ListenPort: 179}, nodes[0].IP.Addr(), noWarn)
	if len(ws) != 1 || ws[0].Peer.LocalAddress.IsValid() {
		t.Errorf("sourceAddress None: want one session without a local address, got %v", peersOf(ws))
	}
	ws = Wants(nodes[0], nodes, []model.BGPPeer{guide}, model.BGPConfig{ListenPort: 179}, nodes[0].IP.Addr(), noWarn)
	if len(ws) != 1 || ws[0].Peer.LocalAddress != nodes[0].IP.Addr() {
		t.Errorf("sourceAddress UseNodeIP: want the node IP as local address, got %v", peersOf(ws))
	}
}
