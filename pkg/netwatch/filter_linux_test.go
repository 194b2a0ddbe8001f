package netwatch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/netwatch"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestIgnoresOwnWrites: with the route writers' port ids ignored, 2,000
// routes written by Wren poke nothing, while one foreign change (and a
// deletion of a Wren route by somebody else) pokes.
func TestIgnoresOwnWrites(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns := nstest.New(t, "watch")
	peer := nstest.New(t, "peer")
	// Nothing but the test may change ns once the watcher subscribes: no
	// IPv6 (its address configuration sends link and address
	// notifications a while after the link comes up), and the veth's
	// carrier already up (the kernel announces it from a deferred work
	// item, up to a second after the link is set up).
	ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	nstest.Veth(t, ns, "eth0", peer, "eth0", 0)
	nstest.Poll(t, 5*time.Second, "eth0 operationally up", func() error {
		if st := ns.Link(t, "eth0").Attrs().OperState; st != netlink.OperUp {
			return fmt.Errorf("eth0 is %s", st)
		}
		return nil
	})
	k, err := routes.NewKernel(ns.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	r, err := routes.New(routes.Config{Logger: quiet}, k)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := k.PortIDs()
	if err != nil {
		t.Fatal(err)
	}
	w, err := netwatch.New(netwatch.Config{NS: ns.Handle, IgnorePorts: ports, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var pokes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx, func() { pokes.Add(1) }); close(done) }()
	defer func() { cancel(); <-done }()

	var rs []model.Route
	for i := 0; i < 2000; i++ {
		rs = append(rs, model.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26),
			Kind: model.RouteRemoteTunnel, Gateway: netip.MustParseAddr("10.244.255.1"), Device: "eth0"})
	}
	r.Set(rs)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A foreign change after our writes: notifications arrive in order,
	// so once it has poked, every echo of our writes has been read.
	ns.AddRoute(t, "10.250.0.0/24", "dev", "eth0", "proto", "static")
	nstest.Poll(t, 2*time.Second, "poke for the foreign route", func() error {
		if pokes.Load() == 0 {
			return fmt.Errorf("no poke yet")
		}
		return nil
	})
	if got := pokes.Load(); got != 1 {
		t.Fatalf("%d pokes; want 1 (the foreign route only, none for our 2000 writes)", got)
	}
	ns.MustRun(t, "ip", "route", "del", "10.244.0.0/26")
	nstest.Poll(t, 2*time.Second, "poke for the deleted own route", func() error {
		if pokes.Load() < 2 {
			return fmt.Errorf("no poke yet")
		}
		return nil
	})
}
