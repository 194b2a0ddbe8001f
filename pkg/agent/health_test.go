package agent

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wren-net/wren/pkg/ipam"
)

// stuckHost blocks HostMTU, the first thing a run asks the host, until
// released: a loop stuck inside a run.
type stuckHost struct {
	fakeHost
	release chan struct{}
}

func (h stuckHost) HostMTU() (int, error) {
	<-h.release
	return 1500, nil
}

// TestLiveFailsWhenTheLoopIsStuck: /livez holds while runs complete and
// fails once one run has lasted longer than LiveDeadline (or no run has
// ended for that long), naming how long.
func TestLiveFailsWhenTheLoopIsStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fa := newFakeAgent(t)
		fa.cfg.LiveDeadline = 3 * time.Minute
		ctx := context.Background()
		if err := fa.Live(); err != nil {
			t.Fatalf("before the first run: %v", err)
		}
		if err := fa.sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		if err := fa.Live(); err != nil {
			t.Fatalf("2 min after a run: %v", err)
		}
		time.Sleep(2 * time.Minute)
		if err := fa.Live(); err == nil || !strings.Contains(err.Error(), "has not run for 4m0s") {
			t.Fatalf("4 min without a run: %v", err)
		}
		h := stuckHost{release: make(chan struct{})}
		fa.host = h
		done := make(chan error)
		go func() { done <- fa.sync(ctx) }()
		synctest.Wait()
		if err := fa.Live(); err != nil {
			t.Fatalf("a run just started: %v", err)
		}
		time.Sleep(3*time.Minute + time.Second)
		if err := fa.Live(); err == nil || !strings.Contains(err.Error(), "in one run for 3m1s") || !strings.Contains(err.Error(), "stuck") {
			t.Fatalf("a run blocked for 3m1s: %v", err)
		}
		close(h.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := fa.Live(); err != nil {
			t.Fatalf("after the stuck run ended: %v", err)
		}
	})
}

// TestReadyLikeBirdReady: not ready before registration and the first
// sync; in the first 30 s every configured peer must be established and
// the start-up hold over; afterwards one established peer is enough.
func TestReadyLikeBirdReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fa := newFakeAgent(t)
		fa.startedAt = time.Now()
		ctx := context.Background()
		want := func(what, says string) {
			t.Helper()
			err := fa.Ready()
			switch {
			case says == "" && err != nil:
				t.Errorf("%s: not ready: %v", what, err)
			case says != "" && (err == nil || !strings.Contains(err.Error(), says)):
				t.Errorf("%s: Ready() = %v, want an error saying %q", what, err, says)
			}
		}
		want("before registration", "registering the node")
		fa.alloc = &ipam.Allocator{}
		want("registered, no sync yet", "first sync not completed")
		if err := fa.sync(ctx); err != nil {
			t.Fatal(err)
		}
		want("no session up", "0 of 2 configured peers established; in the first 30s after start every one must be (not yet: 198.18.0.12, 198.18.0.13)")
		fa.sp.up(fNode2.Addr())
		want("one of two up", "1 of 2 configured peers established")
		fa.sp.up(fNode3.Addr())
		want("both up, the last run still holding", "graceful-restart recovery running")
		if err := fa.sync(ctx); err != nil {
			t.Fatal(err)
		}
		want("both up, both sent End-of-RIB", "")
		time.Sleep(31 * time.Second)
		delete(fa.sp.sessions, fNode2.Addr())
		want("after 30 s, one of two up", "")
		delete(fa.sp.sessions, fNode3.Addr())
		want("after 30 s, none up", "BGP: none of the 2 configured peers is established (198.18.0.12, 198.18.0.13)")
		// No peer configured at all: ready.
		fa.cluster.nodes = fa.cluster.nodes[:1]
		if err := fa.sync(ctx); err != nil {
			t.Fatal(err)
		}
		want("no peer configured", "")
	})
}
