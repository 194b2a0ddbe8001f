package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/desired"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// bgpState is the loop's BGP state; only the loop touches it.
type bgpState struct {
	speaker speaker
	ctl     *bgpsession.Controller
	holding bool // the controller's window as the last Merge saw it

	// What the last full run saw, for the best-path changes until the
	// next (bgpDelta): how learned routes become kernel routes, which
	// withdrawn routes the cluster vouches for, and the sessions.
	shaper   *desired.LearnedShaper
	vouched  func(model.LearnedRoute) bool
	sessions []bgpspeaker.Session
	// Scratch reused by every bgpDelta.
	changes []bgpspeaker.Change
	up      []model.Route
	down    []netip.Prefix

	wake   *time.Timer // pokes the loop at wakeAt: the next time-driven BGP step
	wakeAt time.Time

	// isolated: the last run wanted no session while other nodes hold
	// blocks this node reaches through BGP (checkIsolated).
	isolated bool

	// kernelRoutes reads the kernel's BGP routes for a new start-up
	// window (followBGPGlobal); nil means kernelRemoteRoutes. The fake
	// tier reads its fake kernel.
	kernelRoutes func() ([]model.LearnedRoute, error)
}

// wakeBy makes the loop run again no later than t (one timer, set to the
// earliest pending time). Everything else BGP does (routes, session
// states, End-of-RIB) pokes the loop through the speaker.
func (a *Agent) wakeBy(t time.Time) {
	b := a.bgp
	if t.IsZero() || b.wakeAt.After(time.Now()) && !t.Before(b.wakeAt) {
		return // nothing to wait for, or an earlier wake-up is pending
	}
	b.wakeAt = t
	if b.wake == nil {
		b.wake = time.AfterFunc(time.Until(t), a.run.Poke)
		return
	}
	b.wake.Reset(time.Until(t))
}

// startBGP starts the speaker with the node's router ID and AS, seeds the
// session controller with the kernel's BGP routes (the previous run's,
// kept until every session has sent End-of-RIB or run out of its restart
// time) and pokes the loop on every change the speaker reports.
func (a *Agent) startBGP(ctx context.Context, self model.NodeInfo) error {
	cfg, err := a.cluster.BGPConfig()
	if err != nil {
		return err
	}
	as := self.EffectiveAS(cfg.AS)
	sp, err := bgpspeaker.New(bgpspeaker.Config{RouterID: self.IP.Addr(), AS: as, ListenPort: int32(cfg.ListenPort),
		APIAddress: a.cfg.GoBGPAPI, Logger: a.cfg.Logger})
	if err != nil {
		return fmt.Errorf("node %s: bgp speaker: %w", a.cfg.NodeName, err)
	}
	if err := sp.Start(ctx); err != nil {
		return fmt.Errorf("node %s: %w", a.cfg.NodeName, err)
	}
	b := &bgpState{speaker: sp, ctl: bgpsession.New(bgpsession.Config{Logger: a.cfg.Logger}, sp), holding: true}
	seed, err := a.kernelRemoteRoutes()
	if err != nil {
		a.log.Warn("read the previous run's BGP routes", "err", err)
	}
	b.ctl.Seed(seed)
	a.mu.Lock()
	a.bgp = b
	a.mu.Unlock()
	a.log.Info("keeping the previous run's BGP routes until every session has sent End-of-RIB or run out of its restart time", "routes", len(seed))
	// Best-path changes take the loop's fast lane; session changes make
	// it do a full run (bgpDelta decides).
	a.run.Fast(sp.Changed(), a.bgpDelta)
	return nil
}

// bgpDelta is the loop's fast lane (runner.Fast): the best-path changes
// since the last run go to the kernel as one batch, shaped and held as the
// last full run would have done, without rebuilding anything or copying
// the learned table. The speaker's watch only marks prefixes dirty, so
// however far the kernel writes fall behind, they never slow the speaker
// reading its peers; a burst is coalesced into fewer, bigger batches. It
// asks for a full run (returns true) before the first one, when a session
// change opens or closes one of the controller's windows, and when a write
// failed.
func (a *Agent) bgpDelta(ctx context.Context) bool {
	b := a.bgp
	if b == nil || b.shaper == nil {
		return true
	}
	if ss := b.speaker.Sessions(); !slices.Equal(ss, b.sessions) {
		// A session came up, went down or sent End-of-RIB: the controller
		// decides again with the wanted sessions of the last full run.
		// Only a window that opens or closes needs a full run (to hold or
		// prune); a peer's table streaming in never does.
		b.sessions = ss
		res, err := b.ctl.Apply(ctx)
		a.wakeBy(res.Wake)
		if err != nil || res.Holding != b.holding {
			return true
		}
	}
	if cap(b.changes) > 1<<14 {
		// The last batch was a whole peer table: give its buffers back.
		b.changes, b.up, b.down = nil, nil, nil
	}
	b.changes = b.speaker.Drain(b.changes[:0])
	if len(b.changes) == 0 {
		return false
	}
	up, down := b.ctl.Filter(b.changes, b.vouched)
	rs, dn := b.up[:0], b.down[:0]
	for _, l := range up {
		r, ok, err := b.shaper.Route(l)
		switch {
		case err != nil:
			a.log.Debug("not routed", "reason", err)
			dn = append(dn, l.Prefix) // as a full Build would leave it out
		case ok:
			rs = append(rs, r)
		}
	}
	for _, p := range down {
		if b.shaper.Handles(p) {
			dn = append(dn, p)
		}
	}
	b.up, b.down = rs, dn
	if err := a.timed(ctx, ReconcilerRoutesDelta, func(ctx context.Context) error { return a.routes.Delta(ctx, rs, dn) }); err != nil {
		a.log.Warn("bgp route changes: some writes failed; running a full sync", "err", err)
		return true
	}
	return false
}

