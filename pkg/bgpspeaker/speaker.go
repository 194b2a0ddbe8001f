package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Speaker is an embedded BGP speaker. Its methods are safe for concurrent
// use.
type Speaker struct {
	log  *slog.Logger
	feed *feed

	mu      sync.Mutex // serialises Start, Close and the Set methods; guards cfg and srv
	cfg     Config
	srv     *server.BgpServer
	retired *atomic.Bool // srv's logger drops its stop error (see gobgpHandler)
	gen     uint64       // srv's generation (see feed.gen)
	started bool
	closed  bool
	stop    context.CancelFunc // ends the watch goroutine
	peers   map[netip.Addr]Peer
	adverts map[netip.Prefix]netip.Addr // prefix -> next hop as added

	policy    Policy // the assigned policy (SetPolicy)
	policySet bool
	policyGen int
}

// New checks cfg (after Defaults) and returns a speaker that is not yet
// running.
func New(cfg Config) (*Speaker, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp speaker config: %w", err)
	}
	log := cfg.Logger.With("component", "bgpspeaker")
	if cfg.APIAddress != "" {
		// GoBGP listens in the background and only logs a failure, so
		// find out now whether the address is free.
		l, err := net.Listen("tcp", cfg.APIAddress)
		if err != nil {
			return nil, fmt.Errorf("gobgp API on %s: %w", cfg.APIAddress, err)
		}
		l.Close()
		log.Info("serving GoBGP's API (for the gobgp CLI)", "address", cfg.APIAddress)
	}
	s := &Speaker{
		cfg:     cfg,
		log:     log,
		peers:   make(map[netip.Addr]Peer),
		adverts: make(map[netip.Prefix]netip.Addr),
	}
	s.newServer()
	s.feed = newFeed(func(addr netip.Addr, state, why string) {
		if why != "" {
			log.Info("peer state", "peer", addr, "state", state, "reason", why)
			return
		}
		log.Info("peer state", "peer", addr, "state", state)
	})
	return s, nil
}

// newServer makes a new GoBGP server (not yet serving) for s.cfg. s.mu is
// held, or s is not shared yet.
func (s *Speaker) newServer() {
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug - 4) // the agent's handler filters
	s.retired = new(atomic.Bool)
	opts := []server.ServerOption{server.LoggerOption(gobgpLogger(s.cfg.Logger, s.retired), level)}
	if s.cfg.APIAddress != "" {
		opts = append(opts, server.GrpcListenAddress(s.cfg.APIAddress))
	}
	s.srv = server.NewBgpServer(opts...)
}

// Start runs the BGP server and registers the best-path, End-of-RIB and
// peer watches. The watches are registered before any neighbour or path
// can exist (SetPeers and SetAdvertisements refuse to run before Start),
// so no change is missed. ctx bounds only the start-up calls.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("start bgp speaker: already started")
	}
	if err := s.serve(ctx); err != nil {
		return err
	}
	s.started = true
	s.log.Info("bgp speaker started", "routerID", s.cfg.RouterID, "as", s.cfg.AS, "listenPort", s.cfg.ListenPort)
	return nil
}

// serve runs s.srv with s.cfg's global part and registers the watch of
// generation s.gen. s.mu is held.
func (s *Speaker) serve(ctx context.Context) error {
	// Serve runs GoBGP's management loop; every API call below goes through
	// it. It returns only after StopBgp, which the agent calls only to
	// change the global configuration (see SetGlobal and the package doc).
	go s.srv.Serve()
	listenAddrs := s.cfg.ListenAddresses
	if s.cfg.ListenPort < 0 {
		listenAddrs = nil
	}
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             s.cfg.AS,
		RouterId:        s.cfg.RouterID.String(),
		ListenPort:      s.cfg.ListenPort,
		ListenAddresses: listenAddrs,
		// Families holds indexes into GoBGP's oc.AfiSafiTypeToIntMap, not
		// AFI<<16|SAFI route-family codes: 0 is "ipv4-unicast". (A route
		// family code here silently leaves the global RIB without IPv4
		// unicast, and AddPath then fails only in ListPath.)
		Families: []uint32{0},
	}})
	if err != nil {
		s.srv.Stop()
		return fmt.Errorf("start bgp: %w", err)
	}
	watchCtx, stop := context.WithCancel(context.Background())
	err = s.srv.WatchEvent(watchCtx, s.feed.watch(s.gen), server.WatchBestPath(true), server.WatchEor(false), server.WatchPeer())
	if err != nil {
		stop()
		s.srv.Stop()
		return fmt.Errorf("watch bgp events: %w", err)
	}
	s.stop = stop
	return nil
}

// Close deletes every neighbour with a Cease and closes the listeners
// (GoBGP's StopBgp without graceful restart). It is for tests and
// deliberate teardown only: the agent must not call it on shutdown,
// because the Cease makes the peers drop this node's routes instead of
// keeping them for the graceful-restart time (see the package doc).
func (s *Speaker) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closed {
		s.closed = true
		return nil
	}
	s.closed = true
	s.started = false
	err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	s.stop()
	if err != nil {
		return fmt.Errorf("stop bgp: %w", err)
	}
	return nil
}

// SetAdvertisements makes the locally originated IPv4 unicast paths equal to
// desired, all with next hop nextHop and origin IGP: it adds the missing (or
// those whose next hop changed, which replaces the path) and withdraws the
// rest. Calling it twice with the same input does nothing the second time.
func (s *Speaker) SetAdvertisements(ctx context.Context, desired []netip.Prefix, nextHop netip.Addr) error {
	if !nextHop.Is4() {
		return fmt.Errorf("set advertisements: next hop %s is not IPv4", nextHop)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set advertisements: speaker not started")
	}
	want := make(map[netip.Prefix]struct{}, len(desired))
	var errs []error
	for _, p := range desired {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("advertise %s: not an IPv4 prefix", p))
			continue
		}
		want[p.Masked()] = struct{}{}
	}
	// Add before withdraw: a replacement covering prefix is out before the
	// old one goes.
	for p := range want {
		if nh, ok := s.adverts[p]; ok && nh == nextHop {
			continue
		}
		if err := s.announce(p, nextHop); err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		s.adverts[p] = nextHop
		s.log.Debug("advertised", "prefix", p, "nextHop", nextHop)
	}
	for p, nh := range s.adverts {
		if _, ok := want[p]; ok {
			continue
		}
		path, err := localPath(p, nh, true)
		if err == nil {
			err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.adverts, p)
		s.log.Debug("withdrawn", "prefix", p)
	}
	return errors.Join(errs...)
}

// announce adds the locally originated path to p via nextHop. s.mu is
// held.
func (s *Speaker) announce(p netip.Prefix, nextHop netip.Addr) error {
	path, err := localPath(p, nextHop, false)
	if err != nil {
		return err
	}
	_, err = s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
	return err
}

// localPath is a locally originated IPv4 unicast path: ORIGIN IGP and
// NEXT_HOP nextHop.
func localPath(p netip.Prefix, nextHop netip.Addr, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	nh, err := bgp.NewPathAttributeNextHop(nextHop)
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{
		Family:     bgp.RF_IPv4_UC,
		Nlri:       nlri,
		Attrs:      []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh},
		Withdrawal: withdraw,
		// The path's timestamp: GoBGP takes it from here, and the gobgp
		// CLI shows it as the route's age.
		Age: time.Now().Unix(),
	}, nil
}
