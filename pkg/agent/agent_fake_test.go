package agent

// The fake tier of the whole loop: a fake cluster, a fake kernel under the
// real route reconciler, fake tunnel and veth reconcilers that record what
// they are given, and a fake BGP speaker, driven through a table of cluster
// and BGP states in order. After each step the kernel's routes, the
// tunnels, the workloads, the advertisements and the speaker's peers are
// rendered as text and compared with the expected text. No root, no
// sockets; time is testing/synctest's.
//
// Addresses: node-1 (this node) 198.18.0.11/24, node-2 .12, node-3 .13, a
// top-of-rack router .1; pool 10.244.0.0/16 with /26 blocks.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/registrar"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/runner"
)

// fakeCluster serves fixed objects; the steps edit them.
type fakeCluster struct {
	nodes  []model.NodeInfo
	pools  []model.Pool
	blocks []ipam.Block
	peers  []model.BGPPeer
	cfg    model.BGPConfig
	warned []string
	// reserved are the IPReservations' networks.
	reserved []ipam.Reservation
}

func (c *fakeCluster) Start(context.Context, func()) error                            { return nil }
func (c *fakeCluster) Nodes() ([]model.NodeInfo, error)                               { return c.nodes, nil }
func (c *fakeCluster) Pools() ([]model.Pool, error)                                   { return c.pools, nil }
func (c *fakeCluster) Blocks() ([]ipam.Block, error)                                  { return c.blocks, nil }
func (c *fakeCluster) BGPPeers() ([]model.BGPPeer, error)                             { return c.peers, nil }
func (c *fakeCluster) BGPConfig() (model.BGPConfig, error)                            { return c.cfg, nil }
func (c *fakeCluster) IPAMStore() ipam.Store                                          { return nil }
func (c *fakeCluster) PodGone(context.Context, string, string) bool                   { return false }
func (c *fakeCluster) NodeGone(context.Context, string) bool                          { return false }
func (c *fakeCluster) APIDown() (time.Time, error, bool)                              { return time.Time{}, nil, false }
func (c *fakeCluster) APIServer() string                                              { return "https://198.18.0.2:6443" }
func (c *fakeCluster) PublishNode(context.Context, string, model.NodeAddresses) error { return nil }
func (c *fakeCluster) SetNetworkAvailable(context.Context, string) error              { return nil }
func (c *fakeCluster) Warn(kind, name, reason, message string) {
	c.warned = append(c.warned, kind+"/"+name+" "+reason)
}

func (c *fakeCluster) IPAMSettings() (ipam.Settings, error) {
	return ipam.Settings{Reservations: c.reserved}, nil
}

func (c *fakeCluster) PodChoice(context.Context, string, string) (ipam.Choice, error) {
	return ipam.Choice{}, nil
}

// fakeKernel is the kernel's main table under the real route reconciler.
type fakeKernel struct {
	links  map[string]int
	routes map[netip.Prefix]routes.KRoute
}

func (k *fakeKernel) Links() (map[string]int, error) { return maps.Clone(k.links), nil }

func (k *fakeKernel) List(table uint32, proto uint8, fn func(routes.KRoute)) error {
	for _, p := range slices.SortedFunc(maps.Keys(k.routes), netip.Prefix.Compare) {
		if r := k.routes[p]; r.Table == table && r.Protocol == proto {
			fn(r)
		}
	}
	return nil
}

func (k *fakeKernel) Write(ops []routes.Op) []error {
	errs := make([]error, len(ops))
	for i, op := range ops {
		_, exists := k.routes[op.Route.Dst]
		switch {
		case op.Delete:
			delete(k.routes, op.Route.Dst)
		case op.Replace || !exists:
			k.routes[op.Route.Dst] = op.Route
		default:
			errs[i] = fmt.Errorf("file exists")
		}
	}
	return errs
}

func (k *fakeKernel) String() string {
	names := map[int]string{}
	for n, i := range k.links {
		names[i] = n
	}
	var b strings.Builder
	for _, p := range slices.SortedFunc(maps.Keys(k.routes), netip.Prefix.Compare) {
		r := k.routes[p]
		line := r.String()
		if r.Oif != 0 {
			line = strings.Replace(line, fmt.Sprintf(" oif %d", r.Oif), " dev "+names[r.Oif], 1)
		}
		fmt.Fprintf(&b, "route %s\n", line)
	}
	return b.String()
}

// Recorders for the tunnel and veth reconcilers.
type fakeTunnels struct{ t model.Tunnels }

