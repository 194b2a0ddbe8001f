package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/selector"
)

// BGP timing of the agent.
const (
	// DefaultRestartTime is the graceful-restart time (RFC 4724) offered
	// to peers unless the BGPConfiguration or BGPPeer sets one: how long
	// they keep this node's routes while its agent restarts.
	DefaultRestartTime = 120 * time.Second
	// startupHold bounds how long a starting agent keeps the kernel
	// routes of its previous run while its sessions come up.
	startupHold = 60 * time.Second
	// settleAfter is how long every session must have been established
	// before BGP counts as converged (the peers send their tables right
	// after the session opens; End-of-RIB is not visible through the
	// speaker).
	settleAfter = 2 * time.Second
	// reshapeHold bounds make-before-break: sessions the topology no
	// longer wants, and the routes learned through them, stay at most
	// this long while the new sessions come up.
	reshapeHold = 30 * time.Second
)

// bgpState is the loop's BGP state; only the loop touches it.
type bgpState struct {
	speaker  *bgpspeaker.Speaker
	hold     *routeHold
	starting bool                            // the startup window is open
	wanted   map[netip.Addr]model.BGPSession // last desired sessions
	retiring map[netip.Addr]retiring         // no longer wanted, kept until the new ones are up
	applied  map[netip.Addr]bgpspeaker.Peer  // last SetPeers input
	resetAt  map[netip.Addr]time.Time        // when SetPeers last (re)created the session

	wake   *time.Timer // pokes the loop at wakeAt: the next time-driven BGP step
	wakeAt time.Time
}

// wakeBy makes the loop run again no later than t (one timer, set to the
// earliest pending time): when a hold window or a held route runs out,
// or an established session has been up for settleAfter. Everything else
// BGP does (routes, session states) pokes the loop through the speaker.
func (a *Agent) wakeBy(t time.Time) {
	b := a.bgp
	if b.wakeAt.After(time.Now()) && !t.Before(b.wakeAt) {
		return // an earlier wake-up is pending
	}
	b.wakeAt = t
	if b.wake == nil {
		b.wake = time.AfterFunc(time.Until(t), a.run.Poke)
		return
	}
	b.wake.Reset(time.Until(t))
}

type retiring struct {
	s     model.BGPSession
	until time.Time
}

// startBGP starts the speaker with the node's router ID and AS, seeds the
// route hold with the kernel's remote routes of non-VXLAN pools (the
// previous run's, kept until BGP has converged) and pokes the loop on
// every best-path change.
func (a *Agent) startBGP(ctx context.Context, self model.NodeInfo) error {
	cfg, err := a.cluster.BGPConfig()
	if err != nil {
		return err
	}
	as := NodeAS(self, cfg.AS)
	sp, err := bgpspeaker.New(bgpspeaker.Config{RouterID: self.IP.Addr(), AS: as, ListenPort: int32(cfg.ListenPort),
		Logger: a.cfg.Logger})
	if err != nil {
		return fmt.Errorf("node %s: bgp speaker: %w", a.cfg.NodeName, err)
	}
	if err := sp.Start(ctx); err != nil {
		return fmt.Errorf("node %s: %w", a.cfg.NodeName, err)
	}
	b := &bgpState{speaker: sp, hold: newRouteHold(), starting: true,
		wanted: map[netip.Addr]model.BGPSession{}, retiring: map[netip.Addr]retiring{},
		applied: map[netip.Addr]bgpspeaker.Peer{}, resetAt: map[netip.Addr]time.Time{}}
	seed, err := a.kernelRemoteRoutes()
	if err != nil {
		a.log.Warn("read the previous run's BGP routes", "err", err)
	}
	b.hold.Seed(seed)
	b.hold.Extend(time.Now().Add(startupHold))
	a.mu.Lock()
	a.bgp = b
	a.mu.Unlock()
	a.log.Info("keeping the previous run's BGP routes until BGP converges", "routes", len(seed), "atMost", startupHold)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sp.Changed():
				a.run.Poke()
			}
		}
	}()
	a.wakeBy(time.Now().Add(startupHold))
	return nil
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

