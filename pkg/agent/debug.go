package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
)

// The debug API's views (pkg/debugserver) besides Status. Each reads the
// loop's last snapshot, the kernel through sockets of its own and the
// speaker; none takes a lock the loop holds while it works.

// KernelRouteView is one route of Wren's protocol in the main table.
type KernelRouteView struct {
	Route  routes.KRoute
	Device string // the name of Route.Oif, "" for none
}

// Text is the route as `ip route` prints it.
func (k KernelRouteView) Text() string {
	r := k.Route
	var b strings.Builder
	if r.Type == routes.TypeBlackhole {
		b.WriteString("blackhole ")
	}
	if r.Dst.IsSingleIP() {
		b.WriteString(r.Dst.Addr().String()) // as ip route prints a host route
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if k.Device != "" {
		b.WriteString(" dev " + k.Device)
	} else if r.Oif != 0 {
		fmt.Fprintf(&b, " dev if%d", r.Oif)
	}
	b.WriteString(" proto wren")
	if r.Scope == routes.ScopeLink {
		b.WriteString(" scope link")
	}
	if r.Flags&routes.FlagOnLink != 0 {
		b.WriteString(" onlink")
	}
	if r.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", r.MTU)
	}
	return b.String()
}

// KernelRoutes lists the routes of Wren's protocol in the main table as
// the kernel has them now, by destination.
func (a *Agent) KernelRoutes(ctx context.Context) ([]KernelRouteView, error) {
	krs, err := routes.Dump(a.cfg.NetNS, routes.MainTable, routes.Protocol)
	if err != nil {
		return nil, fmt.Errorf("list the kernel's routes: %w", err)
	}
	names, err := a.linkNames()
	if err != nil {
		return nil, err
	}
	out := make([]KernelRouteView, 0, len(krs))
	for _, k := range krs {
		out = append(out, KernelRouteView{Route: k, Device: names[k.Oif]})
	}
	slices.SortFunc(out, func(x, y KernelRouteView) int { return x.Route.Dst.Compare(y.Route.Dst) })
	return out, nil
}

// handle opens a netlink handle of its own in the node's namespace.
func (a *Agent) handle() (*netlink.Handle, error) {
	if a.cfg.NetNS > 0 {
		return netlink.NewHandleAt(a.cfg.NetNS)
	}
	return netlink.NewHandle()
}

// listLinks lists the links; a dump the kernel flags as interrupted (a
// link changed meanwhile) is good enough for a debug view.
func listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	ls, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return ls, nil
}

// linkNames maps interface indexes to names.
func (a *Agent) linkNames() (map[int]string, error) {
	h, err := a.handle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	ls, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	m := make(map[int]string, len(ls))
	for _, l := range ls {
		m[l.Attrs().Index] = l.Attrs().Name
	}
	return m, nil
}

// RouteView is one learned best path and what the kernel does with it.
type RouteView struct {
	Prefix    netip.Prefix
	NextHop   netip.Addr
	Peer      netip.Addr
	ASPathLen int
	// Programmed: the kernel has Wren's route for the prefix, as Kernel.
	Programmed bool
	Kernel     string
	// WhyNot says why it is not programmed (or, for a held route, why it
	// is still there).
	WhyNot string
	// Held: BGP no longer announces it; the agent keeps it for now.
	Held bool
	// Rejected: a path the import policy refused (no best path; NextHop
	// unknown).
	Rejected bool
}

// RoutesView is the learned routes, and the rejected paths up to
// MaxRejected of them.
type RoutesView struct {
	Routes []RouteView
	// RejectedNotListed counts the rejected paths past MaxRejected.
	RejectedNotListed int
}

// MaxRejected bounds the rejected paths Routes lists (a peer sending a
// full Internet table has a million).
const MaxRejected = 1000

// Routes lists the best paths learned over BGP, the routes the session
// controller holds and the paths the import policy rejected, inside
// within when it is valid, each with whether the kernel has it and if not
// why.
func (a *Agent) Routes(ctx context.Context, within netip.Prefix) (RoutesView, error) {
	rs, err := a.routesView(ctx, within)
	if err != nil {
		return RoutesView{}, err
	}
	b := a.bgpOf()
	rej, total, err := b.speaker.RejectedPaths(ctx, within, MaxRejected)
	if err != nil {
		return RoutesView{}, err
	}
	snap := a.LastSnapshot()
	for _, r := range rej {
		why := "rejected by the import policy"
		if snap.Shaper != nil {
			if w := snap.Shaper.WhyNot(r.Prefix); w != "" {
				why += ": " + w
			}
		}
		rs = append(rs, RouteView{Prefix: r.Prefix, Peer: r.Peer, Rejected: true, WhyNot: why})
	}
	slices.SortStableFunc(rs, func(x, y RouteView) int { return x.Prefix.Compare(y.Prefix) })
	return RoutesView{Routes: rs, RejectedNotListed: total - len(rej)}, nil
}