func (f *fakeTunnels) Set(t model.Tunnels)         { f.t = t }
func (f *fakeTunnels) Apply(context.Context) error { return nil }
func (f *fakeTunnels) String() string {
	var b strings.Builder
	if v := f.t.VXLAN; v != nil {
		fmt.Fprintf(&b, "vxlan %s mtu %d parent %s\n", v.Address, v.MTU, v.Parent)
	}
	for _, v := range f.t.VTEPs {
		fmt.Fprintf(&b, "vtep %s %s at %s\n", v.Node, v.TunnelIP, v.NodeIP)
	}
	return b.String()
}

type fakePods struct {
	ws   []model.Workload
	pins map[string]bool
}

func (f *fakePods) Set(ws []model.Workload)     { f.ws = slices.Clone(ws) }
func (f *fakePods) Apply(context.Context) error { return nil }
func (f *fakePods) Pin(w model.Workload) {
	if f.pins == nil {
		f.pins = map[string]bool{}
	}
	f.pins[w.HostIface] = true
}
func (f *fakePods) Unpin(name string) { delete(f.pins, name) }
func (f *fakePods) String() string {
	var b strings.Builder
	for _, w := range f.ws {
		fmt.Fprintf(&b, "pod %s/%s %s %s mtu %d\n", w.Namespace, w.Name, w.HostIface, w.IP, w.MTU)
	}
	return b.String()
}

type fakeHost struct{}

func (fakeHost) HostMTU() (int, error)               { return 1500, nil }
func (fakeHost) Uplink(netip.Prefix) (string, error) { return "eth0", nil }
func (fakeHost) Reachable(netip.Addr) error          { return nil }

// fakeSpeaker: what the loop configures, and a learned table and session
// table the steps set.
type fakeSpeaker struct {
	peers    []bgpspeaker.Peer
	adverts  []netip.Prefix
	nextHop  netip.Addr
	policy   bgpspeaker.Policy
	learned  map[netip.Prefix]bgpspeaker.Route
	dirty    map[netip.Prefix]bgpspeaker.Route
	sessions map[netip.Addr]bgpspeaker.Session
	adjIn    map[netip.Addr]map[netip.Prefix]bool
	changed  chan struct{}
}

func newFakeSpeaker() *fakeSpeaker {
	return &fakeSpeaker{learned: map[netip.Prefix]bgpspeaker.Route{}, dirty: map[netip.Prefix]bgpspeaker.Route{},
		sessions: map[netip.Addr]bgpspeaker.Session{}, adjIn: map[netip.Addr]map[netip.Prefix]bool{}, changed: make(chan struct{}, 1)}
}

func (f *fakeSpeaker) SetPeers(_ context.Context, ps []bgpspeaker.Peer) error {
	f.peers = slices.Clone(ps)
	return nil
}
func (f *fakeSpeaker) Sessions() []bgpspeaker.Session {
	return slices.SortedFunc(maps.Values(f.sessions), func(a, b bgpspeaker.Session) int { return a.Address.Compare(b.Address) })
}
func (f *fakeSpeaker) AdjIn(_ context.Context, p netip.Addr) (map[netip.Prefix]bool, error) {
	return maps.Clone(f.adjIn[p]), nil
}
func (f *fakeSpeaker) SetAdvertisements(_ context.Context, ps []netip.Prefix, nh netip.Addr) error {
	f.adverts, f.nextHop = slices.Clone(ps), nh
	return nil
}
func (f *fakeSpeaker) SetPolicy(_ context.Context, p bgpspeaker.Policy) error {
	f.policy = p
	return nil
}
func (f *fakeSpeaker) Learned() map[netip.Prefix]bgpspeaker.Route { return maps.Clone(f.learned) }
func (f *fakeSpeaker) Drain(buf []bgpspeaker.Change) []bgpspeaker.Change {
	for _, p := range slices.SortedFunc(maps.Keys(f.dirty), netip.Prefix.Compare) {
		if r, ok := f.learned[p]; ok {
			buf = append(buf, bgpspeaker.Change{Prefix: p, Route: r})
		} else {
			buf = append(buf, bgpspeaker.Change{Prefix: p, Route: f.dirty[p], Withdrawn: true})
		}
	}
	clear(f.dirty)
	return buf
}
func (f *fakeSpeaker) Changed() <-chan struct{} { return f.changed }
func (f *fakeSpeaker) Status(context.Context) (bgpspeaker.Status, error) {
	return bgpspeaker.Status{}, nil
}
func (f *fakeSpeaker) Rejected(context.Context) (map[netip.Addr]int, error) { return nil, nil }
func (f *fakeSpeaker) RejectedPaths(context.Context, netip.Prefix, int) ([]bgpspeaker.RejectedPath, int, error) {
	return nil, 0, nil
}

