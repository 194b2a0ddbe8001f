package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/netwatch"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/runner"
	"github.com/wren-net/wren/pkg/selector"
	"github.com/wren-net/wren/pkg/sysctl"
	"github.com/wren-net/wren/pkg/tunnel"
)

// Annotations written on the agent's Node (SPEC.md "Names").
const (
	AnnotationIPv4     = "wren.network/ipv4-address"
	AnnotationVXLANIP  = "wren.network/ipv4-vxlan-tunnel-addr"
	AnnotationVXLANMAC = "wren.network/vxlan-tunnel-mac"
	AnnotationIPIPIP   = "wren.network/ipv4-ipip-tunnel-addr"
	AnnotationASNumber = "wren.network/as-number"
)

// Cluster is the agent's view of the Kubernetes API, implemented by
// pkg/cluster. Reads come from informer caches; Start pokes on every
// change and returns when the caches have synced.
type Cluster interface {
	Start(ctx context.Context, poke func()) error
	Nodes() ([]model.NodeInfo, error)
	Pools() ([]model.PoolMode, error)
	Blocks() ([]ipam.Block, error)
	BGPPeers() ([]model.BGPPeer, error)
	// BGPConfig is the BGPConfiguration named default, defaults filled in.
	BGPConfig() (model.BGPConfig, error)
	IPAMStore() ipam.Store
	// PublishNode merges annotations into the Node and sets its
	// NetworkUnavailable condition to False.
	PublishNode(ctx context.Context, name string, annotations map[string]string) error
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
	NodeIPMethod string         // see DetectNodeIP
	NetNS        netns.NsHandle // <= 0: the agent's own namespace
	Sysctl       sysctl.FS
	IfacePattern string // host MTU interfaces; tunnel.DefaultIfacePattern by default
	// BGP runs the node's BGP speaker (pkg/bgpspeaker) in the agent's
	// network namespace: it advertises the node's blocks and routes the
	// other nodes' blocks of pools without VXLAN from what it learns.
	BGP bool
	// Housekeeping is the period of IPAM housekeeping (empty blocks,
	// addresses of deleted pods, blocks of deleted nodes); default 1 min.
	Housekeeping time.Duration
	Runner       runner.Config
	Logger       *slog.Logger
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

	nl     *netlink.Handle
	kernel *routes.NetlinkKernel
	routes *routes.Reconciler
	tun    *tunnel.Reconciler
	arp    *proxyarp.Reconciler
	alloc  *ipam.Allocator
	run    *runner.Runner
	bgp    *bgpState // nil without Config.BGP; the loop's

	// wl orders veth changes against syncs: a sync holds it (write) from
	// reading the pinned workloads to the end of its Apply, CNI ADD and
	// DEL hold it (read) while they create or remove a veth and its
	// route. So a sync never sweeps the veth of an ADD it did not see,
	// nor complains about the veth of a DEL it still saw.
	wl sync.RWMutex

	// hk serializes housekeeping rounds (the minute ticker, Housekeep).
	hk sync.Mutex

	mu       sync.Mutex
	self     model.NodeInfo
	podMTU   int
	pinned   map[string]model.Workload // pods added by CNI ADD (the cache may not show them yet), by handle
	released map[string]time.Time      // handles removed by CNI DEL (the cache may still show them), and when
	started  uint64                    // syncs started
	done     uint64                    // highest sync number completed
}

// New builds an agent; it opens kernel handles but changes nothing yet.
func New(cfg Config, cluster Cluster) (*Agent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, cluster: cluster, log: cfg.Logger.With("component", "agent"), pinned: map[string]model.Workload{}, released: map[string]time.Time{}}
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
	if a.routes, err = routes.New(routes.Config{Logger: cfg.Logger.With("component", "routes")}, a.kernel); err != nil {
		return nil, err
	}
	a.tun = tunnel.New(tunnel.Config{Logger: cfg.Logger.With("component", "tunnel")}, a.nl)
	a.arp = proxyarp.New(proxyarp.Config{Sysctl: cfg.Sysctl, Logger: cfg.Logger.With("component", "proxyarp")}, a.nl)
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
	if err := proxyarp.EnableForwarding(a.cfg.Sysctl); err != nil {
		return err
	}
	// Caches first: nothing is applied before the agent knows the whole
	// cluster, so a restart deletes no route that is still wanted.
	a.log.Info("waiting for cluster caches")
	if err := a.cluster.Start(ctx, a.run.Poke); err != nil {
		return fmt.Errorf("start cluster watches: %w", err)
	}
	if err := a.register(ctx); err != nil {
		return err
	}
	alloc, err := ipam.New(ipam.Config{Node: a.cfg.NodeName, Logger: a.cfg.Logger.With("component", "ipam"), PoolSelected: a.poolSelected}, a.cluster.IPAMStore())
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
	errc := make(chan error, 2)
	go func() { errc <- w.Run(ctx, a.run.Poke) }()
	go func() { errc <- a.run.Run(ctx) }()
	go a.housekeeping(ctx)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("agent loop stopped: %w", err)
	}
}

