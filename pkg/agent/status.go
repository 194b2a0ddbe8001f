package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/desired"
	"github.com/wren-net/wren/pkg/model"
)

// Snapshot is what the loop publishes at the end of every full run, for
// readers on other goroutines (the debug API). It is never changed once
// published, so a reader needs no lock and never holds the loop up.
type Snapshot struct {
	// Time is when the run ended; Err what went wrong in it ("" if
	// nothing).
	Time time.Time
	Err  string
	// Self is this node as the run saw it (labels, AS, route-reflector
	// role, the detected address).
	Self model.NodeInfo
	// Sessions are the BGP sessions the run wanted, and those kept for
	// make-before-break; nil without BGP.
	Sessions []bgpsession.SessionInfo
	// Held are the learned routes kept in the kernel though BGP no longer
	// announces them; Shaper is how the run turned learned routes into
	// kernel routes (nil without BGP). Both are read-only.
	Held   []bgpsession.HeldRoute
	Shaper *desired.LearnedShaper
	// Holding: the session controller keeps the previous run's or a lost
	// session's routes (a start-up or reshape window is open).
	Holding bool
	// Workloads are the local pods the run wired; Tunnels its tunnels.
	Workloads []model.Workload
	Tunnels   model.Tunnels
}

// publish stores the loop's state after a full run (d is its desired
// state; nil when the run ended before building it). Loop goroutine only.
func (a *Agent) publish(self model.NodeInfo, d *model.Desired, err error) {
	s := &Snapshot{Time: time.Now(), Self: self}
	if err != nil {
		s.Err = err.Error()
	}
	if d != nil {
		s.Workloads = slices.Clone(d.Workloads)
		s.Tunnels = d.Tunnels
	} else if old := a.snap.Load(); old != nil {
		s.Workloads, s.Tunnels = old.Workloads, old.Tunnels
	}
	if a.bgp != nil {
		s.Sessions = a.bgp.ctl.Sessions()
		s.Held = a.bgp.ctl.Held()
		s.Shaper = a.bgp.shaper
		s.Holding = a.bgp.holding
	}
	a.snap.Store(s)
}

// bgpOf returns the BGP state for readers outside the loop (startBGP sets
// it under a.mu); nil until the speaker runs, and without BGP. They may
// use its speaker, which is safe for concurrent use, never its
// controller, which is the loop's.
func (a *Agent) bgpOf() *bgpState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bgp
}

// LastSnapshot returns the state the loop published after its last full
// run, or nil before the first one ends.
func (a *Agent) LastSnapshot() *Snapshot { return a.snap.Load() }

// PeerView is one BGP session as the debug API shows it.
type PeerView struct {
	Address netip.Addr
	AS      uint32
	// Kind is why the session exists (model.SessionKind, or "retiring");
	// Name the node or BGPPeer it goes to. Both are empty for a session
	// the speaker has that the last run did not ask for (it is going).
	Kind  string
	Name  string
	State string
	// Since is when it became established (zero otherwise).
	Since time.Time
	// IPv4 unicast prefixes: in the peer's Adj-RIB-In (Received, paths
	// dropped for an AS or originator loop included), passed the loop
	// checks and the import policy (Accepted), refused by the import
	// policy (Rejected), and advertised to the peer.
	Received, Accepted, Rejected, Advertised uint64
	EndOfRIB                                 bool
	Flaps                                    int
	LastDown                                 string
}

// StatusView is the node and its BGP sessions (wrenctl status).
type StatusView struct {
	Node     string
	IP       netip.Prefix
	AS       uint32
	RouterID netip.Addr
	// RouteReflector and ClusterID: this node's reflector role.
	RouteReflector bool
	ClusterID      netip.Addr
	// NotReady is why /readyz fails ("" when ready).
	NotReady string
	BGP      bool
	Peers    []PeerView
	// LastSync is when the loop last completed a full run (zero before
	// the first), LastSyncErr what went wrong in it.
	LastSync    time.Time
	LastSyncErr string
	Started     time.Time
}