// bgpInputs decides the sessions (make-before-break on topology changes),
// hands them to the speaker and fills in what Build needs from BGP.
func (a *Agent) bgpInputs(ctx context.Context, in *Inputs, self model.NodeInfo, nodes []model.NodeInfo) error {
	b := a.bgp
	cfg, err := a.cluster.BGPConfig()
	if err != nil {
		return err
	}
	now := time.Now()
	var want []model.BGPSession
	if !cfg.MeshPasswordMissing {
		want = NodeSessions(self, nodes, MeshConfig{Enabled: cfg.MeshEnabled, AS: cfg.AS, Port: cfg.ListenPort})
		for i := range want {
			want[i].Password = cfg.MeshPassword
		}
	}
	want = append(want, a.explicitSessions(self)...)
	wantBy := map[netip.Addr]model.BGPSession{}
	for _, s := range want {
		if _, dup := wantBy[s.Address]; !dup {
			wantBy[s.Address] = s
		}
	}

	// Make-before-break: a session the topology drops stays, and the
	// routes learned through it stay in the kernel, until the wanted
	// sessions are up and carry every prefix it carried, or reshapeHold
	// passes. A session that is down has nothing to hand over and goes
	// at once.
	up, serr := a.bgpUp(ctx)
	removed := 0
	for addr, s := range b.wanted {
		if _, still := wantBy[addr]; !still {
			removed++
			if _, ok := b.retiring[addr]; !ok {
				b.retiring[addr] = retiring{s: s, until: now.Add(reshapeHold)}
			}
		}
	}
	b.wanted = wantBy
	wantPeers := make(map[netip.Addr]bgpspeaker.Peer, len(wantBy))
	recreated := 0
	for addr, s := range wantBy {
		p := a.peerConfig(s, cfg)
		// A session SetPeers (re)creates counts as down from now on.
		if old, ok := b.applied[addr]; !ok || old != p {
			reset, _ := bgpspeaker.NeedsReset(old, p)
			if !ok || reset {
				b.resetAt[addr] = now
			}
			if ok && reset {
				recreated++
			}
		}
		wantPeers[addr] = p
	}
	// Sessions going away or being re-created (a route-reflector change)
	// open the window; merely added ones do not.
	if removed > 0 || recreated > 0 {
		b.hold.Extend(now.Add(reshapeHold))
		a.wakeBy(now.Add(reshapeHold))
		a.log.Info("bgp sessions changing", "wanted", len(wantBy), "removed", removed, "recreated", recreated)
	}

	settled := serr == nil && a.bgpSettled(up, wantPeers, now)
	cover := a.coverage(ctx, wantPeers)
	for addr, r := range b.retiring {
		_, back := wantBy[addr]
		_, isUp := up[addr]
		if back || !isUp || now.After(r.until) || settled && cover(addr) {
			delete(b.retiring, addr)
		}
	}
	if len(b.retiring) > 0 {
		// Paths that arrive in the new sessions' Adj-RIBs-In without
		// becoming best raise no event: look again.
		a.wakeBy(now.Add(settleAfter))
	}
	peers := make([]bgpspeaker.Peer, 0, len(wantPeers)+len(b.retiring))
	for _, r := range b.retiring {
		peers = append(peers, a.peerConfig(r.s, cfg))
	}
	for _, p := range wantPeers {
		peers = append(peers, p)
	}
	var errs []error
	if serr != nil {
		errs = append(errs, serr)
	}
	// The policy first: GoBGP accepts everything until one is assigned.
	if err := b.speaker.SetPolicy(ctx, bgpPolicy(*in, self, nodes, cfg)); err != nil {
		errs = append(errs, err)
	}
	if err := b.speaker.SetPeers(ctx, peers); err != nil {
		errs = append(errs, err)
	}
	b.applied = map[netip.Addr]bgpspeaker.Peer{}
	for _, p := range peers {
		b.applied[p.Address] = p
	}
	for addr := range b.resetAt {
		if _, ok := b.applied[addr]; !ok {
			delete(b.resetAt, addr)
		}
	}
	if settled && len(b.retiring) == 0 && (b.starting || b.hold.Holding(now)) {
		if b.starting {
			a.log.Info("bgp converged: pruning routes BGP no longer announces")
		}
		b.starting = false
		b.hold.End()
	}
	// While the window is open, withdrawals through sessions being
	// retired or re-created are held; any other peer's are not.
	windowed := func(peer netip.Addr) bool {
		if _, ok := b.retiring[peer]; ok {
			return true
		}
		at, ok := b.resetAt[peer]
		return ok && now.Sub(at) < reshapeHold && !up[peer].After(at)
	}

	learned := b.speaker.Learned()
	ls := make([]model.LearnedRoute, 0, len(learned))
	for p, r := range learned {
		ls = append(ls, model.LearnedRoute{Prefix: p, NextHop: r.NextHop, Peer: r.PeerAddr})
	}
	in.BGP = true
	in.Learned = b.hold.Merge(now, ls, windowed, vouchedBy(*in, nodes))
	if t := b.hold.NextExpiry(now); !t.IsZero() {
		a.wakeBy(t.Add(10 * time.Millisecond))
	}
	in.ServiceCIDRs = cfg.ServiceCIDRs
	// A session that came up recently counts as settled settleAfter
	// later; sessions still down poke the loop when they come up.
	for addr := range wantPeers {
		if since, ok := up[addr]; ok && now.Sub(since) < settleAfter {
			a.wakeBy(since.Add(settleAfter))
		}
	}
	return errors.Join(errs...)
}