// learn announces p from peer (its next hop), withdraw takes it back.
func (f *fakeSpeaker) learn(p string, peer netip.Addr) {
	pfx := netip.MustParsePrefix(p)
	r := bgpspeaker.Route{Prefix: pfx, NextHop: peer, PeerAddr: peer}
	f.learned[pfx], f.dirty[pfx] = r, r
	if f.adjIn[peer] == nil {
		f.adjIn[peer] = map[netip.Prefix]bool{}
	}
	f.adjIn[peer][pfx] = true
}

func (f *fakeSpeaker) withdraw(p string) {
	pfx := netip.MustParsePrefix(p)
	f.dirty[pfx] = f.learned[pfx]
	delete(f.learned, pfx)
}

// up establishes sessions (with End-of-RIB) to configured peers.
func (f *fakeSpeaker) up(addrs ...netip.Addr) {
	for _, a := range addrs {
		f.sessions[a] = bgpspeaker.Session{Address: a, State: "established", Since: time.Now(), EndOfRIB: time.Now()}
	}
}

func (f *fakeSpeaker) String() string {
	var b strings.Builder
	for _, p := range f.adverts {
		fmt.Fprintf(&b, "advertise %s via %s\n", p, f.nextHop)
	}
	for _, p := range f.peers {
		fmt.Fprintf(&b, "peer %s as %d", p.Address, p.AS)
		if p.RouteReflectorClient {
			b.WriteString(" rr-client")
		}
		if p.Passive {
			b.WriteString(" passive")
		}
		b.WriteString("\n")
	}
	return b.String()
}

var (
	fNode1 = netip.MustParsePrefix("198.18.0.11/24")
	fNode2 = netip.MustParsePrefix("198.18.0.12/24")
	fNode3 = netip.MustParsePrefix("198.18.0.13/24")
	fTOR   = netip.MustParseAddr("198.18.0.1")
)

func fakeNode(name string, ip netip.Prefix, labels map[string]string) model.NodeInfo {
	return model.NodeInfo{Node: model.Node{Name: name, IP: ip}, Labels: labels}
}

func block(cidr, node string, allocs ...ipam.Allocation) ipam.Block {
	return ipam.Block{CIDR: netip.MustParsePrefix(cidr), Affinity: node, State: ipam.StateConfirmed, Allocations: allocs}
}

