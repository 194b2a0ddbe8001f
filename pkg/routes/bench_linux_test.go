package routes

// Benchmarks run in a throwaway namespace (root only); the routes point at
// a veth inside it and never carry traffic.
//
//	go test ./pkg/routes -run '^$' -bench Sync -benchtime 3x

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/netwatch"
	nstest "github.com/wren-net/wren/test/netns"
)

func benchRoutes(n int, gw string) []model.Route {
	rs := make([]model.Route, n)
	for i := range rs {
		rs[i] = tunnel(blockN(i), gw, "vxlan.calico", 1450)
	}
	return rs
}

// BenchmarkSync programs n remote-block routes from empty, replaces them
// all (new gateway), resyncs with no change, and deletes them all,
// reporting routes/s per phase and the resync time.
//
// With watched=true a netwatch subscriber runs in the namespace, as in the
// agent: the kernel then builds a notification per route change, and the
// watcher's socket filter drops the echoes of our own writes.
func BenchmarkSync(b *testing.B) {
	for _, bc := range []struct {
		n       int
		watched bool
	}{{10_000, false}, {100_000, false}, {100_000, true}} {
		n := bc.n
		b.Run(fmt.Sprintf("routes=%d/watched=%v", n, bc.watched), func(b *testing.B) {
			ns := node(b)
			r, k := newKernelRec(b, ns)
			if bc.watched {
				ports, err := k.PortIDs()
				if err != nil {
					b.Fatal(err)
				}
				w, err := netwatch.New(netwatch.Config{NS: ns.Handle, IgnorePorts: ports, Logger: quietLog})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { _ = w.Run(ctx, func() {}); close(done) }()
				b.Cleanup(func() { cancel(); <-done })
			}
			first, second := benchRoutes(n, "10.244.255.1"), benchRoutes(n, "10.244.255.2")
			var add, repl, resync, del time.Duration
			phase := func(d *time.Duration, rs []model.Route, check func(Stats) bool) {
				r.Set(rs)
				start := time.Now()
				if err := r.Apply(context.Background()); err != nil {
					b.Fatal(err)
				}
				*d += time.Since(start)
				if st := r.LastStats(); !check(st) {
					b.Fatalf("unexpected stats %+v", st)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				phase(&add, first, func(s Stats) bool { return s.Added == n })
				phase(&repl, second, func(s Stats) bool { return s.Replaced == n })
				phase(&resync, second, func(s Stats) bool { return s.Unchanged == n && s.Replaced == 0 })
				phase(&del, nil, func(s Stats) bool { return s.Deleted == n })
			}
			b.StopTimer()
			rate := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
			b.ReportMetric(rate(add), "add-routes/s")
			b.ReportMetric(rate(repl), "replace-routes/s")
			b.ReportMetric(rate(del), "delete-routes/s")
			b.ReportMetric(resync.Seconds()/float64(b.N), "resync-s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkBaselineRouteReplace is the reference: one
// netlink.Handle.RouteReplace per route on a long-lived handle.
func BenchmarkBaselineRouteReplace(b *testing.B) {
	const n = 100_000
	ns := node(b)
	link := ns.Link(b, "vxlan.calico")
	var d time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		for j := 0; j < n; j++ {
			rt := &netlink.Route{Dst: mustNet(blockN(j)), LinkIndex: link.Attrs().Index, Gw: mustNet("10.244.255.1/32").IP,
				Flags: int(netlink.FLAG_ONLINK), Protocol: Protocol, MTU: 1450}
			if err := ns.NL.RouteReplace(rt); err != nil {
				b.Fatal(err)
			}
		}
		d += time.Since(start)
		b.StopTimer()
		ns.MustRun(b, "ip", "route", "flush", "proto", "87")
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/d.Seconds(), "add-routes/s")
	b.ReportMetric(0, "ns/op")
}

var _ = nstest.Prefix