func (a *Agent) routesView(ctx context.Context, within netip.Prefix) ([]RouteView, error) {
	b := a.bgpOf()
	if b == nil {
		return nil, errors.New("BGP is off on this node")
	}
	snap := a.LastSnapshot()
	if snap == nil {
		return nil, errors.New("the agent has not completed its first sync yet")
	}
	kr, err := a.KernelRoutes(ctx)
	if err != nil {
		return nil, err
	}
	kernel := make(map[netip.Prefix]KernelRouteView, len(kr))
	for _, k := range kr {
		kernel[k.Route.Dst] = k
	}
	in := func(p netip.Prefix) bool {
		return !within.IsValid() || within.Overlaps(p) && within.Bits() <= p.Bits()
	}
	var out []RouteView
	for p, r := range b.speaker.Learned() {
		if !in(p) {
			continue
		}
		v := RouteView{Prefix: p, NextHop: r.NextHop, Peer: r.PeerAddr, ASPathLen: r.ASPathLen}
		k, inKernel := kernel[p]
		if inKernel {
			v.Programmed, v.Kernel = true, k.Text()
		}
		switch {
		case snap.Shaper == nil:
		case snap.Shaper.WhyNot(p) != "":
			v.WhyNot = snap.Shaper.WhyNot(p)
		default:
			want, _, err := snap.Shaper.Route(model.LearnedRoute{Prefix: p, NextHop: r.NextHop, Peer: r.PeerAddr})
			switch {
			case err != nil:
				v.WhyNot = err.Error()
			case !inKernel:
				v.WhyNot = "not in the kernel (wanted: " + want.String() + "); a failed write is retried and a route deleted by hand is repaired"
			case k.Route.Gw != want.Gateway:
				v.WhyNot = "the kernel's route differs from the wanted " + want.String() + "; the agent repairs it"
			}
		}
		out = append(out, v)
	}
	for _, h := range snap.Held {
		p := h.Route.Prefix
		if !in(p) || slices.ContainsFunc(out, func(v RouteView) bool { return v.Prefix == p }) {
			continue
		}
		v := RouteView{Prefix: p, NextHop: h.Route.NextHop, Peer: h.Route.Peer, Held: true}
		if k, ok := kernel[p]; ok {
			v.Programmed, v.Kernel = true, k.Text()
		}
		if h.Since.IsZero() {
			v.WhyNot = "held: kept from the agent's previous run until its sessions have sent their tables (End-of-RIB)"
		} else {
			v.WhyNot = "held: withdrawn by " + h.Route.Peer.String() + " at " + h.Since.Format("15:04:05") + "; kept while its session is being replaced or lost (see docs/bgp.md)"
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y RouteView) int { return x.Prefix.Compare(y.Prefix) })
	return out, nil
}

// TunnelView is a tunnel device as the kernel has it.
type TunnelView struct {
	Name    string
	Kind    string // "vxlan" or "ipip"
	Address netip.Addr
	MTU     int
	MAC     string
	Up      bool
	Missing bool // wanted by the last run but not in the kernel
}

// VethView is a cali veth and the pod it serves.
type VethView struct {
	Name        string
	MTU         int
	Up          bool
	Pod         string // "namespace/name"; "" for a veth no local pod has
	ContainerID string
	IP          netip.Addr
	Missing     bool // wanted by the last run but not in the kernel
}

// Links lists the tunnel devices and the cali veths, with the pod each
// serves.
func (a *Agent) Links(ctx context.Context) ([]TunnelView, []VethView, error) {
	h, err := a.handle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	ls, err := listLinks(h)
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]netlink.Link{}
	for _, l := range ls {
		byName[l.Attrs().Name] = l
	}
	up := func(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }

	var tunnels []TunnelView
	snap := a.LastSnapshot()
	wantTunnel := map[string]bool{}
	if snap != nil {
		if snap.Tunnels.VXLAN != nil {
			wantTunnel[tunnel.VXLANName] = true
		}
		if snap.Tunnels.IPIP != nil {
			wantTunnel[tunnel.IPIPName] = true
		}
	}
	for _, t := range []struct{ name, kind string }{{tunnel.VXLANName, "vxlan"}, {tunnel.IPIPName, "ipip"}} {
		l, ok := byName[t.name]
		if !ok {
			if wantTunnel[t.name] {
				tunnels = append(tunnels, TunnelView{Name: t.name, Kind: t.kind, Missing: true})
			}
			continue
		}
		v := TunnelView{Name: t.name, Kind: t.kind, MTU: l.Attrs().MTU, Up: up(l)}
		if t.kind == "vxlan" {
			v.MAC = l.Attrs().HardwareAddr.String()
		}
		if addrs, err := h.AddrList(l, netlink.FAMILY_V4); err == nil && len(addrs) > 0 {
			v.Address, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		}
		tunnels = append(tunnels, v)
	}

	var veths []VethView
	seen := map[string]bool{}
	if snap != nil {
		for _, w := range snap.Workloads {
			seen[w.HostIface] = true
			v := VethView{Name: w.HostIface, Pod: w.Key(), ContainerID: w.ContainerID, IP: w.IP}
			if l, ok := byName[w.HostIface]; ok {
				v.MTU, v.Up = l.Attrs().MTU, up(l)
			} else {
				v.Missing = true
			}
			veths = append(veths, v)
		}
	}
	for name, l := range byName {
		if strings.HasPrefix(name, "cali") && !seen[name] {
			veths = append(veths, VethView{Name: name, MTU: l.Attrs().MTU, Up: up(l)})
		}
	}
	slices.SortFunc(veths, func(x, y VethView) int { return strings.Compare(x.Name, y.Name) })
	return tunnels, veths, nil
}