type fakeAgent struct {
	*Agent
	cluster *fakeCluster
	kernel  *fakeKernel
	tun     *fakeTunnels
	pods    *fakePods
	sp      *fakeSpeaker
	nat     *fakeNAT
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fc := &fakeCluster{
		nodes: []model.NodeInfo{fakeNode("node-1", fNode1, nil), fakeNode("node-2", fNode2, nil), fakeNode("node-3", fNode3, nil)},
		pools: []model.Pool{{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/16"), VXLAN: model.EncapNever, IPIP: model.EncapNever}},
		blocks: []ipam.Block{
			block("10.244.0.0/26", "node-1", ipam.Allocation{IP: netip.MustParseAddr("10.244.0.5"), Handle: "default/web-1/c1", Namespace: "default", Pod: "web-1", ContainerID: "c1", Node: "node-1"}),
			block("10.244.0.64/26", "node-2"),
			block("10.244.0.128/26", "node-3"),
		},
		cfg: model.BGPConfig{MeshEnabled: true},
	}
	k := &fakeKernel{links: map[string]int{"eth0": 2, proxyarp.VethName("default", "web-1"): 3}, routes: map[netip.Prefix]routes.KRoute{}}
	rr, err := routes.New(routes.Config{Logger: log}, k)
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{cluster: fc, kernel: k, tun: &fakeTunnels{}, pods: &fakePods{}, sp: newFakeSpeaker(), nat: &fakeNAT{}}
	a := &Agent{cfg: Config{NodeName: "node-1", Logger: log}, cluster: fc, log: log, host: fakeHost{},
		routes: rr, tun: fa.tun, arp: fa.pods, nat: fa.nat, pinned: map[string]model.Workload{}, released: map[string]time.Time{},
		events: make(chan workloadEvent, 16)}
	a.self = fc.nodes[0]
	a.reg = registrar.New("node-1", fc, log)
	if a.run, err = runner.New(runner.Config{Logger: log}, a.sync); err != nil {
		t.Fatal(err)
	}
	a.bgp = &bgpState{speaker: fa.sp, ctl: bgpsession.New(bgpsession.Config{Logger: log}, fa.sp), holding: true}
	fa.Agent = a
	return fa
}

func (f *fakeAgent) String() string {
	return f.kernel.String() + f.tun.String() + f.pods.String() + f.sp.String()
}

// TestLoopStates drives the loop through cluster and BGP states in order.
// Each step either runs a full sync or the BGP fast lane (bgpDelta), as
// the runner would on an informer poke or a speaker poke.
func TestLoopStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent(t)
		ctx := context.Background()
		n2, n3 := fNode2.Addr(), fNode3.Addr()
		const own = "route blackhole 10.244.0.0/26\n" +
			"route 10.244.0.5/32 dev cali0761ccbeace scope link\n"
		const pod = "pod default/web-1 cali0761ccbeace 10.244.0.5 mtu 1500\n" +
			"advertise 10.244.0.0/26 via 198.18.0.11\n"
		steps := []struct {
			name  string
			do    func()
			delta bool // the fast lane instead of a full sync
			want  string
		}{{
			name: "start: own block and pod, mesh to node-2 and node-3",
			do:   func() {},
			want: own + pod + "peer 198.18.0.12 as 64512\npeer 198.18.0.13 as 64512\n",
		}, {
			name:  "sessions up, their blocks arrive through the fast lane",
			do:    func() { f.sp.up(n2, n3) },
			delta: false, // a session change takes a full run
			want:  own + pod + "peer 198.18.0.12 as 64512\npeer 198.18.0.13 as 64512\n",
		}, {
			name: "learned",
			do: func() {
				f.sp.learn("10.244.0.64/26", n2)
				f.sp.learn("10.244.0.128/26", n3)
			},
			delta: true,
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				"route 10.244.0.128/26 via 198.18.0.13 dev eth0\n" +
				pod + "peer 198.18.0.12 as 64512\npeer 198.18.0.13 as 64512\n",
		}, {
			name: "node-3 becomes a route reflector: node-2's mesh session stays until node-3 carries its block",
			do: func() {
				f.cluster.nodes[2].RouteReflector, f.cluster.nodes[2].RRClusterID = true, model.DefaultRRClusterID
			},
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				"route 10.244.0.128/26 via 198.18.0.13 dev eth0\n" +
				pod + "peer 198.18.0.12 as 64512\npeer 198.18.0.13 as 64512\n",
		}, {
			name:  "node-2's withdrawal through the retiring session is held",
			do:    func() { f.sp.withdraw("10.244.0.64/26") },
			delta: true,
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				"route 10.244.0.128/26 via 198.18.0.13 dev eth0\n" +
				pod + "peer 198.18.0.12 as 64512\npeer 198.18.0.13 as 64512\n",
		}, {
			name: "node-3 reflects node-2's block: the old session goes",
			do: func() {
				f.sp.learn("10.244.0.64/26", n3) // best path now via the reflector
				f.sp.learned[netip.MustParsePrefix("10.244.0.64/26")] = bgpspeaker.Route{Prefix: netip.MustParsePrefix("10.244.0.64/26"), NextHop: n2, PeerAddr: n3}
			},
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				"route 10.244.0.128/26 via 198.18.0.13 dev eth0\n" +
				pod + "peer 198.18.0.13 as 64512\n",
		}, {
			name: "a top-of-rack BGPPeer for every node",
			do: func() {
				f.cluster.peers = []model.BGPPeer{{Name: "tor", IP: fTOR, AS: 65001}}
			},
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				"route 10.244.0.128/26 via 198.18.0.13 dev eth0\n" +
				pod + "peer 198.18.0.1 as 65001\npeer 198.18.0.13 as 64512\n",
		}, {
			name: "node-3 is deleted: its block goes at once; node-2's block, withdrawn with the reflector, stays (node-2 still holds it) while the mesh session to node-2 returns",
			do: func() {
				f.sp.up(fTOR)
				f.cluster.nodes = f.cluster.nodes[:2]
				f.cluster.blocks = f.cluster.blocks[:2]
				delete(f.sp.sessions, n3)
				f.sp.withdraw("10.244.0.64/26")
				f.sp.withdraw("10.244.0.128/26")
			},
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				pod + "peer 198.18.0.1 as 65001\npeer 198.18.0.12 as 64512\n",
		}, {
			name: "node-2 is back in the mesh and announces its block again",
			do: func() {
				f.sp.up(n2)
				f.sp.learn("10.244.0.64/26", n2)
			},
			want: "route blackhole 10.244.0.0/26\n" +
				"route 10.244.0.5/32 dev cali0761ccbeace scope link\n" +
				"route 10.244.0.64/26 via 198.18.0.12 dev eth0\n" +
				pod + "peer 198.18.0.1 as 65001\npeer 198.18.0.12 as 64512\n",
		}, {
			name: "node-2 withdraws its block outside any window: gone at once",
			do:   func() { f.cluster.blocks = f.cluster.blocks[:1]; f.sp.withdraw("10.244.0.64/26") },
			want: own + pod + "peer 198.18.0.1 as 65001\npeer 198.18.0.12 as 64512\n",
		}}
		for _, st := range steps {
			time.Sleep(time.Second)
			st.do()
			if st.delta {
				if full := f.bgpDelta(ctx); full {
					t.Fatalf("%s: the fast lane asked for a full run", st.name)
				}
			} else if err := f.sync(ctx); err != nil {
				t.Fatalf("%s: sync: %v", st.name, err)
			}
			if diff := cmp.Diff(st.want, f.String()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", st.name, diff)
			}
		}
	})
}

