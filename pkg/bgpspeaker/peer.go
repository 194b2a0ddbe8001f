package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// Peer is the desired configuration of one BGP neighbour, keyed by Address.
// The zero value of every optional field means "GoBGP's default" or "off".
type Peer struct {
	// Address is the neighbour's address; it identifies the peer.
	Address netip.Addr
	// AS is the neighbour's AS; equal to the local AS means iBGP.
	AS uint32
	// Passive makes this side wait for the neighbour to connect. Wren's mesh
	// is one-way (the node with the higher IP is passive) so that two nodes
	// never open two TCP connections at once; a collision aborts graceful
	// restart (RFC 4271 §6.8 collision resolution closes one of them).
	Passive bool
	// Port is the neighbour's TCP port; 0 means 179. Tests use other ports.
	Port uint16
	// LocalAddress is the source address for the session; invalid means
	// the kernel picks one.
	LocalAddress netip.Addr
	// KeepaliveSeconds and HoldSeconds are the timers offered in OPEN; 0
	// means GoBGP's defaults (hold 90 s, keepalive hold/3).
	KeepaliveSeconds uint32
	HoldSeconds      uint32
	// ConnectRetrySeconds is the delay between connection attempts; 0 means 5
	// (GoBGP's own default of 120 s leaves a node without routes for two
	// minutes after a failed first attempt).
	ConnectRetrySeconds uint32
	// Password enables TCP MD5 signatures (RFC 2385).
	Password string
	// TTLMin enables the generalized TTL security mechanism (RFC 5082): the
	// neighbour must be at most 256-TTLMin hops away. 0 means off.
	TTLMin uint8
	// EBGPMultihop is the TTL sent to an eBGP neighbour that is not directly
	// connected; 0 means off (TTL 1).
	EBGPMultihop uint8
	// GracefulRestartSeconds enables graceful restart (RFC 4724) with this
	// restart time for IPv4 unicast; 0 means off.
	GracefulRestartSeconds uint16
	// RouteReflectorClient makes this speaker reflect routes to the neighbour
	// (RFC 4456), using ClusterID (dotted quad; empty means the router ID).
	RouteReflectorClient bool
	ClusterID            string
	// MaxPrefixes cuts the session when the neighbour has sent more IPv4
	// unicast prefixes than this (GoBGP's prefix limit: the session goes
	// down with a Cease "maximum number of prefixes reached", RFC 4486,
	// and stays down until the limit or the neighbour changes); 0 means no
	// limit.
	MaxPrefixes uint32
}

func (p Peer) key() string { return p.Address.String() }

func (p Peer) validate() error {
	var errs []error
	if !p.Address.IsValid() {
		errs = append(errs, errors.New("Address: not set"))
	}
	if p.AS == 0 {
		errs = append(errs, errors.New("AS: 0 is reserved"))
	}
	if p.HoldSeconds != 0 && p.HoldSeconds < 3 {
		// RFC 4271 §4.2: the hold time is 0 or at least three seconds.
		errs = append(errs, fmt.Errorf("HoldSeconds: %d is below 3", p.HoldSeconds))
	}
	if p.ClusterID != "" {
		if a, err := netip.ParseAddr(p.ClusterID); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("ClusterID: %q is not a dotted quad", p.ClusterID))
		}
	}
	if p.TTLMin != 0 && p.EBGPMultihop != 0 {
		errs = append(errs, errors.New("TTLMin and EBGPMultihop: mutually exclusive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %s: %w", p.Address, err)
	}
	return nil
}

// needsReset reports whether changing a running neighbour from old to new
// needs the session to be torn down and set up again, and why.
//
// Everything carried in the OPEN message or in the TCP connection can only
// change with a new session: the AS (OPEN "My AS", RFC 4271 §4.2), the hold
// time (negotiated in OPEN; GoBGP's UpdatePeer stores new timers but keeps
// the negotiated hold time until the next session), the graceful-restart
// capability (RFC 4724 §3), the MD5 password, the addresses and ports of
// the connection and which side connects. TTL security and eBGP multihop
// are socket options, but GoBGP v4's UpdatePeer re-creates the session for
// them (its NeedsResendOpenMessage compares them), so they are listed here
// too rather than left to a reset the caller did not ask for.
// Route-reflector client and cluster ID are not in OPEN, but UpdatePeer
// ignores them. A new prefix limit must re-create a session the old limit
// cut off.
func needsReset(old, new Peer) (bool, string) {
	switch {
	case old.AS != new.AS:
		return true, "AS"
	case old.KeepaliveSeconds != new.KeepaliveSeconds || old.HoldSeconds != new.HoldSeconds:
		return true, "timers"
	case old.ConnectRetrySeconds != new.ConnectRetrySeconds:
		return true, "connect retry"
	case old.GracefulRestartSeconds != new.GracefulRestartSeconds:
		return true, "graceful restart"
	case old.Password != new.Password:
		return true, "password"
	case old.Passive != new.Passive || old.Port != new.Port || old.LocalAddress != new.LocalAddress:
		return true, "transport"
	case old.TTLMin != new.TTLMin || old.EBGPMultihop != new.EBGPMultihop:
		return true, "TTL"
	case old.RouteReflectorClient != new.RouteReflectorClient || old.ClusterID != new.ClusterID:
		return true, "route reflector"
	case old.MaxPrefixes != new.MaxPrefixes:
		// A peer cut off by the limit stays down until its session is
		// re-created; raising the limit must bring it back.
		return true, "prefix limit"
	}
	return false, ""
}

