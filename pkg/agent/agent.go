package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"

	"github.com/wren-net/wren/pkg/desired"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/nat"
	"github.com/wren-net/wren/pkg/netwatch"
	"github.com/wren-net/wren/pkg/nodeip"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/registrar"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/runner"
	"github.com/wren-net/wren/pkg/selector"
	"github.com/wren-net/wren/pkg/sysctl"
	"github.com/wren-net/wren/pkg/tunnel"
)

// Cluster is the agent's view of the Kubernetes API, implemented by
// pkg/cluster. Reads come from informer caches; Start pokes on every
// change and returns when the caches have synced.
type Cluster interface {
	Start(ctx context.Context, poke func()) error
	Nodes() ([]model.NodeInfo, error)
	Pools() ([]model.Pool, error)
	Blocks() ([]ipam.Block, error)
	BGPPeers() ([]model.BGPPeer, error)
	// BGPConfig is the BGPConfiguration named default, defaults filled in.
	BGPConfig() (model.BGPConfig, error)
	IPAMStore() ipam.Store
	// PodChoice is what a pod asked of IPAM by annotation (an address
	// or pools), read on CNI ADD; a pod that does not exist chose nothing.
	PodChoice(ctx context.Context, namespace, name string) (ipam.Choice, error)
	// IPAMSettings are the IPReservations and the IPAMConfiguration, from
	// the cache, for the debug views.
	IPAMSettings() (ipam.Settings, error)
	// PublishNode writes the addresses set in a (and only those) into the
	// Node's annotations, where the other nodes read them.
	PublishNode(ctx context.Context, name string, a model.NodeAddresses) error
	// SetNetworkAvailable sets the Node's NetworkUnavailable condition to
	// False.
	SetNetworkAvailable(ctx context.Context, name string) error
	// PodGone reports whether a pod does not exist, for address GC: true
	// only when the API server itself (an uncached GET) answered NotFound,
	// never from a cache that may not show a pod created a moment ago.
	PodGone(ctx context.Context, namespace, name string) bool
	// NodeGone is PodGone for Nodes, for the release of a deleted node's
	// blocks.
	NodeGone(ctx context.Context, name string) bool
	// APIDown reports, without blocking, whether the Kubernetes API server
	// is unreachable, since when, and the latest error that said so.
	APIDown() (since time.Time, err error, down bool)
	// APIServer names the API server in messages (its URL).
	APIServer() string
	// Warn records a Kubernetes Event (and a log line) about a bad object.
	Warn(kind, name, reason, message string)
}

