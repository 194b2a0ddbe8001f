package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	api "github.com/osrg/gobgp/v4/api"
)

// Global is the speaker-wide part of the configuration: what GoBGP's
// StartBgp takes, which GoBGP cannot change on a running server.
type Global struct {
	RouterID   netip.Addr
	AS         uint32
	ListenPort int32
}

// Defaults fills in the zero fields as Config.Defaults does (AS 64512,
// port 179).
func (g Global) Defaults() Global {
	c := Config{RouterID: g.RouterID, AS: g.AS, ListenPort: g.ListenPort}.Defaults()
	return Global{RouterID: c.RouterID, AS: c.AS, ListenPort: c.ListenPort}
}

// String renders g for logs: "router ID 198.18.0.11, AS 64512, port 179".
func (g Global) String() string {
	return fmt.Sprintf("router ID %s, AS %d, port %d", g.RouterID, g.AS, g.ListenPort)
}

func (c Config) global() Global {
	return Global{RouterID: c.RouterID, AS: c.AS, ListenPort: c.ListenPort}
}

// Global returns the router ID, AS and listen port the speaker runs with.
func (s *Speaker) Global() Global {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.global()
}

// SetGlobal changes the router ID, AS or listen port of a running speaker
// and reports whether anything changed. GoBGP takes them only when its BGP
// part starts, so the speaker restarts it in place, as an agent restart
// would but without leaving the process:
//
//   - the old server stops its BGP part keeping graceful restart
//     (StopBgp allow_graceful_restart): sessions that negotiated graceful
//     restart (RFC 4724) end without a NOTIFICATION, so their peers keep
//     this node's routes as stale until the new sessions replace them;
//     a Cease would make them drop the routes at once (see the package
//     doc);
//   - the learned table and the session table are emptied without
//     reporting any prefix as withdrawn (Drain returns nothing for them):
//     the routes stay in the kernel, and the caller holds them in a new
//     start-up window until the new sessions have sent End-of-RIB;
//   - a new server starts with the new global part and a new watch, and
//     gets the policy, the advertisements and the neighbours again (in that
//     order, as at start; the neighbours' iBGP/eBGP type follows the new
//     AS).
//
// A new listen port is tried first: if it cannot be bound nothing is
// changed and the error says so. If the new server fails to start, the
// old global part is started again and the error is returned.
func (s *Speaker) SetGlobal(ctx context.Context, g Global) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return false, errors.New("set bgp global: speaker not started")
	}
	cfg := s.cfg
	cfg.RouterID, cfg.AS, cfg.ListenPort = g.RouterID, g.AS, g.ListenPort
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return false, fmt.Errorf("set bgp global: %w", err)
	}
	old := s.cfg
	if cfg.global() == old.global() {
		return false, nil
	}
	if cfg.ListenPort != old.ListenPort && cfg.ListenPort > 0 {
		if err := checkListen(cfg); err != nil {
			return false, fmt.Errorf("set bgp global: %w", err)
		}
	}
	s.restart(ctx, cfg)
	if err := s.serve(ctx); err != nil {
		// Back to what ran: the peers come back as they were.
		s.log.Error("bgp speaker: the new global configuration does not start; restarting with the old one", "new", cfg.global(), "err", err)
		s.cfg = old
		s.newServer()
		if err2 := s.serve(ctx); err2 != nil {
			s.started = false
			return true, fmt.Errorf("set bgp global %s: %w; and restart with %s: %w", cfg.global(), err, old.global(), err2)
		}
		s.restore(ctx)
		return true, fmt.Errorf("set bgp global %s: %w", cfg.global(), err)
	}
	s.restore(ctx)
	s.log.Debug("bgp speaker restarted with a new global configuration", "old", old.global(), "new", cfg.global(),
		"peers", len(s.peers), "advertisements", len(s.adverts))
	return true, nil
}

// restart stops the running server keeping graceful restart, empties the
// feed for the next generation and makes a new server for cfg. s.mu is
// held.
func (s *Speaker) restart(ctx context.Context, cfg Config) {
	// The old watch's remaining events are ignored from here on: stopping
	// the server drops every peer's Adj-RIB-In, which it reports as
	// withdrawals.
	s.gen++
	s.feed.reset(s.gen)
	s.stop()
	oldSrv, oldRetired := s.srv, s.retired
	if err := oldSrv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
		s.log.Warn("stop bgp for a global change", "err", err)
	}
	// Stop ends what StopBgp leaves (the BFD loop, the gRPC API server);
	// its own StopBgp then fails with "not running", which is dropped.
	oldRetired.Store(true)
	oldSrv.Stop()
	s.cfg = cfg
	s.newServer()
}

// restore gives a new server the policy, the advertisements and the
// neighbours the old one had. What fails is logged and forgotten, so the
// agent's next SetPolicy, SetAdvertisements or SetPeers adds it again.
// s.mu is held.
func (s *Speaker) restore(ctx context.Context) {
	if s.policySet {
		if err := s.installPolicy(ctx, policyNames(s.policyGen), s.policy); err != nil {
			s.log.Warn("restore bgp policy", "err", err)
			s.policySet = false
		}
	}
	for p, nh := range s.adverts {
		if err := s.announce(p, nh); err != nil {
			s.log.Warn("restore advertisement", "prefix", p, "err", err)
			delete(s.adverts, p)
		}
	}
	for _, addr := range sortedAddrs(s.peers) {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peers[addr].toAPI(s.cfg.AS)}); err != nil {
			s.log.Warn("restore peer", "peer", addr, "err", err)
			delete(s.peers, addr)
		}
	}
}

// checkListen binds cfg's listen port on its listen addresses (all when
// none are set) and lets go again: GoBGP's StartBgp would fail on a port
// in use only after the old server stopped.
func checkListen(cfg Config) error {
	addrs := cfg.ListenAddresses
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(int(cfg.ListenPort))))
		if err != nil {
			return fmt.Errorf("listen port %d: %w", cfg.ListenPort, err)
		}
		l.Close()
	}
	return nil
}