// register detects the node IP, refuses a duplicate, and publishes the
// annotations (tunnel addresses follow once a VXLAN/IPIP pool exists).
func (a *Agent) register(ctx context.Context) error {
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
	ip, err := DetectNodeIP(a.cfg.NodeIPMethod, a.nl, func() (netip.Addr, error) {
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
				a.cfg.NodeName, ip.Addr.Addr(), n.Name, AnnotationIPv4, n.Name)
		}
	}
	self.IP = ip.Addr
	a.mu.Lock()
	a.self = self
	a.mu.Unlock()
	a.log.Info("node address", "ip", ip.Addr, "iface", ip.Iface, "method", a.cfg.NodeIPMethod)
	return a.cluster.PublishNode(ctx, a.cfg.NodeName, map[string]string{
		AnnotationIPv4:     ip.Addr.String(),
		AnnotationVXLANMAC: tunnel.VTEPMAC(a.cfg.NodeName).String(),
	})
}

// poolSelected reports whether IPAM may use pool p for this node: an
// enabled pool whose nodeSelector (a Calico selector) matches the node's
// labels. A selector that does not parse selects nothing and is reported
// on the pool.
func (a *Agent) poolSelected(p ipam.Pool) bool {
	if p.Disabled {
		return false
	}
	sel, err := selector.Parse(p.NodeSelector)
	if err != nil {
		a.cluster.Warn("IPPool", p.Name, "InvalidNodeSelector", fmt.Sprintf("spec.nodeSelector: %v; no node allocates from this pool until it is fixed", err))
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

// ensureTunnelAddr allocates and publishes the node's VXLAN tunnel
// address once a VXLAN pool exists, and its IPIP tunnel address (the
// address of tunl0, announced in wren.network/ipv4-ipip-tunnel-addr)
// once an IPIP pool exists. Both come from IPAM with a fixed handle, so
// a restart finds the same address.
func (a *Agent) ensureTunnelAddr(ctx context.Context, pools []model.PoolMode, self *model.Node) error {
	wantVXLAN, wantIPIP := false, false
	for _, p := range pools {
		wantVXLAN = wantVXLAN || (!p.Disabled && p.VXLAN != model.EncapNever && p.VXLAN != "")
		wantIPIP = wantIPIP || (!p.Disabled && p.IPIP != model.EncapNever && p.IPIP != "")
	}
	var errs []error
	if wantVXLAN && !self.VXLANTunnelIP.IsValid() {
		ip, err := a.tunnelAddr(ctx, "vxlan", AnnotationVXLANIP)
		if err != nil {
			errs = append(errs, fmt.Errorf("VXLAN tunnel address: %w", err))
		} else {
			self.VXLANTunnelIP = ip
			self.VTEPMAC = tunnel.VTEPMAC(a.cfg.NodeName)
		}
	}
	if wantIPIP && !self.IPIPTunnelIP.IsValid() {
		ip, err := a.tunnelAddr(ctx, "ipip", AnnotationIPIPIP)
		if err != nil {
			errs = append(errs, fmt.Errorf("IPIP tunnel address: %w", err))
		} else {
			self.IPIPTunnelIP = ip
		}
	}
	return errors.Join(errs...)
}

// tunnelAddr allocates the node's address with handle node/<node>/<kind>
// and publishes it in annotation.
func (a *Agent) tunnelAddr(ctx context.Context, kind, annotation string) (netip.Addr, error) {
	r, err := a.alloc.Allocate(ctx, ipam.Request{Handle: "node/" + a.cfg.NodeName + "/" + kind})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate: %w", err)
	}
	if err := a.cluster.PublishNode(ctx, a.cfg.NodeName, map[string]string{annotation: r.IP.String()}); err != nil {
		return netip.Addr{}, err
	}
	return r.IP, nil
}

// sync is one level-triggered run: read every input, build the desired
// state, apply tunnels, veths, routes in that order.
func (a *Agent) sync(ctx context.Context) error {
	a.mu.Lock()
	a.started++
	n := a.started
	a.mu.Unlock()
	err := a.syncOnce(ctx)
	a.mu.Lock()
	a.done = n
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
	a.mu.Lock()
	self := a.self
	a.mu.Unlock()
	var peers []model.Node
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			// Our published tunnel address, as other nodes see it.
			if !self.VXLANTunnelIP.IsValid() && n.VXLANTunnelIP.IsValid() {
				self.VXLANTunnelIP, self.VTEPMAC = n.VXLANTunnelIP, n.VTEPMAC
			}
			if !self.IPIPTunnelIP.IsValid() && n.IPIPTunnelIP.IsValid() {
				self.IPIPTunnelIP = n.IPIPTunnelIP
			}
			continue
		}
		peers = append(peers, n.Node)
	}
	var errs []error
	if err := a.ensureTunnelAddr(ctx, pools, &self.Node); err != nil {
		errs = append(errs, err)
	}
	a.mu.Lock()
	a.self.VXLANTunnelIP, a.self.VTEPMAC, a.self.IPIPTunnelIP = self.VXLANTunnelIP, self.VTEPMAC, self.IPIPTunnelIP
	a.mu.Unlock()

	mtu, err := tunnel.HostMTU(a.nl, regexp.MustCompile(a.cfg.IfacePattern))
	if err != nil {
		return err
	}
	uplink, err := a.uplink(self.IP)
	if err != nil {
		return err
	}
	in := Inputs{Self: self.Node, Nodes: peers, Pools: pools, Blocks: blocks, HostMTU: mtu, Uplink: uplink}
	// Labels (the route-reflector label) from the cache, the address as
	// this agent detected it.
	me := self
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			me.Labels, me.Annotations = n.Labels, n.Annotations
		}
	}
	var bgpCfg model.BGPConfig
	if a.bgp != nil {
		if bgpCfg, err = a.cluster.BGPConfig(); err != nil {
			return err
		}
		a.bgpInputs(&in, nodes, bgpCfg)
	}
	podMTU := mtu
	if d, _ := Build(in); d.PodMTU != 0 {
		podMTU = d.PodMTU
	}

	_, _, apiDown := a.cluster.APIDown()
	a.wl.Lock()
	defer a.wl.Unlock()
	a.mu.Lock()
	pinned := make([]model.Workload, 0, len(a.pinned))
	for _, w := range a.pinned {
		pinned = append(pinned, w)
	}
	released := a.pruneReleased(blocks, apiDown)
	a.mu.Unlock()
	in.Workloads = localWorkloads(a.cfg.NodeName, blocks, pinned, released, podMTU)
	d, berrs := Build(in)
	for _, e := range berrs {
		a.log.Debug("not routed", "reason", e)
	}
	a.mu.Lock()
	a.podMTU = d.PodMTU
	a.mu.Unlock()
	a.tun.Set(d.Tunnels)
	a.arp.Set(d.Workloads)
	a.routes.Set(d.Routes)
	errs = append(errs, a.tun.Apply(ctx), a.arp.Apply(ctx), a.routes.Apply(ctx))
	if a.bgp != nil {
		// Paths before peers: the node's advertisements are in place
		// before any session is added or changed.
		errs = append(errs, a.bgp.speaker.SetAdvertisements(ctx, d.Advertise, self.IP.Addr()))
		errs = append(errs, a.applyBGP(ctx, in, me, nodes, bgpCfg))
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
		if _, err := a.nl.RouteGet(p.IP.AsSlice()); err != nil {
			a.cluster.Warn("BGPPeer", p.Name, "PeerUnreachable",
				fmt.Sprintf("spec.peerIP %s is unreachable from node %s (%v); fix the address or the node's routes", p.IP, a.cfg.NodeName, err))
		}
	}
}

