package registrar

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/wren-net/wren/pkg/model"
)

// fakeCluster records what the registrar writes and shows it back in the
// Node, as the informer would.
type fakeCluster struct {
	mu        sync.Mutex
	node      model.NodeInfo
	published []model.NodeAddresses
	available int
}

func (c *fakeCluster) Nodes() ([]model.NodeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []model.NodeInfo{c.node}, nil
}
func (c *fakeCluster) Pools() ([]model.Pool, error) {
	return []model.Pool{{Name: "p", CIDR: netip.MustParsePrefix("10.244.0.0/16"), VXLAN: model.EncapNever, IPIP: model.EncapNever}}, nil
}
func (c *fakeCluster) PublishNode(_ context.Context, _ string, a model.NodeAddresses) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published = append(c.published, a)
	if a.IP.IsValid() {
		c.node.IP = a.IP
	}
	if len(a.VTEPMAC) > 0 {
		c.node.VTEPMAC = a.VTEPMAC
	}
	return nil
}
func (c *fakeCluster) SetNetworkAvailable(context.Context, string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.available++
	return nil
}

// TestRegistrar: the node's address and VTEP MAC are published once (a
// steady state writes nothing), and NetworkUnavailable is cleared only
// after the loop reports its first apply, once.
func TestRegistrar(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &fakeCluster{node: model.NodeInfo{Node: model.Node{Name: "node-1"}}}
		r := New("node-1", c, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ip := netip.MustParsePrefix("198.18.0.11/24")
		go r.Run(ctx, ip, nil)
		synctest.Wait()
		r.Poke()
		synctest.Wait()
		c.mu.Lock()
		if len(c.published) != 1 || c.published[0].IP != ip || len(c.published[0].VTEPMAC) != 6 {
			t.Errorf("published %+v, want the address and the VTEP MAC once", c.published)
		}
		if c.available != 0 {
			t.Error("NetworkUnavailable cleared before the loop applied the dataplane")
		}
		c.mu.Unlock()
		r.Applied()
		synctest.Wait()
		r.Applied()
		r.Poke()
		synctest.Wait()
		c.mu.Lock()
		if c.available != 1 {
			t.Errorf("NetworkUnavailable cleared %d times after the first apply, want once", c.available)
		}
		c.mu.Unlock()
	})
}