// NeedsReset reports whether changing a running neighbour from old to new
// makes SetPeers re-create its session (and why).
func NeedsReset(old, new Peer) (bool, string) { return needsReset(old, new) }

// toAPI renders p as a GoBGP neighbour of a speaker in localAS. The router
// ID is the default cluster ID of a route reflector. Every enum is set:
// GoBGP v4's zero values mean UNSPECIFIED.
func (p Peer) toAPI(localAS uint32) *api.Peer {
	connectRetry := p.ConnectRetrySeconds
	if connectRetry == 0 {
		connectRetry = 5
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.key(),
			PeerAsn:         p.AS,
			AuthPassword:    p.Password,
			Type:            api.PeerType_PEER_TYPE_INTERNAL,
			RemovePrivate:   api.RemovePrivate_REMOVE_PRIVATE_UNSPECIFIED, // there is no NONE: UNSPECIFIED keeps private ASes,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(connectRetry),
			HoldTime:          uint64(p.HoldSeconds),
			KeepaliveInterval: uint64(p.KeepaliveSeconds),
		}},
		Transport: &api.Transport{
			PassiveMode: p.Passive,
			RemotePort:  uint32(p.Port),
		},
	}
	if p.AS != localAS {
		ap.Conf.Type = api.PeerType_PEER_TYPE_EXTERNAL
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.TTLMin != 0 {
		ap.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(p.TTLMin)}
	}
	if p.EBGPMultihop != 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihop)}
	}
	if p.RouteReflectorClient {
		ap.RouteReflector = &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: p.ClusterID,
		}
	}
	afi := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: ipv4Unicast, Enabled: true}}
	if p.GracefulRestartSeconds != 0 {
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(p.GracefulRestartSeconds),
			// RFC 8538: a NOTIFICATION other than Hard Reset (such as the
			// Cease a peer sends when it re-creates the session for a
			// route-reflector change) starts graceful restart instead of
			// dropping the routes at once.
			NotificationEnabled: true,
		}
		// GoBGP advertises a family in the GR capability only when the
		// family's MpGracefulRestart is enabled too.
		afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	if p.MaxPrefixes != 0 {
		afi.PrefixLimits = &api.PrefixLimit{Family: ipv4Unicast, MaxPrefixes: p.MaxPrefixes}
	}
	ap.AfiSafis = []*api.AfiSafi{afi}
	return ap
}

// SetPeers makes the running neighbours equal to desired: neighbours not in
// desired are deleted (with a Cease, which is right for a deconfigured peer),
// new ones are added, and changed ones are deleted and added again: every
// field of Peer needs a new session (needsReset says which changed), which
// is also what GoBGP v4's UpdatePeer would do for them. AddPeer is never
// called for a running neighbour: GoBGP refuses it, and kube-router's
// swallowing of that error left config changes unapplied
// (cloudnativelabs/kube-router#676).
// Calling SetPeers twice with the same list does nothing the second time.
// Errors are per peer and joined; the peers that succeeded stay applied.
func (s *Speaker) SetPeers(ctx context.Context, desired []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set peers: speaker not started")
	}

	want := make(map[netip.Addr]Peer, len(desired))
	var errs []error
	for _, p := range desired {
		if err := p.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("peer %s: listed twice", p.Address))
			continue
		}
		want[p.Address] = p
	}

	// Delete first, so that an address that moves between peers is free.
	for _, addr := range sortedAddrs(s.peers) {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.feed.forget(addr)
		s.log.Info("peer removed", "peer", addr)
	}

	for _, addr := range sortedAddrs(want) {
		p := want[addr]
		old, running := s.peers[addr]
		switch {
		case !running:
			if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p.toAPI(s.cfg.AS)}); err != nil {
				errs = append(errs, fmt.Errorf("add peer %s: %w", addr, err))
				continue
			}
			s.log.Info("peer added", "peer", addr, "as", p.AS, "passive", p.Passive)
		case old == p:
			continue
		default:
			// Every field of Peer is in OPEN or re-creates the session in
			// GoBGP v4 (needsReset): delete and add again.
			_, why := needsReset(old, p)
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
				errs = append(errs, fmt.Errorf("reset peer %s: delete: %w", addr, err))
				continue
			}
			delete(s.peers, addr)
			if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p.toAPI(s.cfg.AS)}); err != nil {
				errs = append(errs, fmt.Errorf("reset peer %s: add: %w", addr, err))
				continue
			}
			s.log.Info("peer reset for config change", "peer", addr, "changed", why)
		}
		s.peers[addr] = p
	}
	return errors.Join(errs...)
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