// Status assembles the node's status from the loop's last snapshot and
// the speaker's own session counters. It never waits for the loop; the
// speaker's counters cost a walk of each peer's Adj-RIB-In inside GoBGP.
func (a *Agent) Status(ctx context.Context) (StatusView, error) { return a.status(ctx, true) }

// ScrapeStatus is Status for the metrics: the prefixes the import policy
// rejected are counted at most once a minute (each count walks every
// peer's Adj-RIB-In: seconds and hundreds of MiB for a peer that sends a
// full table), otherwise the last count is reused.
func (a *Agent) ScrapeStatus(ctx context.Context) (StatusView, error) { return a.status(ctx, false) }

// rejectedTTL is how old a rejected count ScrapeStatus may reuse.
const rejectedTTL = time.Minute

// rejected counts the prefixes each peer sent that the import policy
// refused; unless fresh, a count younger than rejectedTTL is reused.
func (a *Agent) rejected(ctx context.Context, b *bgpState, fresh bool) (map[netip.Addr]int, error) {
	a.rejMu.Lock()
	defer a.rejMu.Unlock()
	if !fresh && a.rejCount != nil && time.Since(a.rejAt) < rejectedTTL {
		return a.rejCount, nil
	}
	m, err := b.speaker.Rejected(ctx)
	if err != nil {
		return nil, err
	}
	a.rejCount, a.rejAt = m, time.Now()
	return m, nil
}

func (a *Agent) status(ctx context.Context, fresh bool) (StatusView, error) {
	b := a.bgpOf()
	v := StatusView{Node: a.cfg.NodeName, Started: a.startedAt, BGP: b != nil}
	if err := a.Ready(); err != nil {
		v.NotReady = err.Error()
	}
	snap := a.LastSnapshot()
	if snap == nil {
		a.mu.Lock()
		v.IP = a.self.IP
		a.mu.Unlock()
		return v, nil
	}
	v.LastSync, v.LastSyncErr = snap.Time, snap.Err
	v.IP = snap.Self.IP
	v.RouteReflector = snap.Self.RouteReflector
	if v.RouteReflector {
		v.ClusterID = snap.Self.RRClusterID
	}
	if b == nil {
		return v, nil
	}
	st, err := b.speaker.Status(ctx)
	if err != nil {
		return v, err
	}
	// GoBGP's own "accepted" leaves out only the paths it drops for an AS
	// or originator loop, not those the import policy refuses: those are
	// counted by walking each peer's Adj-RIB-In (what a debug call or a
	// scrape costs on a peer with a big table).
	rejected, err := a.rejected(ctx, b, fresh)
	if err != nil {
		return v, err
	}
	v.AS, v.RouterID = st.AS, st.RouterID
	kinds := make(map[netip.Addr]bgpsession.SessionInfo, len(snap.Sessions))
	for _, s := range snap.Sessions {
		kinds[s.Address] = s
	}
	for _, p := range st.Peers {
		pv := PeerView{Address: p.Address, AS: p.AS, State: p.State, Since: p.Since,
			Received: p.Received, Advertised: p.Advertised,
			EndOfRIB: !p.EndOfRIB.IsZero(), Flaps: p.Flaps, LastDown: p.LastDown}
		pv.Rejected = uint64(rejected[p.Address])
		pv.Accepted = p.Accepted - min(p.Accepted, pv.Rejected)
		if k, ok := kinds[p.Address]; ok {
			// Session names are "<kind>/<node or BGPPeer>".
			pv.Kind, pv.Name = string(k.Kind), k.Name
			if _, name, ok := strings.Cut(k.Name, "/"); ok {
				pv.Name = name
			}
			if k.Retiring {
				pv.Kind = "retiring"
			}
		}
		v.Peers = append(v.Peers, pv)
	}
	return v, nil
}
