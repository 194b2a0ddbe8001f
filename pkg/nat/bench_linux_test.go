package nat

import (
	"context"
	"testing"
	"time"

	"github.com/google/nftables"
)

// BenchmarkRepairFlush times pkg/nat's repair path on a real namespace:
// somebody else flushes table ip wren (a second nftables socket, as `nft
// flush table ip wren` would), the Watcher pokes, a loop runs Apply, and
// the table is whole again. One op is one flush and its repair; the
// agent adds at most its runner's minimum interval (100 ms) on top.
//
//	go test ./pkg/nat -run '^$' -bench RepairFlush -benchtime 200x
func BenchmarkRepairFlush(b *testing.B) {
	ns, k, r := newPrivReconciler(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Set(testNAT())
	if err := r.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	want, _, err := k.Read()
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWatcher(WatchConfig{NS: ns.Handle, Ignore: k.PortID})
	if err != nil {
		b.Fatal(err)
	}
	poke := make(chan struct{}, 1)
	applied := make(chan error, 1)
	go func() {
		_ = w.Run(ctx, func() {
			select {
			case poke <- struct{}{}:
			default:
			}
		})
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-poke:
			}
			applied <- r.Apply(ctx)
		}
	}()
	hand, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		b.Fatal(err)
	}
	check := NewKernel(ns.Handle)
	defer check.Close()
	var worst time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		hand.FlushTable(table)
		if err := hand.Flush(); err != nil {
			b.Fatal(err)
		}
		for {
			select {
			case err := <-applied:
				if err != nil {
					b.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				b.Fatal("no repair within 10s")
			}
			if got, _, err := check.Read(); err == nil && got.String() == want.String() {
				break
			}
		}
		worst = max(worst, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
}