// uplink is the interface carrying the node IP (the VXLAN parent and the
// device of direct routes).
func (a *Agent) uplink(ip netip.Prefix) (string, error) {
	res, err := DetectNodeIP("cidr="+netip.PrefixFrom(ip.Addr(), 32).String(), a.nl, nil)
	if err != nil {
		return "", fmt.Errorf("find the interface of node IP %s: %w", ip, err)
	}
	return res.Iface, nil
}

// localWorkloads are this node's pods: the addresses IPAM recorded for it
// (which survive agent restarts) plus CNI ADDs in flight.
func localWorkloads(node string, blocks []ipam.Block, pinned []model.Workload, released map[string]bool, mtu int) []model.Workload {
	seen := map[netip.Addr]bool{}
	var ws []model.Workload
	for _, w := range pinned {
		w.MTU = mtu
		ws = append(ws, w)
		seen[w.IP] = true
	}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Node != node || al.Pod == "" || seen[al.IP] || released[al.Handle] {
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
// from the stale cache as a local pod. a.mu is held.
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

// forget drops the workloads of handles GC released (pods deleted without
// a CNI DEL): a pinned workload would keep the old pod's /32 and veth,
// and once its address is handed out again the node would route it to
// two veths. The next sync removes the veth.
func (a *Agent) forget(handles []string) {
	if len(handles) == 0 {
		return
	}
	a.mu.Lock()
	for _, h := range handles {
		delete(a.pinned, h)
		a.released[h] = time.Now()
	}
	a.mu.Unlock()
	a.run.Poke()
}

// Ready reports whether the node is registered and one full sync has
// completed since start (served on /readyz).
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.alloc == nil:
		return errors.New("registering the node")
	case a.done == 0:
		return errors.New("first sync not completed")
	}
	return nil
}