// vouchedBy reports whether the cluster still backs a route BGP withdrew:
// its prefix is a confirmed block, or an address allocated, for the node
// whose IP is the next hop.
func vouchedBy(in Inputs, nodes []model.NodeInfo) func(model.LearnedRoute) bool {
	nodeAt := map[netip.Addr]string{}
	for _, n := range nodes {
		if n.IP.IsValid() {
			nodeAt[n.IP.Addr()] = n.Name
		}
	}
	return func(r model.LearnedRoute) bool {
		name, ok := nodeAt[r.NextHop]
		if !ok {
			return false
		}
		for _, b := range in.Blocks {
			if b.State != ipam.StateConfirmed {
				continue
			}
			if b.CIDR == r.Prefix && b.Affinity == name {
				return true
			}
			if r.Prefix.Bits() == 32 && b.CIDR.Contains(r.Prefix.Addr()) {
				for _, al := range b.Allocations {
					if al.IP == r.Prefix.Addr() && al.Node == name {
						return true
					}
				}
			}
		}
		return false
	}
}

// bgpUp returns the established sessions and since when.
func (a *Agent) bgpUp(ctx context.Context) (map[netip.Addr]time.Time, error) {
	st, err := a.bgp.speaker.Status(ctx)
	if err != nil {
		return nil, err
	}
	up := map[netip.Addr]time.Time{}
	for _, p := range st.Peers {
		if p.State == "established" {
			up[p.Address] = p.Since
		}
	}
	return up, nil
}

// bgpSettled reports whether every wanted session has been established,
// since SetPeers last (re)created it, for at least settleAfter: the peers
// have sent their tables.
func (a *Agent) bgpSettled(up map[netip.Addr]time.Time, want map[netip.Addr]bgpspeaker.Peer, now time.Time) bool {
	for addr := range want {
		since, ok := up[addr]
		if !ok || now.Sub(since) < settleAfter || !since.After(a.bgp.resetAt[addr]) {
			return false
		}
	}
	return true
}

// coverage returns a check of whether every prefix whose best path comes
// from a retiring peer is also offered by one of the wanted peers, so
// that dropping that peer moves those prefixes to another path instead of
// withdrawing them. The wanted peers' Adj-RIBs-In are walked at most once
// per call of coverage, and only when a retiring peer is asked about.
func (a *Agent) coverage(ctx context.Context, want map[netip.Addr]bgpspeaker.Peer) func(old netip.Addr) bool {
	var learned map[netip.Prefix]bgpspeaker.Route
	var offered map[netip.Prefix]bool
	var offerErr error
	return func(old netip.Addr) bool {
		if learned == nil {
			learned = a.bgp.speaker.Learned()
		}
		for p, r := range learned {
			if r.PeerAddr != old {
				continue
			}
			if offered == nil && offerErr == nil {
				offered = map[netip.Prefix]bool{}
				for addr := range want {
					in, err := a.bgp.speaker.AdjIn(ctx, addr)
					if err != nil {
						offerErr = err
						break
					}
					maps.Copy(offered, in)
				}
			}
			if offerErr != nil || !offered[p] {
				return false
			}
		}
		return true
	}
}

// bgpPolicy is what the speaker may accept and pass on: prefixes inside
// enabled pools (and, on a route reflector, the service ranges it passes
// on), never the node's own confirmed blocks nor any node's address;
// reflection only on a route reflector.
func bgpPolicy(in Inputs, self model.NodeInfo, nodes []model.NodeInfo, cfg model.BGPConfig) bgpspeaker.Policy {
	_, rr := RouteReflector(self)
	var p bgpspeaker.Policy
	p.Reflect = rr
	for _, pool := range in.Pools {
		if !pool.Disabled {
			p.Accept = append(p.Accept, pool.CIDR)
		}
	}
	if rr {
		p.Accept = append(p.Accept, cfg.ServiceCIDRs...)
	}
	for _, b := range in.Blocks {
		if b.Affinity == self.Name && b.State == ipam.StateConfirmed {
			p.Reject = append(p.Reject, b.CIDR)
		}
	}
	for _, n := range nodes {
		if n.IP.IsValid() {
			p.Reject = append(p.Reject, netip.PrefixFrom(n.IP.Addr(), 32))
		}
	}
	return p
}

