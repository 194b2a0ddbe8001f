package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
)

// Finding is what one source says about an address.
type Finding struct {
	Source string // "ipam", "bgp", "kernel" or "veth"
	Says   string
	OK     bool
}

// ExplainView follows one address through IPAM, BGP, the kernel and the
// veth of a local pod.
type ExplainView struct {
	IP    netip.Addr
	Pool  string
	Block netip.Prefix
	// BlockNode is the block's affinity; HostNode the node that should
	// host the address (the allocation's node, which differs for a
	// borrowed address).
	BlockNode, HostNode string
	Pod                 string
	Findings            []Finding
	// OK: every source agrees and the address is reachable; Verdict is
	// "reachable via …" or the first inconsistency with the fix to try.
	OK      bool
	Verdict string
}

func (v *ExplainView) say(source string, ok bool, format string, args ...any) {
	v.Findings = append(v.Findings, Finding{Source: source, Says: fmt.Sprintf(format, args...), OK: ok})
}

// fail ends the explanation at the first inconsistency.
func (v *ExplainView) fail(verdict string, args ...any) ExplainView {
	v.OK, v.Verdict = false, fmt.Sprintf(verdict, args...)
	return *v
}

// Explain follows ip through the cluster's IPAM (the informer cache), the
// speaker's best paths, the kernel's routing decision (ip route get) and,
// for a pod on this node, its veth. It stops at the first inconsistency.
func (a *Agent) Explain(ctx context.Context, ip netip.Addr) (ExplainView, error) {
	v := ExplainView{IP: ip}
	if !ip.Is4() {
		return v, errors.New("only IPv4 addresses are managed by Wren")
	}
	pools, err := a.cluster.Pools()
	if err != nil {
		return v, err
	}
	blocks, err := a.cluster.Blocks()
	if err != nil {
		return v, err
	}
	nodes, err := a.cluster.Nodes()
	if err != nil {
		return v, err
	}

	// IPAM.
	var pool *model.Pool
	for i := range pools {
		if pools[i].CIDR.Contains(ip) {
			pool = &pools[i]
			break
		}
	}
	if pool == nil {
		v.say("ipam", false, "%s is in no IPPool", ip)
		return v.fail("%s is in no IPPool, so it is no pod address Wren manages or routes (kubectl get ippools lists the pools)", ip), nil
	}
	v.Pool = pool.Name
	var block *ipam.Block
	for i := range blocks {
		if blocks[i].CIDR.Contains(ip) {
			block = &blocks[i]
			break
		}
	}
	if block == nil {
		v.say("ipam", false, "%s is in IPPool %s (%s), but no node has claimed a block holding it", ip, pool.Name, pool.CIDR)
		return v.fail("no pod holds %s: no IPAM block covers it yet", ip), nil
	}
	v.Block, v.BlockNode = block.CIDR, block.Affinity
	var alloc *ipam.Allocation
	for i := range block.Allocations {
		if block.Allocations[i].IP == ip {
			alloc = &block.Allocations[i]
			break
		}
	}
	if alloc == nil {
		if settings, err := a.cluster.IPAMSettings(); err == nil {
			if r, ok := ipam.FindReservation(settings.Reservations, ip); ok {
				v.say("ipam", false, "%s is reserved by IPReservation %s (%s) in block %s of node %s (IPPool %s): IPAM never hands it out", ip, r.Name, r.CIDR, block.CIDR, orNone(block.Affinity), pool.Name)
				return v.fail("no pod holds %s: IPReservation %s reserves it", ip, r.Name), nil
			}
		}
		v.say("ipam", false, "%s is free in block %s of node %s (IPPool %s)", ip, block.CIDR, orNone(block.Affinity), pool.Name)
		return v.fail("no pod holds %s: it is free in block %s", ip, block.CIDR), nil
	}
	v.HostNode = alloc.Node
	if v.HostNode == "" {
		v.HostNode = block.Affinity
	}
	owner := "handle " + alloc.Handle
	switch {
	case alloc.Pod != "":
		v.Pod = alloc.Namespace + "/" + alloc.Pod
		owner = "pod " + v.Pod
	default:
		if node, kind, ok := ipam.ParseNodeHandle(alloc.Handle); ok {
			owner = fmt.Sprintf("node %s's %s tunnel address", node, kind)
		}
	}
	borrowed := ""
	if v.HostNode != block.Affinity {
		borrowed = fmt.Sprintf(", borrowed: the block is node %s's", orNone(block.Affinity))
	}
	v.say("ipam", true, "%s is allocated to %s on node %s (block %s, IPPool %s%s)", ip, owner, v.HostNode, block.CIDR, pool.Name, borrowed)
	if pool.Disabled {
		v.say("ipam", true, "IPPool %s is disabled: no new addresses come from it, existing ones are still routed", pool.Name)
	}

	h, err := a.handle()
	if err != nil {
		return v, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	if v.HostNode == a.cfg.NodeName {
		return a.explainLocal(h, &v), nil
	}
	var host *model.NodeInfo
	for i := range nodes {
		if nodes[i].Name == v.HostNode {
			host = &nodes[i]
		}
	}
	if host == nil {
		return v.fail("node %s, which should host %s, has no Node object: the address is leaked (its pod went with the node)", v.HostNode, ip), nil
	}
	return a.explainRemote(h, &v, *pool, *host), nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// explainLocal checks the veth and the /32 of a pod on this node.
func (a *Agent) explainLocal(h *netlink.Handle, v *ExplainView) ExplainView {
	snap := a.LastSnapshot()
	var w *model.Workload
	if snap != nil {
		for i := range snap.Workloads {
			if snap.Workloads[i].IP == v.IP {
				w = &snap.Workloads[i]
			}
		}
	}
	if w == nil {
		v.say("veth", false, "the agent's last run wired no pod with %s", v.IP)
		return v.fail("%s is this node's, but the agent has not wired a pod with it: a CNI ADD may be in flight, or the pod is gone and its address leaked (wrenctl ipam show)", v.IP)
	}
	l, err := h.LinkByName(w.HostIface)
	if err != nil {
		v.say("veth", false, "%s for pod %s is not in the kernel: %v", w.HostIface, w.Key(), err)
		return v.fail("pod %s's veth %s is missing: the agent recreates it on its next run; if it stays missing, the pod's network namespace is gone (delete the pod)", w.Key(), w.HostIface)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		v.say("veth", false, "%s for pod %s is down", w.HostIface, w.Key())
		return v.fail("pod %s's veth %s is down: the agent sets it up on its next run", w.Key(), w.HostIface)
	}
	v.say("veth", true, "%s is up (MTU %d) for pod %s", w.HostIface, l.Attrs().MTU, w.Key())
	return a.explainKernel(h, v, w.HostIface, netip.Addr{}, fmt.Sprintf("pod %s on this node", w.Key()))
}

// explainRemote checks the BGP best path (for a pool routed by BGP) and
// the kernel's route to a pod on another node.
func (a *Agent) explainRemote(h *netlink.Handle, v *ExplainView, pool model.Pool, host model.NodeInfo) ExplainView {
	where := fmt.Sprintf("node %s", host.Name)
	if v.Pod != "" {
		where = fmt.Sprintf("pod %s on node %s", v.Pod, host.Name)
	}
	if pool.VXLAN != model.EncapNever {
		v.say("bgp", true, "IPPool %s uses VXLAN (%s): the route comes from the IPAM block, not from BGP", pool.Name, pool.VXLAN)
		if pool.VXLAN == model.EncapAlways && host.VXLANTunnelIP.IsValid() {
			return a.explainKernel(h, v, tunnel.VXLANName, host.VXLANTunnelIP, where)
		}
		return a.explainKernel(h, v, "", netip.Addr{}, where)
	}
	b := a.bgpOf()
	if b == nil {
		v.say("bgp", false, "BGP is off on this node")
		return v.fail("%s is in IPPool %s, which is routed by BGP, but BGP is off on this node (--bgp=false)", v.IP, pool.Name)
	}
	var best netip.Prefix
	var nextHop, peer netip.Addr
	for p, r := range b.speaker.Learned() {
		if p.Contains(v.IP) && (!best.IsValid() || p.Bits() > best.Bits()) {
			best, nextHop, peer = p, r.NextHop, r.PeerAddr
		}
	}
	if !best.IsValid() {
		v.say("bgp", false, "no best path covers %s", v.IP)
		return v.fail("no BGP route covers %s: node %s does not announce block %s to this node; run wrenctl status on both nodes (is the session Established? does %s advertise its blocks?)", v.IP, host.Name, v.Block, host.Name)
	}
	v.say("bgp", true, "best path %s via %s, from peer %s", best, nextHop, peer)
	return a.explainKernel(h, v, "", netip.Addr{}, where)
}

// explainKernel asks the kernel how it routes v.IP (ip route get, with the
// matching entry) and checks it is Wren's route, through dev (if set) and
// gw (if valid).
func (a *Agent) explainKernel(h *netlink.Handle, v *ExplainView, dev string, gw netip.Addr, where string) ExplainView {
	rs, err := h.RouteGetWithOptions(v.IP.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil || len(rs) == 0 {
		v.say("kernel", false, "no route to %s (%v)", v.IP, err)
		return v.fail("the kernel has no route to %s: the agent programs it on its next run; if that does not help, its log says why", v.IP)
	}
	r := rs[0]
	text := kernelRouteText(h, r)
	if r.Protocol != routes.Protocol {
		v.say("kernel", false, "the kernel routes %s by %s, which is not Wren's", v.IP, text)
		if wren, ok := a.wrenRouteFor(v.IP); ok {
			return v.fail("a foreign route (%s) wins over Wren's %s: delete it (ip route del %s) if it is a leftover", text, wren, prefixOf(r))
		}
		return v.fail("the kernel has no Wren route for %s and routes it by %s instead: a Wren route deleted by hand? The agent restores it on its next run; if it does not, a foreign route holds the destination (delete it) or the agent's log says why", v.IP, text)
	}
	if r.Type == routes.TypeBlackhole {
		v.say("kernel", false, "%s is blackholed by %s", v.IP, text)
		return v.fail("the kernel blackholes %s: the block is this node's but no pod here holds the address (wrenctl ipam show)", v.IP)
	}
	name := ""
	if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
		name = l.Attrs().Name
	}
	if dev != "" && name != dev {
		v.say("kernel", false, "%s goes by %s, not dev %s", v.IP, text, dev)
		return v.fail("Wren's route to %s goes by %s instead of dev %s: the agent corrects it on its next run", v.IP, text, dev)
	}
	if gw.IsValid() {
		got, _ := netip.AddrFromSlice(r.Gw.To4())
		if got != gw {
			v.say("kernel", false, "%s goes by %s, not via %s", v.IP, text, gw)
			return v.fail("Wren's route to %s goes by %s instead of via %s: the agent corrects it on its next run", v.IP, text, gw)
		}
	}
	v.say("kernel", true, "%s", text)
	v.OK, v.Verdict = true, fmt.Sprintf("reachable via %s (%s)", text, where)
	return *v
}

// wrenRouteFor is Wren's longest route covering ip, as text.
func (a *Agent) wrenRouteFor(ip netip.Addr) (string, bool) {
	krs, err := a.KernelRoutes(context.Background())
	if err != nil {
		return "", false
	}
	best := -1
	for i, k := range krs {
		if k.Route.Dst.Contains(ip) && (best < 0 || k.Route.Dst.Bits() > krs[best].Route.Dst.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	return krs[best].Text(), true
}

func prefixOf(r netlink.Route) string {
	if r.Dst == nil || r.Dst.IP.IsUnspecified() {
		return "default"
	}
	return r.Dst.String()
}

// kernelRouteText renders a netlink route like ip route does, briefly.
func kernelRouteText(h *netlink.Handle, r netlink.Route) string {
	var b strings.Builder
	if r.Type == routes.TypeBlackhole {
		b.WriteString("blackhole ")
	}
	if r.Dst == nil || r.Dst.IP.IsUnspecified() && r.Dst.Mask != nil && net.IP(r.Dst.Mask).IsUnspecified() {
		b.WriteString("default")
	} else if ones, bits := r.Dst.Mask.Size(); ones == bits {
		b.WriteString(r.Dst.IP.String())
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw != nil {
		b.WriteString(" via " + r.Gw.String())
	}
	if l, err := h.LinkByIndex(r.LinkIndex); err == nil && r.LinkIndex != 0 {
		b.WriteString(" dev " + l.Attrs().Name)
	}
	if name, ok := protoNames[int(r.Protocol)]; ok {
		b.WriteString(" proto " + name)
	} else {
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	return b.String()
}

// protoNames are the route protocols `ip route` names on most systems
// (/etc/iproute2/rt_protos), and Wren's.
var protoNames = map[int]string{2: "kernel", 3: "boot", 4: "static", 12: "bird", 16: "dhcp", routes.Protocol: "wren"}