// Config configures the agent.
type Config struct {
	NodeName     string
	NodeIPMethod string         // see nodeip.Detect
	NetNS        netns.NsHandle // <= 0: the agent's own namespace
	Sysctl       sysctl.FS
	IfacePattern string // host MTU interfaces; tunnel.DefaultIfacePattern by default
	// BGP runs the node's BGP speaker (pkg/bgpspeaker) in the agent's
	// network namespace: it advertises the node's blocks and routes the
	// other nodes' blocks of pools without VXLAN from what it learns.
	BGP bool
	// GoBGPAPI, when set, serves GoBGP's own gRPC API on this loopback
	// address for the stock gobgp CLI (bgpspeaker.Config.APIAddress).
	GoBGPAPI string
	// Housekeeping is the period of IPAM housekeeping (empty blocks,
	// addresses of deleted pods, blocks of deleted nodes); default 1 min.
	Housekeeping time.Duration
	Runner       runner.Config
	Logger       *slog.Logger
	// Observer, if set, is told about reconciler runs, route writes, IPAM
	// running out of blocks and CNI commands (the agent's metrics).
	Observer Observer
	// LiveDeadline is how long the loop may go without completing a run
	// before Live fails (/livez); default DefaultLiveDeadline.
	LiveDeadline time.Duration
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.NodeIPMethod == "" {
		c.NodeIPMethod = "first-found"
	}
	if c.IfacePattern == "" {
		c.IfacePattern = tunnel.DefaultIfacePattern
	}
	if c.Housekeeping == 0 {
		c.Housekeeping = time.Minute
	}
	if c.LiveDeadline == 0 {
		c.LiveDeadline = DefaultLiveDeadline
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Sysctl.NS == 0 && c.NetNS > 0 {
		c.Sysctl.NS = c.NetNS
	}
	c.Runner.Logger = c.Logger
}

// Validate reports what is missing.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("agent: node name is empty (set --node-name or NODENAME)")
	}
	if c.BGP && c.NetNS > 0 {
		// GoBGP's sockets are created on whatever thread runs them: in the
		// agent's own namespace, not NetNS.
		return errors.New("agent: BGP needs the agent to run inside the node's network namespace; it cannot be combined with NetNS")
	}
	if c.Housekeeping < time.Second {
		return fmt.Errorf("agent: housekeeping interval %s is below 1s", c.Housekeeping)
	}
	if _, err := regexp.Compile(c.IfacePattern); err != nil {
		return fmt.Errorf("agent: interface pattern: %w", err)
	}
	return nil
}

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	cluster Cluster
	log     *slog.Logger

	nl     *netlink.Handle       // CNI: pod namespaces, veths
	kernel *routes.NetlinkKernel // Run: the previous run's routes, netwatch's port IDs
	host   host
	routes routeReconciler
	tun    tunnelReconciler
	arp    podReconciler
	alloc  *ipam.Allocator
	run    *runner.Runner
	bgp    *bgpState // nil without Config.BGP; the loop's
	reg    *registrar.Registrar

	// natOutgoing: the reconciler and its nftables socket (whose port id
	// the watcher ignores).
	nat       natReconciler
	natKernel *nat.NFTKernel

	// events carries CNI ADDs and DELs (and addresses GC released) to the
	// loop, which alone owns pinned and released.
	events chan workloadEvent
	podMTU atomic.Int32 // the pods' MTU as the loop last computed it, for ADD

	// hk serializes housekeeping rounds (the minute ticker, Housekeep).
	hk sync.Mutex

	// The last count of rejected prefixes per peer (ScrapeStatus).
	rejMu    sync.Mutex
	rejCount map[netip.Addr]int
	rejAt    time.Time

	// snap is what the loop published after its last full run.
	snap      atomic.Pointer[Snapshot]
	startedAt time.Time
	// The loop's: this node as its last run saw it, and what it built.
	lastSelf    model.NodeInfo
	lastDesired *model.Desired

	mu      sync.Mutex
	self    model.NodeInfo
	started uint64 // syncs started
	done    uint64 // highest sync number completed
	// When the current run started (zero between runs) and the last one
	// ended; dataplaneOK once a run applied tunnels, veths and routes
	// without an error. For Live and Ready.
	runStart, runEnd time.Time
	dataplaneOK      bool

	// The loop's own: workloads CNI ADD created (the cache may not show
	// their allocation yet) and handles DEL or GC released (the cache may
	// still show them), by handle.
	pinned   map[string]model.Workload
	released map[string]time.Time

	// inCNI counts the CNI ADDs and DELs in flight per handle: an ADD
	// from before the allocation until it has told the loop (or failed),
	// a DEL from before it removes the veth until it has told the loop.
	// Meanwhile the pod's veth and route are the command's, and the loop
	// leaves the pod out of its desired state instead of finding its veth
	// missing or not up yet (the cache shows an ADD's allocation while
	// the veth is being built; a DEL removes the veth before the loop
	// hears of it).
	inCNIMu sync.Mutex
	inCNI   map[string]int
}

// workloadEvent is a CNI ADD (w) or a release (gone) for the loop.
type workloadEvent struct {
	handle string
	w      model.Workload
	gone   bool
}

// tell hands an event to the loop and pokes it. It blocks only while the
// loop has 1024 events it has not read yet.
func (a *Agent) tell(e workloadEvent) {
	a.events <- e
	a.run.Poke()
}

// takeEvents applies the pending events to the loop's workload maps.
func (a *Agent) takeEvents() {
	for {
		select {
		case e := <-a.events:
			if e.gone {
				if w, ok := a.pinned[e.handle]; ok {
					// A release (GC of a deleted pod) right after the
					// ADD, before any run had the pod in its desired
					// state: the reconcilers' pins of its veth and /32
					// would never be dropped, and both would stay.
					a.unpinPod(w)
				}
				delete(a.pinned, e.handle)
				a.released[e.handle] = time.Now()
			} else {
				a.pinned[e.handle] = e.w
				delete(a.released, e.handle)
			}
		default:
			return
		}
	}
}