// syncedFakeAgent is newFakeAgent after one full sync.
func syncedFakeAgent(t *testing.T) (*fakeAgent, context.Context) {
	t.Helper()
	fa, ctx := newFakeAgent(t), context.Background()
	if err := fa.sync(ctx); err != nil {
		t.Fatal(err)
	}
	return fa, ctx
}

// newPod1 is the pod the CNI tests add (10.244.0.9 in node-1's block),
// and its IPAM handle.
func newPod1() (model.Workload, string) {
	w := model.Workload{Namespace: "default", Name: "new-1", ContainerID: "c9", HostIface: proxyarp.VethName("default", "new-1"),
		IP: netip.MustParseAddr("10.244.0.9"), MTU: 1500}
	return w, ipam.PodHandle(w.Namespace, w.Name, w.ContainerID)
}

// TestReleaseBeforeRunUnpins: a pod whose address is released (GC of its
// deleted Pod object) before any run had it in its desired state loses
// the pins its ADD put on its veth and /32, so the next run removes both
// (they used to stay for good).
func TestReleaseBeforeRunUnpins(t *testing.T) {
	fa, ctx := syncedFakeAgent(t)
	w, handle := newPod1()
	fa.kernel.links[w.HostIface] = 9
	// What Add does: pin, wire (the /32 at once), tell the loop.
	fa.arp.Pin(w)
	if err := fa.routes.AddNow(model.Route{Dst: netip.PrefixFrom(w.IP, 32), Kind: model.RoutePod, Device: w.HostIface}, 9); err != nil {
		t.Fatal(err)
	}
	fa.tell(workloadEvent{handle: handle, w: w})
	// GC releases it before the loop runs.
	fa.forget([]string{handle})
	if err := fa.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if fa.pods.pins[w.HostIface] {
		t.Errorf("the veth %s is still pinned", w.HostIface)
	}
	if r, ok := fa.kernel.routes[netip.MustParsePrefix("10.244.0.9/32")]; ok {
		t.Errorf("the released pod's route %s is still in the kernel", r)
	}
}