// explicitSessions are the BGPPeers (with a peerIP) that apply to this
// node: no node and no nodeSelector, the node's name, or a nodeSelector
// matching its labels. (A peering whose password Secret is missing never
// gets here: the cluster view reports and skips it.)
func (a *Agent) explicitSessions(self model.NodeInfo) []model.BGPSession {
	peers, err := a.cluster.BGPPeers()
	if err != nil {
		a.log.Warn("list BGP peers", "err", err)
		return nil
	}
	var out []model.BGPSession
	for _, p := range peers {
		switch {
		case p.Node != "" && p.Node != self.Name:
			continue
		case p.NodeSelector != "":
			sel, err := selector.Parse(p.NodeSelector)
			if err != nil {
				a.cluster.Warn("BGPPeer", p.Name, "InvalidNodeSelector", fmt.Sprintf("spec.nodeSelector: %v; no node peers until it is fixed", err))
				continue
			}
			if !sel.Matches(self.Labels) {
				continue
			}
		}
		if p.AS == 0 || !p.IP.Is4() {
			continue
		}
		out = append(out, model.BGPSession{Name: "bgppeer/" + p.Name, Address: p.IP, Port: p.Port, AS: p.AS, Password: p.Password,
			Keepalive: p.Keepalive, RestartTime: p.RestartTime, TTLSecurity: p.TTLSecurity})
	}
	slices.SortFunc(out, func(x, y model.BGPSession) int { return x.Address.Compare(y.Address) })
	return out
}

// peerConfig turns a session into the speaker's peer configuration, with
// the cluster's timers and graceful restart on every session.
func (a *Agent) peerConfig(s model.BGPSession, cfg model.BGPConfig) bgpspeaker.Peer {
	rt, ka := cfg.RestartTime, cfg.Keepalive
	if s.RestartTime != 0 {
		rt = s.RestartTime
	}
	if rt == 0 {
		rt = DefaultRestartTime
	}
	if s.Keepalive != 0 {
		ka = s.Keepalive
	}
	p := bgpspeaker.Peer{Address: s.Address, AS: s.AS, Passive: s.Passive, Port: uint16(s.Port), Password: s.Password,
		KeepaliveSeconds: uint32(ka / time.Second), HoldSeconds: uint32(cfg.Hold / time.Second),
		GracefulRestartSeconds: uint16(rt / time.Second), RouteReflectorClient: s.RRClient}
	if s.TTLSecurity > 0 && s.TTLSecurity < 255 {
		p.TTLMin = uint8(256 - s.TTLSecurity)
	}
	if s.RRClient && s.ClusterID.IsValid() {
		p.ClusterID = s.ClusterID.String()
	}
	if self := a.selfIP(); self.IsValid() {
		p.LocalAddress = self
	}
	return p
}

func (a *Agent) selfIP() netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.self.IP.Addr()
}

// BGPPeerView is one session as the debug endpoint shows it.
type BGPPeerView struct {
	Address    string    `json:"address"`
	AS         uint32    `json:"as"`
	State      string    `json:"state"`
	Since      time.Time `json:"since,omitzero"`
	Received   uint64    `json:"received"`
	Rejected   int       `json:"rejected"`
	Advertised uint64    `json:"advertised"`
}

// BGPView is the speaker's state for the debug endpoint.
type BGPView struct {
	RouterID   string        `json:"routerID"`
	AS         uint32        `json:"as"`
	Peers      []BGPPeerView `json:"peers"`
	Learned    []string      `json:"learned"` // "prefix via next-hop"
	Advertised []string      `json:"advertised,omitempty"`
}

// BGPStatus reports the speaker's sessions (with the prefixes each peer
// sent that the import policy rejected) and its learned routes. It walks
// GoBGP's tables: for operators and tests, not for polling in a loop.
func (a *Agent) BGPStatus(ctx context.Context) (BGPView, error) {
	a.mu.Lock()
	b := a.bgp
	a.mu.Unlock()
	if b == nil {
		return BGPView{}, errors.New("BGP is off (--bgp=false) or the agent is still starting")
	}
	st, err := b.speaker.Status(ctx)
	if err != nil {
		return BGPView{}, err
	}
	rej, err := b.speaker.Rejected(ctx)
	if err != nil {
		return BGPView{}, err
	}
	v := BGPView{RouterID: st.RouterID.String(), AS: st.AS}
	for _, p := range st.Peers {
		v.Peers = append(v.Peers, BGPPeerView{Address: p.Address.String(), AS: p.AS, State: p.State, Since: p.Since,
			Received: p.Received, Rejected: rej[p.Address], Advertised: p.Advertised})
	}
	for p, r := range b.speaker.Learned() {
		v.Learned = append(v.Learned, p.String()+" via "+r.NextHop.String())
	}
	slices.Sort(v.Learned)
	return v, nil
}