// New builds an agent; it opens kernel handles but changes nothing yet.
func New(cfg Config, cluster Cluster) (*Agent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, cluster: cluster, startedAt: time.Now(), log: cfg.Logger.With("component", "agent"), pinned: map[string]model.Workload{}, released: map[string]time.Time{}, events: make(chan workloadEvent, 1024)}
	a.reg = registrar.New(cfg.NodeName, cluster, cfg.Logger)
	var err error
	if cfg.NetNS > 0 {
		a.nl, err = netlink.NewHandleAt(cfg.NetNS)
	} else {
		a.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if a.kernel, err = routes.NewKernel(cfg.NetNS, 0); err != nil {
		return nil, err
	}
	if a.routes, err = routes.New(routes.Config{Logger: cfg.Logger.With("component", "routes"), Observe: a.obs().RoutesWritten}, a.kernel); err != nil {
		return nil, err
	}
	a.host = netlinkHost{nl: a.nl, iface: regexp.MustCompile(cfg.IfacePattern)}
	a.tun = tunnel.New(tunnel.Config{Logger: cfg.Logger.With("component", "tunnel")}, a.nl)
	a.arp = proxyarp.New(proxyarp.Config{Sysctl: cfg.Sysctl, Logger: cfg.Logger.With("component", "proxyarp")}, a.nl)
	if a.natKernel, a.nat, err = newNAT(cfg); err != nil {
		return nil, err
	}
	if a.run, err = runner.New(cfg.Runner, a.sync); err != nil {
		return nil, err
	}
	return a, nil
}

// Run registers the node, then runs the loop, the kernel watcher and the
// cluster watches until ctx ends. Kernel state is never flushed on exit.
func (a *Agent) Run(ctx context.Context) error {
	ports, err := a.kernel.PortIDs()
	if err != nil {
		return err
	}
	w, err := netwatch.New(netwatch.Config{NS: a.cfg.NetNS, IgnorePorts: ports, Logger: a.cfg.Logger.With("component", "netwatch")})
	if err != nil {
		return err
	}
	natWatch := a.natWatch()
	if err := proxyarp.EnableForwarding(a.cfg.Sysctl); err != nil {
		return err
	}
	// Caches first: nothing is applied before the agent knows the whole
	// cluster, so a restart deletes no route that is still wanted.
	a.log.Info("waiting for cluster caches")
	if err := a.cluster.Start(ctx, func() { a.run.Poke(); a.reg.Poke() }); err != nil {
		return fmt.Errorf("start cluster watches: %w", err)
	}
	if err := a.register(); err != nil {
		return err
	}
	alloc, err := ipam.New(ipam.Config{Node: a.cfg.NodeName, Logger: a.cfg.Logger.With("component", "ipam"), PoolSelected: a.poolSelected,
		NoFreeBlock: a.obs().NoFreeBlock}, a.cluster.IPAMStore())
	if err != nil {
		return err
	}
	if a.cfg.BGP {
		a.mu.Lock()
		self := a.self
		a.mu.Unlock()
		if err := a.startBGP(ctx, self); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.alloc = alloc
	a.mu.Unlock()
	// Every goroutine is joined: Run returns when all have stopped.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx, a.run.Poke) })
	g.Go(func() error { return natWatch(gctx) })
	g.Go(func() error { return a.run.Run(gctx) })
	g.Go(func() error { a.housekeeping(gctx); return nil })
	g.Go(func() error { a.reg.Run(gctx, a.self.IP, alloc); return nil })
	err = g.Wait()
	a.natKernel.Close()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("agent loop stopped: %w", err)
}

// register detects the node IP and refuses one another node already
// has. The registrar publishes it.
func (a *Agent) register() error {
	nodes, err := a.cluster.Nodes()
	if err != nil {
		return err
	}
	var self model.NodeInfo
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			self = n
		}
	}
	if self.Name == "" {
		return fmt.Errorf("node %s: no Node object with this name; is --node-name right?", a.cfg.NodeName)
	}
	ip, err := nodeip.Detect(a.cfg.NodeIPMethod, a.nl, func() (netip.Addr, error) {
		if !self.InternalIP.IsValid() {
			return netip.Addr{}, errors.New("Node has no InternalIP address")
		}
		return self.InternalIP, nil
	})
	if err != nil {
		return fmt.Errorf("node %s: detect IP: %w", a.cfg.NodeName, err)
	}
	for _, n := range nodes {
		if n.Name != a.cfg.NodeName && n.IP.IsValid() && n.IP.Addr() == ip.Addr.Addr() {
			return fmt.Errorf("node %s: IP %s is already used by node %s; set --node-ip-method to pick another address, or remove the %s annotation from %s",
				a.cfg.NodeName, ip.Addr.Addr(), n.Name, "wren.network/ipv4-address", n.Name)
		}
	}
	self.IP = ip.Addr
	a.mu.Lock()
	a.self = self
	a.mu.Unlock()
	a.log.Info("node address", "ip", ip.Addr, "iface", ip.Iface, "method", a.cfg.NodeIPMethod)
	return nil
}

