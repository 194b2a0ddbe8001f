//go:build linux

package nstest_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wren-net/wren/pkg/netwatch"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/runner"
	"github.com/wren-net/wren/pkg/tunnel"
	nstest "github.com/wren-net/wren/test/netns"
	"golang.org/x/sys/unix"
)

// repairDeadline is the bound: damage is undone within a second.
const repairDeadline = time.Second

// startLoop runs the node's reconcilers the way the agent will: a runner
// poked by netlink notifications from the node's namespace.
func (n *node) startLoop(t *testing.T) {
	t.Helper()
	ports, err := n.kernel.PortIDs()
	if err != nil {
		t.Fatal(err)
	}
	w, err := netwatch.New(netwatch.Config{NS: n.ns.Handle, IgnorePorts: ports, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(runner.Config{MinInterval: 50 * time.Millisecond, RetryMin: 50 * time.Millisecond, Logger: quiet}, n.apply)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	done := make(chan struct{}, 2)
	go func() { _ = w.Run(ctx, r.Poke); done <- struct{}{} }()
	go func() { _ = r.Run(ctx); done <- struct{}{} }()
	// Stop both before the namespaces go away (cleanups run in reverse).
	t.Cleanup(func() { <-done; <-done })
}

// ownRoute returns the node's own route to dst, or an error.
func ownRoute(n *node, dst string) (netlink.Route, error) {
	_, ipn, _ := net.ParseCIDR(dst)
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: ipn},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return netlink.Route{}, err
	}
	for _, r := range rs {
		if r.Protocol == routes.Protocol {
			return r, nil
		}
	}
	return netlink.Route{}, fmt.Errorf("no proto wren route to %s (have %v)", dst, rs)
}

func fdbFor(n *node, peer *node) error {
	l, err := n.ns.NL.LinkByName(tunnel.VXLANName)
	if err != nil {
		return err
	}
	fdb, err := n.ns.NL.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	mac := tunnel.VTEPMAC(peer.name).String()
	for _, f := range fdb {
		if f.HardwareAddr.String() == mac && f.IP.String() == peer.addr.Addr().String() && f.State&unix.NUD_PERMANENT != 0 {
			return nil
		}
	}
	return fmt.Errorf("no permanent fdb %s dst %s", mac, peer.addr.Addr())
}

// TestRepair damages a running node behind Wren's back in each way the
// issue lists and times the repair; a foreign route in the pool range
// survives everything, and a stale own route from a previous run goes.
func TestRepair(t *testing.T) {
	c := newCluster(t, vxlanAlways, false)
	a, b := c.nodes[0], c.nodes[1]
	a.ns.AddRoute(t, "blackhole", "10.244.50.0/26", "proto", "87")              // stale, "previous run"
	a.ns.AddRoute(t, "10.244.60.0/26", "via", "198.18.0.12", "proto", "static") // foreign
	for _, n := range c.nodes {
		n.plan(vxlanAlways, c.nodes)
		n.startLoop(t)
	}
	nstest.Poll(t, 5*time.Second, "first sync", func() error {
		if _, err := ownRoute(a, "10.244.2.0/26"); err != nil {
			return err
		}
		if _, err := ownRoute(a, "10.244.50.0/26"); err == nil {
			return fmt.Errorf("stale own route 10.244.50.0/26 still present")
		}
		return fdbFor(a, b)
	})
	for _, n := range c.nodes {
		assertNodeState(t, n, vxlanAlways, c.nodes)
	}
	pod := a.pods[0]
	var oldVX int

	steps := []struct {
		name   string
		damage func()
		fixed  func() error
	}{
		{"ip route del remote block",
			func() { a.ns.MustRun(t, "ip", "route", "del", "10.244.2.0/26") },
			func() error {
				r, err := ownRoute(a, "10.244.2.0/26")
				if err == nil && (r.Gw.String() != b.tunIP.String() || r.Flags&unix.RTNH_F_ONLINK == 0) {
					err = fmt.Errorf("repaired wrongly: %v", r)
				}
				return err
			}},
		{"ip route del pod route",
			func() { a.ns.MustRun(t, "ip", "route", "del", pod.w.IP.String()+"/32") },
			func() error { _, err := ownRoute(a, pod.w.IP.String()+"/32"); return err }},
		{"ip route del blackhole",
			func() { a.ns.MustRun(t, "ip", "route", "del", "blackhole", a.block.String()) },
			func() error { _, err := ownRoute(a, a.block.String()); return err }},
		{"ip route replace with another gateway",
			func() {
				a.ns.MustRun(t, "ip", "route", "replace", "10.244.2.0/26", "via", "198.18.0.12", "dev", "eth0", "proto", "87")
			},
			func() error {
				r, err := ownRoute(a, "10.244.2.0/26")
				if err == nil && r.Gw.String() != b.tunIP.String() {
					err = fmt.Errorf("gateway still %s", r.Gw)
				}
				return err
			}},
		{"cali link down/up",
			func() { a.ns.MustRun(t, "ip", "link", "set", pod.w.HostIface, "down") },
			func() error {
				l, err := a.ns.NL.LinkByName(pod.w.HostIface)
				if err != nil {
					return err
				}
				if l.Attrs().Flags&net.FlagUp == 0 {
					return fmt.Errorf("%s still down", pod.w.HostIface)
				}
				_, err = ownRoute(a, pod.w.IP.String()+"/32")
				return err
			}},
		{"bridge fdb del",
			func() {
				a.ns.MustRun(t, "bridge", "fdb", "del", tunnel.VTEPMAC(b.name).String(), "dev", tunnel.VXLANName, "dst", b.addr.Addr().String())
			},
			func() error { return fdbFor(a, b) }},
		{"ip link del vxlan.calico",
			func() {
				oldVX = a.ns.Link(t, tunnel.VXLANName).Attrs().Index
				a.ns.MustRun(t, "ip", "link", "del", tunnel.VXLANName)
			},
			func() error {
				l, err := a.ns.NL.LinkByName(tunnel.VXLANName)
				if err != nil {
					return err
				}
				if l.Attrs().Index == oldVX {
					return fmt.Errorf("vxlan.calico not recreated yet")
				}
				if err := fdbFor(a, b); err != nil {
					return err
				}
				_, err = ownRoute(a, "10.244.2.0/26")
				return err
			}},
	}
	for _, st := range steps {
		st.damage()
		took := nstest.Poll(t, repairDeadline, "repair after "+st.name, st.fixed)
		t.Logf("repaired %-40s in %s", st.name, took.Round(time.Millisecond))
	}
	// Everything is right again, end to end, and the foreign route is
	// exactly as it was.
	for _, n := range c.nodes {
		assertNodeState(t, n, vxlanAlways, c.nodes)
	}
	c.pingAll(t)
	_, ipn, _ := net.ParseCIDR("10.244.60.0/26")
	fr, err := a.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipn}, netlink.RT_FILTER_DST)
	if err != nil || len(fr) != 1 || fr[0].Protocol != unix.RTPROT_STATIC || fr[0].Gw.String() != "198.18.0.12" {
		t.Fatalf("foreign route in the pool range changed: %v %v", fr, err)
	}
}