// kernelRemoteRoutes reads Wren's routes with a gateway from the kernel:
// what the previous run learned from BGP (and from the IPAMBlocks for
// VXLAN pools, which Build ignores here).
func (a *Agent) kernelRemoteRoutes() ([]model.LearnedRoute, error) {
	var out []model.LearnedRoute
	err := a.kernel.List(routes.MainTable, routes.Protocol, func(k routes.KRoute) {
		if k.Gw.IsValid() && k.Dst.Addr().Is4() {
			out = append(out, model.LearnedRoute{Prefix: k.Dst, NextHop: k.Gw})
		}
	})
	return out, err
}

// bgpInputs fills in what Build needs from BGP: the learned routes, with
// what the session controller's windows hold, and the service ranges.
func (a *Agent) bgpInputs(in *desired.Inputs, nodes []model.NodeInfo, cfg model.BGPConfig) {
	b := a.bgp
	in.BGP = true
	b.vouched = bgpsession.Vouched(in.Blocks, nodes)
	// The changes first, so the controller sees every withdrawal (and
	// holds what its windows cover), then the whole table.
	b.changes = b.speaker.Drain(b.changes[:0])
	b.ctl.Filter(b.changes, b.vouched)
	in.Learned = b.ctl.Merge(b.speaker.Learned(), b.vouched)
	in.ServiceCIDRs = cfg.ServiceCIDRs
}

// applyBGP hands the policy and the sessions to the speaker, after the
// kernel routes and advertisements: paths before peers.
func (a *Agent) applyBGP(ctx context.Context, in desired.Inputs, self model.NodeInfo, nodes []model.NodeInfo, cfg model.BGPConfig) error {
	b := a.bgp
	peers, err := a.cluster.BGPPeers()
	if err != nil {
		return err
	}
	wants := bgpsession.Wants(self, nodes, peers, cfg, a.selfIP(), a.cluster.Warn)
	a.checkIsolated(self, wants, in, cfg)
	var errs []error
	// The policy first: GoBGP accepts everything until one is assigned.
	if err := b.speaker.SetPolicy(ctx, bgpsession.Policy(self, nodes, in.Pools, in.Blocks, cfg)); err != nil {
		errs = append(errs, err)
	}
	b.ctl.Set(wants)
	// What the controller decides on; a session that changes after this
	// makes the next fast run ask for a full one.
	b.sessions = b.speaker.Sessions()
	res, err := b.ctl.Apply(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	a.wakeBy(res.Wake)
	if res.Holding != b.holding {
		// A window opened or closed after this run's Merge: the next run
		// holds or prunes accordingly.
		b.holding = res.Holding
		a.run.Poke()
	}
	return errors.Join(errs...)
}

func (a *Agent) selfIP() netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.self.IP.Addr()
}

// checkIsolated warns when the node is about to lose every BGP session
// while other nodes hold blocks it reaches only through BGP (not through
// a VXLAN pool, whose routes come from the IPAMBlocks): once the sessions
// are gone their routes are withdrawn. The Warning Event on the Node and
// the log line name the cause and the fix; they come from the run that
// drops the sessions, before any route is withdrawn.
func (a *Agent) checkIsolated(self model.NodeInfo, wants []bgpsession.Want, in desired.Inputs, cfg model.BGPConfig) {
	b := a.bgp
	remote := 0
	if len(wants) == 0 {
		for _, blk := range in.Blocks {
			if blk.Affinity == "" || blk.Affinity == self.Name || blk.State != ipam.StateConfirmed {
				continue
			}
			for _, p := range in.Pools {
				if p.CIDR.Overlaps(blk.CIDR) && p.VXLAN == model.EncapNever {
					remote++
					break
				}
			}
		}
	}
	was := b.isolated
	b.isolated = remote > 0
	switch {
	case b.isolated && !was:
		var cause string
		switch {
		case cfg.MeshPasswordMissing:
			cause = "the node-to-node mesh waits for its password Secret (BGPConfiguration default, spec.nodeMeshPassword) and no BGPPeer applies to it"
		case !cfg.MeshEnabled:
			cause = "nodeToNodeMeshEnabled is false in BGPConfiguration default and no BGPPeer applies to it"
		default:
			cause = "no other node has a BGP address yet and no BGPPeer applies to it"
		}
		msg := fmt.Sprintf("%s has no BGP session: %s; routes to other nodes' blocks are withdrawn once the sessions are gone. "+
			"Fix: add a BGPPeer for this node (e.g. nodeSelector: all() with peerSelector: \"wren.network/route-reflector == 'true'\" and a node labelled wren.network/route-reflector=true), "+
			"or set nodeToNodeMeshEnabled: true", self.Name, cause)
		a.log.Warn("node has no BGP session while other nodes hold blocks it must reach", "blocks", remote, "cause", cause)
		a.cluster.Warn("Node", self.Name, "NoBGPSessions", msg)
	case !b.isolated && was:
		a.log.Info("node has BGP sessions again", "sessions", len(wants))
	}
}