// poolSelected reports whether IPAM may use pool p for this node: an
// enabled pool whose nodeSelector (a Calico selector) matches the node's
// labels. A selector that does not parse selects nothing (pkg/cluster
// reports it on the pool).
func (a *Agent) poolSelected(p model.Pool) bool {
	if p.Disabled {
		return false
	}
	sel, err := selector.Parse(p.NodeSelector)
	if err != nil {
		return false
	}
	nodes, err := a.cluster.Nodes()
	if err != nil {
		return false
	}
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			return sel.Matches(n.Labels)
		}
	}
	return false
}

// sync is one level-triggered run: read every input, build the desired
// state, apply tunnels, veths, routes, NAT, then (with BGP) the
// advertisements and the sessions, in that order.
func (a *Agent) sync(ctx context.Context) error {
	a.mu.Lock()
	a.started++
	n := a.started
	a.runStart = time.Now()
	a.mu.Unlock()
	a.lastDesired = nil
	err := a.syncOnce(ctx)
	a.publish(a.lastSelf, a.lastDesired, err)
	a.mu.Lock()
	a.done = n
	a.runStart, a.runEnd = time.Time{}, time.Now()
	a.mu.Unlock()
	return err
}

func (a *Agent) syncOnce(ctx context.Context) error {
	nodes, err := a.cluster.Nodes()
	if err != nil {
		return err
	}
	pools, err := a.cluster.Pools()
	if err != nil {
		return err
	}
	blocks, err := a.cluster.Blocks()
	if err != nil {
		return err
	}
	// This node as the cache has it (labels, the tunnel addresses the
	// registrar published), with the address this agent detected.
	a.mu.Lock()
	me := a.self
	a.mu.Unlock()
	var peers []model.Node
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			ip := me.IP
			me = n
			me.IP = ip
			continue
		}
		peers = append(peers, n.Node)
	}
	self := me
	a.lastSelf = self
	var errs []error
	mtu, err := a.host.HostMTU()
	if err != nil {
		return err
	}
	// Without the uplink, routes through it and the VXLAN device wait
	// (the reconcilers keep what the kernel has); everything else goes on.
	uplink, err := a.host.Uplink(self.IP)
	if err != nil {
		errs = append(errs, err)
	}
	in := desired.Inputs{Self: self.Node, Nodes: peers, Pools: pools, Blocks: blocks, HostMTU: mtu, Uplink: uplink}
	var bgpCfg model.BGPConfig
	if a.bgp != nil {
		if bgpCfg, err = a.cluster.BGPConfig(); err != nil {
			return err
		}
		// A new router ID, AS or listen port restarts the speaker's global
		// part before the learned routes are read (bgp_live.go).
		errs = append(errs, a.followBGPGlobal(ctx, self, bgpCfg))
		a.bgpInputs(&in, nodes, bgpCfg)
	}
	podMTU := desired.PodMTU(pools, mtu)

	_, _, apiDown := a.cluster.APIDown()
	a.takeEvents()
	released := a.pruneReleased(blocks, apiDown)
	in.Workloads = localWorkloads(a.cfg.NodeName, blocks, a.pinned, released, a.podsInCNI(), podMTU)
	d, berrs := desired.Build(in)
	a.lastDesired = &d
	for _, e := range berrs {
		a.log.Debug("not routed", "reason", e)
	}
	a.podMTU.Store(int32(d.PodMTU))
	if a.bgp != nil {
		a.bgp.shaper = desired.NewLearnedShaper(in)
	}
	a.tun.Set(d.Tunnels)
	a.arp.Set(d.Workloads)
	a.routes.Set(d.Routes)
	dpErr := errors.Join(a.timed(ctx, ReconcilerTunnels, a.tun.Apply), a.timed(ctx, ReconcilerVeths, a.arp.Apply),
		a.timed(ctx, ReconcilerRoutes, a.routes.Apply))
	if dpErr == nil {
		// The node's dataplane is programmed: the registrar may clear
		// NetworkUnavailable (BGP errors below do not hold it back).
		a.reg.Applied()
		a.mu.Lock()
		a.dataplaneOK = true
		a.mu.Unlock()
	}
	errs = append(errs, dpErr)
	// natOutgoing after the routes: its failure (a kernel without
	// nftables NAT) leaves pod-to-pod traffic and readiness alone.
	a.nat.Set(d.NAT)
	errs = append(errs, a.timed(ctx, ReconcilerNAT, a.nat.Apply))
	if a.bgp != nil {
		// Paths before peers: the node's advertisements are in place
		// before any session is added or changed.
		errs = append(errs, a.timed(ctx, ReconcilerAdvertisements, func(ctx context.Context) error {
			return a.bgp.speaker.SetAdvertisements(ctx, d.Advertise, self.IP.Addr())
		}))
		errs = append(errs, a.timed(ctx, ReconcilerSessions, func(ctx context.Context) error {
			return a.applyBGP(ctx, in, me, nodes, bgpCfg)
		}))
	}
	a.checkPeers()
	return errors.Join(errs...)
}