// TestAddInFlightStaysOut: the cache shows a pod's allocation while its
// CNI ADD is still building the veth. A run meanwhile leaves the pod out
// (no "link missing" error, no route written through a veth that is not
// there or not up yet) and keeps the routes the ADD pinned, including a
// repeated ADD's of a pod the loop already had from the cache; the pod is
// the loop's once the ADD has told it.
func TestAddInFlightStaysOut(t *testing.T) {
	fa, ctx := syncedFakeAgent(t)
	w, handle := newPod1()
	dst := netip.PrefixFrom(w.IP, 32)
	old := netip.MustParsePrefix("10.244.0.5/32") // web-1, known from the cache
	oldHandle := "default/web-1/c1"

	// Both ADDs under way: the allocation is in the cache, no veth yet.
	end := fa.claimPod(handle)
	endOld := fa.claimPod(oldHandle)
	fa.routes.Pin(dst)
	fa.routes.Pin(old)
	fa.cluster.blocks[0].Allocations = append(fa.cluster.blocks[0].Allocations,
		ipam.Allocation{IP: w.IP, Handle: handle, Namespace: w.Namespace, Pod: w.Name, ContainerID: w.ContainerID, Node: "node-1"})
	if err := fa.sync(ctx); err != nil {
		t.Errorf("a run during the ADD failed: %v", err)
	}
	if s := fa.pods.String(); strings.Contains(s, "new-1") || strings.Contains(s, "web-1") {
		t.Errorf("pods of ADDs in flight are in the desired state:\n%s", s)
	}
	if _, ok := fa.kernel.routes[dst]; ok {
		t.Errorf("the loop wrote %s before the ADD built the veth", dst)
	}
	if _, ok := fa.kernel.routes[old]; !ok {
		t.Errorf("the repeated ADD's pinned route %s was deleted", old)
	}
	if st := fa.routes.(*routes.Reconciler).LastStats(); st.Errors != 0 || st.Held != 0 {
		t.Errorf("route stats during the ADD: %+v; want no errors and nothing held", st)
	}

	// The ADD builds the veth, writes the /32, tells the loop and ends.
	fa.kernel.links[w.HostIface] = 9
	if err := fa.routes.AddNow(model.Route{Dst: dst, Kind: model.RoutePod, Device: w.HostIface}, 9); err != nil {
		t.Fatal(err)
	}
	fa.tell(workloadEvent{handle: handle, w: w})
	end()
	endOld()
	if err := fa.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s := fa.pods.String(); !strings.Contains(s, "new-1") || !strings.Contains(s, "web-1") {
		t.Errorf("the pods are not in the desired state after their ADDs:\n%s", s)
	}
	for _, p := range []netip.Prefix{dst, old} {
		if _, ok := fa.kernel.routes[p]; !ok {
			t.Errorf("route %s missing after the ADDs", p)
		}
	}
	if got := fa.podsInCNI(); got != nil {
		t.Errorf("ADDs still in flight: %v", got)
	}
}

// TestDelInFlightStaysOut: a CNI DEL removes the veth (and with it the
// route) before it tells the loop. A run in between leaves the pod out
// instead of failing on its missing veth.
func TestDelInFlightStaysOut(t *testing.T) {
	fa, ctx := syncedFakeAgent(t)
	const handle = "default/web-1/c1"
	dst := netip.MustParsePrefix("10.244.0.5/32")
	if _, ok := fa.kernel.routes[dst]; !ok {
		t.Fatalf("web-1's route %s not programmed before the DEL", dst)
	}
	// The DEL has removed the veth; the kernel took the route with it.
	end := fa.claimPod(handle)
	delete(fa.kernel.links, proxyarp.VethName("default", "web-1"))
	delete(fa.kernel.routes, dst)
	if err := fa.sync(ctx); err != nil {
		t.Errorf("a run during the DEL failed: %v", err)
	}
	if s := fa.pods.String(); strings.Contains(s, "web-1") {
		t.Errorf("the pod of a DEL in flight is in the desired state:\n%s", s)
	}
	// The DEL tells the loop, releases the address and ends.
	fa.tell(workloadEvent{handle: handle, gone: true})
	fa.cluster.blocks[0].Allocations = nil
	end()
	if err := fa.sync(ctx); err != nil {
		t.Errorf("the run after the DEL failed: %v", err)
	}
	if s := fa.pods.String(); strings.Contains(s, "web-1") {
		t.Errorf("the deleted pod is in the desired state:\n%s", s)
	}
	if _, ok := fa.kernel.routes[dst]; ok {
		t.Errorf("the deleted pod's route %s came back", dst)
	}

	// The same for a pod this agent's own ADD handed over (pinned).
	w, newHandle := newPod1()
	fa.kernel.links[w.HostIface] = 9
	fa.tell(workloadEvent{handle: newHandle, w: w})
	if err := fa.sync(ctx); err != nil || !strings.Contains(fa.pods.String(), "new-1") {
		t.Fatalf("new-1 not taken over after its ADD (%v):\n%s", err, fa.pods.String())
	}
	end = fa.claimPod(newHandle)
	delete(fa.kernel.links, w.HostIface)
	delete(fa.kernel.routes, netip.PrefixFrom(w.IP, 32))
	if err := fa.sync(ctx); err != nil {
		t.Errorf("a run during new-1's DEL failed: %v", err)
	}
	fa.tell(workloadEvent{handle: newHandle, gone: true})
	end()
	if err := fa.sync(ctx); err != nil || strings.Contains(fa.pods.String(), "new-1") {
		t.Errorf("after new-1's DEL (%v):\n%s", err, fa.pods.String())
	}
}
