package agent

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/nodeip"
	"github.com/wren-net/wren/pkg/tunnel"
)

// The loop's collaborators, as the small interfaces it uses: New wires the
// real ones (pkg/tunnel, pkg/proxyarp, pkg/routes, pkg/bgpspeaker, netlink),
// the fake tier (agent_fake_test.go) drives the same loop with fakes.

type tunnelReconciler interface {
	Set(model.Tunnels)
	Apply(context.Context) error
}

type podReconciler interface {
	Set([]model.Workload)
	Apply(context.Context) error
	Pin(model.Workload)
	Unpin(hostIface string)
}

type routeReconciler interface {
	Set([]model.Route)
	Apply(context.Context) error
	Delta(ctx context.Context, up []model.Route, down []netip.Prefix) error
	AddNow(rt model.Route, oif int) error
	Pin(dst netip.Prefix)
	Unpin(dst netip.Prefix)
	Programmed() map[model.RouteKind]int
}

// host answers the loop's questions about the node's own interfaces.
type host interface {
	// HostMTU is the smallest MTU of the physical-looking interfaces.
	HostMTU() (int, error)
	// Uplink names the interface that carries ip.
	Uplink(ip netip.Prefix) (string, error)
	// Reachable reports whether the node has a route to ip.
	Reachable(ip netip.Addr) error
}

// speaker is what the loop needs of the BGP speaker.
type speaker interface {
	bgpsession.Speaker
	SetAdvertisements(ctx context.Context, desired []netip.Prefix, nextHop netip.Addr) error
	SetPolicy(ctx context.Context, p bgpspeaker.Policy) error
	Learned() map[netip.Prefix]bgpspeaker.Route
	Drain(buf []bgpspeaker.Change) []bgpspeaker.Change
	Changed() <-chan struct{}
	Status(ctx context.Context) (bgpspeaker.Status, error)
	Rejected(ctx context.Context) (map[netip.Addr]int, error)
	RejectedPaths(ctx context.Context, within netip.Prefix, most int) ([]bgpspeaker.RejectedPath, int, error)
}

var (
	_ speaker = (*bgpspeaker.Speaker)(nil)
	_ host    = netlinkHost{}
)

// netlinkHost is host over a netlink handle in the node's namespace.
type netlinkHost struct {
	nl    *netlink.Handle
	iface *regexp.Regexp
}

func (h netlinkHost) HostMTU() (int, error) { return tunnel.HostMTU(h.nl, h.iface) }

func (h netlinkHost) Uplink(ip netip.Prefix) (string, error) {
	res, err := nodeip.Detect("cidr="+netip.PrefixFrom(ip.Addr(), 32).String(), h.nl, nil)
	if err != nil {
		return "", fmt.Errorf("find the interface of node IP %s: %w", ip, err)
	}
	return res.Iface, nil
}

func (h netlinkHost) Reachable(ip netip.Addr) error {
	_, err := h.nl.RouteGet(ip.AsSlice())
	return err
}