// checkPeers reports BGPPeers this node has no route to. They cannot
// establish; everything else keeps working.
func (a *Agent) checkPeers() {
	peers, err := a.cluster.BGPPeers()
	if err != nil {
		a.log.Warn("list BGP peers", "err", err)
		return
	}
	for _, p := range peers {
		if !p.IP.IsValid() {
			continue // a peerSelector: the nodes' addresses
		}
		if err := a.host.Reachable(p.IP); err != nil {
			a.cluster.Warn("BGPPeer", p.Name, "PeerUnreachable",
				fmt.Sprintf("spec.peerIP %s is unreachable from node %s (%v); fix the address or the node's routes", p.IP, a.cfg.NodeName, err))
		}
	}
}

// localWorkloads are this node's pods: the addresses IPAM recorded for it
// (which survive agent restarts) plus the pods CNI ADDs handed over (pinned,
// by handle), less the pods a CNI ADD or DEL is working on (inCNI).
func localWorkloads(node string, blocks []ipam.Block, pinned map[string]model.Workload, released, inCNI map[string]bool, mtu int) []model.Workload {
	seen := map[netip.Addr]bool{}
	var ws []model.Workload
	for h, w := range pinned {
		if inCNI[h] {
			continue
		}
		w.MTU = mtu
		ws = append(ws, w)
		seen[w.IP] = true
	}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Node != node || al.Pod == "" || seen[al.IP] || released[al.Handle] || inCNI[al.Handle] {
				continue
			}
			seen[al.IP] = true
			ws = append(ws, model.Workload{Namespace: al.Namespace, Name: al.Pod, ContainerID: al.ContainerID,
				HostIface: proxyarp.VethName(al.Namespace, al.Pod), IP: al.IP, MTU: mtu})
		}
	}
	return ws
}

// releasedTTL bounds how long a DEL's handle hides a cached allocation:
// the informer shows the release within milliseconds; a handle still
// allocated after this long was allocated again or never released.
const releasedTTL = time.Minute

// pruneReleased forgets released handles the cache no longer shows (or
// that are older than releasedTTL) and returns the rest. While the API
// server is unreachable (apiDown) the cache cannot show a release, so
// the TTL starts again: it counts from the server's return, not from the
// DEL, or an allocation released just before an outage would reappear
// from the stale cache as a local pod. The loop's.
func (a *Agent) pruneReleased(blocks []ipam.Block, apiDown bool) map[string]bool {
	if len(a.released) == 0 {
		return nil
	}
	now := time.Now()
	cached := map[string]bool{}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if _, ok := a.released[al.Handle]; ok {
				cached[al.Handle] = true
			}
		}
	}
	for h, at := range a.released {
		if apiDown {
			a.released[h] = now
			at = now
		}
		if !cached[h] || now.Sub(at) > releasedTTL {
			delete(a.released, h)
			delete(cached, h)
		}
	}
	return cached
}

