//go:build linux

package nstest_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/proxyarp"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestBadInputCluster feeds node-a several broken objects at once — an
// invalid route prefix, a route through a missing device, a VTEP with no
// MAC, a workload whose veth is missing, a pod whose namespace vanished
// during setup, and a foreign link squatting on a pod's veth name. Each
// is reported by name, nothing panics, and the rest of the cluster still
// works end to end.
func TestBadInputCluster(t *testing.T) {
	c := newCluster(t, vxlanAlways, false)
	a := c.nodes[0]
	if err := c.converge(t, vxlanAlways); err != nil {
		t.Fatal(err)
	}

	// A pod whose namespace is deleted between creation and setup.
	gone := nstest.New(t, "gone")
	goneW := model.Workload{Namespace: "default", Name: "vanished", HostIface: proxyarp.VethName("default", "vanished"),
		IP: netip.MustParseAddr("10.244.1.20"), MTU: 1450}
	nsHandle := gone.Handle
	gone.Delete(t) // deletes the name and closes the handle
	err := proxyarp.SetupPodWith(context.Background(), a.ns.NL, a.sys, nsHandle, goneW, "eth0")
	if err == nil || !strings.Contains(err.Error(), "default/vanished") {
		t.Fatalf("setup into a vanished namespace: %v", err)
	}
	if _, lerr := a.ns.NL.LinkByName(goneW.HostIface); lerr == nil {
		t.Fatalf("half-made host veth %s left behind", goneW.HostIface)
	}

	// A foreign link (a bridge) squatting on a pod's cali name.
	squat := proxyarp.VethName("default", "squatted")
	la := netlink.NewLinkAttrs()
	la.Name = squat
	if err := a.ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}

	// Extend the good plan with the bad objects.
	tun, ws, rs := a.desired(vxlanAlways, c.nodes)
	tun.VTEPs = append(tun.VTEPs, model.VTEP{Node: "node-nomac", NodeIP: netip.MustParseAddr("198.18.0.99"), TunnelIP: netip.MustParseAddr("10.244.9.0")})
	ws = append(ws,
		model.Workload{Namespace: "default", Name: "no-veth", HostIface: proxyarp.VethName("default", "no-veth"), IP: netip.MustParseAddr("10.244.1.30"), MTU: 1450},
		model.Workload{Namespace: "default", Name: "squatted", HostIface: squat, IP: netip.MustParseAddr("10.244.1.31"), MTU: 1450},
	)
	rs = append(rs,
		model.Route{Dst: netip.PrefixFrom(netip.MustParseAddr("10.244.1.7"), 24), Kind: model.RouteBlackhole}, // host bits
		model.Route{Dst: netip.MustParsePrefix("10.244.1.30/32"), Kind: model.RoutePod, Device: proxyarp.VethName("default", "no-veth")},
	)
	a.tun.Set(tun)
	a.arp.Set(ws)
	a.routes.Set(rs)
	err = a.apply(context.Background())
	if err == nil {
		t.Fatal("apply with bad objects returned nil")
	}
	for _, want := range []string{"node-nomac", "default/no-veth", squat, "10.244.1.7/24", "10.244.1.30/32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	t.Logf("errors reported:\n%v", err)
	// The squatting bridge is untouched and everything good still works.
	if l, lerr := a.ns.NL.LinkByName(squat); lerr != nil || l.Type() != "bridge" || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("foreign link %s changed: %v %v", squat, l, lerr)
	}
	for _, n := range c.nodes {
		assertNodeState(t, n, vxlanAlways, c.nodes)
	}
	c.pingAll(t)
}
