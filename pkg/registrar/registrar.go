// Package registrar owns a node agent's writes about its own Node: the
// annotations the other nodes route by (node address, VTEP MAC, and the
// VXLAN and IPIP tunnel addresses, allocated from IPAM under a fixed
// handle so a restart finds the same ones) and the NetworkUnavailable
// condition, set once the agent's loop has applied the node's dataplane.
// It runs on its own goroutine; the loop never writes the Kubernetes API.
// What it publishes reaches the loop through the Node informer.
package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/tunnel"
)

// Cluster is what the registrar needs of the Kubernetes API
// (pkg/cluster's View).
type Cluster interface {
	Nodes() ([]model.NodeInfo, error)
	Pools() ([]model.Pool, error)
	PublishNode(ctx context.Context, name string, a model.NodeAddresses) error
	SetNetworkAvailable(ctx context.Context, name string) error
}

// Registrar is one node's registrar; see the package doc.
type Registrar struct {
	node    string
	ip      netip.Prefix // the node address the agent detected at start
	cluster Cluster
	alloc   *ipam.Allocator
	log     *slog.Logger

	poke     chan struct{}
	applied  atomic.Bool // the loop has applied the dataplane once
	condDone bool        // NetworkUnavailable=False is set; the registrar's own
}

// New returns the registrar of node; it does nothing until Run.
func New(node string, c Cluster, log *slog.Logger) *Registrar {
	return &Registrar{node: node, cluster: c, log: log.With("component", "registrar"), poke: make(chan struct{}, 1)}
}

// Run publishes ip (the node address the agent detected) and the tunnel
// addresses it allocates with alloc, on every Poke and with backoff after
// a failure (200 ms to 30 s), until ctx ends.
func (r *Registrar) Run(ctx context.Context, ip netip.Prefix, alloc *ipam.Allocator) {
	r.ip, r.alloc = ip, alloc
	r.run(ctx)
}

// Poke asks for a look at the Node soon; it never blocks.
func (r *Registrar) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Applied tells the registrar that the loop has applied the dataplane:
// NetworkUnavailable may be cleared.
func (r *Registrar) Applied() {
	if !r.applied.Swap(true) {
		r.Poke()
	}
}

// run reconciles on every poke, retrying failures with backoff (200 ms to
// 30 s) until ctx ends.
func (r *Registrar) run(ctx context.Context) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.poke:
		case <-retry.C:
		}
		err := r.reconcile(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if backoff != 0 {
				r.log.Info("node registration recovered")
			}
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
		r.log.Warn("node registration failed; retrying", "in", backoff, "err", err)
		retry.Reset(backoff)
	}
}

// reconcile publishes what the Node lacks (by the informer cache, so a
// steady state costs no request).
func (r *Registrar) reconcile(ctx context.Context) error {
	nodes, err := r.cluster.Nodes()
	if err != nil {
		return err
	}
	var me model.NodeInfo
	for _, n := range nodes {
		if n.Name == r.node {
			me = n
		}
	}
	if me.Name == "" {
		return fmt.Errorf("node %s: no Node object with this name", r.node)
	}
	pools, err := r.cluster.Pools()
	if err != nil {
		return err
	}
	var want model.NodeAddresses
	if me.IP != r.ip {
		want.IP = r.ip
	}
	if mac := tunnel.VTEPMAC(r.node); me.VTEPMAC.String() != mac.String() {
		want.VTEPMAC = mac
	}
	wantVXLAN, wantIPIP := false, false
	for _, p := range pools {
		wantVXLAN = wantVXLAN || !p.Disabled && p.VXLAN != model.EncapNever
		wantIPIP = wantIPIP || !p.Disabled && p.IPIP != model.EncapNever
	}
	var errs []error
	for _, t := range []struct {
		want bool
		have netip.Addr
		kind string
		to   *netip.Addr
	}{{wantVXLAN, me.VXLANTunnelIP, ipam.NodeAddrVXLAN, &want.VXLANTunnelIP}, {wantIPIP, me.IPIPTunnelIP, ipam.NodeAddrIPIP, &want.IPIPTunnelIP}} {
		if !t.want || t.have.IsValid() {
			continue
		}
		a, err := r.alloc.Allocate(ctx, ipam.Request{Handle: ipam.NodeHandle(r.node, t.kind)})
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: allocate its %s tunnel address: %w", r.node, t.kind, err))
			continue
		}
		*t.to = a.IP
	}
	if !want.IsZero() {
		if err := r.cluster.PublishNode(ctx, r.node, want); err != nil {
			errs = append(errs, err)
		} else {
			r.log.Info("node annotated", "addresses", want)
		}
	}
	if r.applied.Load() && !r.condDone {
		if err := r.cluster.SetNetworkAvailable(ctx, r.node); err != nil {
			errs = append(errs, err)
		} else {
			r.condDone = true
			r.log.Info("node network available: NetworkUnavailable=False")
		}
	}
	return errors.Join(errs...)
}
