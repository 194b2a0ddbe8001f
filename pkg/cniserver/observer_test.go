package cniserver

// Test addresses: pods use 10.244.0.0/16; nothing leaves the process but
// unix sockets under t.TempDir().

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	"github.com/wren-net/wren/pkg/ipam"
)

// observingHandler is a fakeHandler that is also an Observer.
type observingHandler struct {
	*fakeHandler
	mu  sync.Mutex
	got []string // "command reason" ("command ok" for nil)
}

func (o *observingHandler) ObserveCNI(cmd string, took time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := "ok"
	if err != nil {
		r = ReasonOf(err).String()
	}
	if took <= 0 {
		r += " (no duration)"
	}
	o.got = append(o.got, cmd+" "+r)
}

// TestObserver: a Handler that implements Observer is told every
// command's outcome with the Handler's own error (classified as the
// plugin sees it), validation failures included; a DEL of an unknown
// container counts as the success the plugin reports.
func TestObserver(t *testing.T) {
	h := &observingHandler{fakeHandler: &fakeHandler{
		add: func(req AddRequest) (Result, error) {
			if req.Name == "full" {
				return Result{}, errors.Join(errors.New("pod default/full"), ipam.ErrExhausted)
			}
			return Result{IP: netip.MustParsePrefix("10.244.0.5/32"), MTU: 1450, HostIface: "cali0123456789a"}, nil
		},
		del: func(req DelRequest) error { return Errorf(ReasonNotFound, "no container %s", req.ContainerID) },
	}}
	c := startServer(t, h)
	ctx := context.Background()
	add := func(name string) *cniv1.AddRequest {
		return &cniv1.AddRequest{ContainerId: "c-" + name, Netns: "/var/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: name}
	}
	if _, err := c.Add(ctx, add("web")); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Add(ctx, add("full"))
	_, _ = c.Add(ctx, &cniv1.AddRequest{ContainerId: "c", Ifname: "eth0"}) // no pod name: rejected before the Handler
	_, _ = c.Del(ctx, &cniv1.DelRequest{ContainerId: "c-gone", Ifname: "eth0"})
	_, _ = c.Check(ctx, &cniv1.CheckRequest{ContainerId: "c-web", Netns: "/var/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: "web", Ip: "not-an-ip"})
	want := []string{"add ok", "add pool-exhausted", "add invalid-argument", "del ok", "check invalid-argument"}
	h.mu.Lock()
	defer h.mu.Unlock()
	if diff := cmp.Diff(want, h.got); diff != "" {
		t.Errorf("observed (-want +got)\n%s", diff)
	}
}