// housekeeping, every Config.Housekeeping: releases empty blocks after their grace
// period, addresses of deleted pods, and blocks of deleted nodes.
func (a *Agent) housekeeping(ctx context.Context) {
	t := time.NewTicker(a.cfg.Housekeeping)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.Housekeep(ctx); err != nil && !errors.Is(err, errAPIDown) {
			a.log.Warn("housekeeping", "err", err)
		}
	}
}

// errAPIDown: housekeeping waits for the API server (the outage is
// logged once by the cluster view).
var errAPIDown = errors.New("housekeeping skipped: the Kubernetes API server is unreachable")

// Housekeep runs one round of IPAM housekeeping now; the agent runs one a
// minute, tests call it directly. It releases this node's blocks that
// have been empty for the grace period, the addresses of this node's
// deleted pods, and the blocks of deleted nodes.
//
// Nothing is freed on the word of a cache. Each release is decided on
// state read from the API server itself and confirmed there: the blocks
// are listed uncached, a pod or node counts as deleted only when an
// uncached GET answers NotFound (Cluster.PodGone, NodeGone; any error
// means keep), and every write is conditional on the version read. The
// informer caches are at best a shortcut for "it exists". The other
// design, acting only on a cache known to be synced since the last
// disconnect, cannot be made exact with client-go: a reflector that
// resumes its watch after "connection refused" reports neither the error
// nor the resync, HasSynced covers only the first list, and even a
// healthy cache trails the API by the latency of a watch event. The
// price is one GET per candidate, and there are none in steady state.
//
// While the API server is unreachable the round is skipped (errAPIDown).
func (a *Agent) Housekeep(ctx context.Context) error {
	a.hk.Lock()
	defer a.hk.Unlock()
	a.mu.Lock()
	alloc := a.alloc
	a.mu.Unlock()
	if alloc == nil {
		return errors.New("housekeeping: the agent has not registered its node yet")
	}
	if _, _, down := a.cluster.APIDown(); down {
		return errAPIDown
	}
	var errs []error
	if _, err := alloc.ReleaseEmptyBlocks(ctx); err != nil {
		errs = append(errs, fmt.Errorf("release empty blocks: %w", err))
	}
	gone, err := alloc.GC(ctx, a.cluster.PodGone)
	if err != nil {
		errs = append(errs, fmt.Errorf("address GC: %w", err))
	}
	a.forget(gone)
	if _, err := alloc.ReleaseOrphanBlocks(ctx, a.cluster.NodeGone); err != nil {
		errs = append(errs, fmt.Errorf("release blocks of deleted nodes: %w", err))
	}
	return errors.Join(errs...)
}

// claimPod marks a CNI ADD or DEL of handle in flight; the returned func
// ends it. The command tells the loop about the pod before it ends.
func (a *Agent) claimPod(handle string) (end func()) {
	a.inCNIMu.Lock()
	if a.inCNI == nil {
		a.inCNI = map[string]int{}
	}
	a.inCNI[handle]++
	a.inCNIMu.Unlock()
	return func() {
		a.inCNIMu.Lock()
		if a.inCNI[handle]--; a.inCNI[handle] <= 0 {
			delete(a.inCNI, handle)
		}
		a.inCNIMu.Unlock()
	}
}

// podsInCNI returns the handles of the CNI ADDs and DELs in flight (nil
// when there are none, the usual case).
func (a *Agent) podsInCNI() map[string]bool {
	a.inCNIMu.Lock()
	defer a.inCNIMu.Unlock()
	if len(a.inCNI) == 0 {
		return nil
	}
	m := make(map[string]bool, len(a.inCNI))
	for h := range a.inCNI {
		m[h] = true
	}
	return m
}

// unpinPod drops the pins CNI ADD put on a pod's veth and /32.
func (a *Agent) unpinPod(w model.Workload) {
	a.arp.Unpin(w.HostIface)
	a.routes.Unpin(netip.PrefixFrom(w.IP, 32))
}

// forget drops the workloads of handles GC released (pods deleted without
// a CNI DEL): a pinned workload would keep the old pod's /32 and veth,
// and once its address is handed out again the node would route it to
// two veths. The next sync removes the veth.
func (a *Agent) forget(handles []string) {
	for _, h := range handles {
		a.tell(workloadEvent{handle: h, gone: true})
	}
}
