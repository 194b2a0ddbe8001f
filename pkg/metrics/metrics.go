// Package metrics is wren-agent's Prometheus metrics, served on
// --metrics-addr (":9091") at /metrics. docs/metrics.md lists every
// series with the PromQL an operator uses; deploy/monitoring holds the
// alert rules and the Grafana dashboard built on them.
//
// State is read at scrape time from the views the agent publishes for its
// debug API (a Source: BGP sessions and readiness, IPAM as the cluster
// cache has it, the routes in place), so nothing is counted twice and the
// loop is never waited for. The events no view holds (reconciler runs,
// kernel write errors and repairs, IPAM running out of blocks, CNI
// commands) reach Metrics through agent.Observer, one call at the place
// they happen; the packages that make them never import Prometheus.
//
// Every series carries node="<node name>": several agents' series stay
// apart however they are scraped, and alerts can name the node.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// Source is what the scrape-time collector reads: the agent.
type Source interface {
	// Status is the node's readiness, last full run and BGP sessions
	// (with the speaker's prefix counters).
	Status(ctx context.Context) (agent.StatusView, error)
	// IPAMUsage is the pools and this node's blocks from the cluster cache.
	IPAMUsage() (agent.IPAMUsage, error)
	// ProgrammedRoutes counts the routes in the kernel by kind.
	ProgrammedRoutes() map[model.RouteKind]int
}

var (
	_ Source         = (*agent.Agent)(nil)
	_ agent.Observer = (*Metrics)(nil)
)

// Config configures Metrics.
type Config struct {
	// Node is this node's name, the node label of every series.
	Node string
	// Version is the agent's build version (wren_build_info).
	Version string
	// ScrapeTimeout bounds the reads of one scrape (the BGP speaker's
	// session counters); 5 s by default.
	ScrapeTimeout time.Duration
	// Logger gets scrape errors and the server's start and end.
	Logger *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.ScrapeTimeout == 0 {
		c.ScrapeTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Metrics holds the agent's registry and its event metrics; it is the
// agent's Observer.
type Metrics struct {
	cfg  Config
	reg  *prometheus.Registry
	wrap prometheus.Registerer // reg, adding node="<Config.Node>"

	reconcileSeconds *prometheus.HistogramVec
	reconcileErrors  *prometheus.CounterVec
	routeWriteErrors prometheus.Counter
	routeRepairs     prometheus.Counter
	blockExhaustion  *prometheus.CounterVec
	cniSeconds       *prometheus.HistogramVec
	cniFailures      *prometheus.CounterVec
}

// The CNI commands and failure reasons, pre-created so that every series
// exists (at 0) before the first event: rate() and increase() need a
// first sample to compare with.
var (
	cniCommands = []string{"add", "del", "check"}
	cniReasons  = []cniserver.Reason{cniserver.ReasonInternal, cniserver.ReasonInvalidArgument, cniserver.ReasonInvalidNetNS,
		cniserver.ReasonNotFound, cniserver.ReasonPoolExhausted, cniserver.ReasonNotReady, cniserver.ReasonMismatch,
		cniserver.ReasonAPIUnavailable}
)

// Outcomes of wren_ipam_block_exhaustion_total.
const (
	outcomeBorrowed  = "borrowed"
	outcomeExhausted = "exhausted"
)

// New builds the registry with the event metrics, the build info and the
// Go runtime and process collectors. Watch adds the agent's state.
func New(cfg Config) *Metrics {
	cfg.Defaults()
	reg := prometheus.NewRegistry()
	m := &Metrics{cfg: cfg, reg: reg, wrap: prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.Node}, reg)}
	m.reconcileSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "wren_reconcile_duration_seconds",
		Help: "Time one run of a reconciler took (tunnels, veths, routes, routes-delta: the BGP fast lane's batch, advertisements, sessions).",
		// 0.5 ms to 32 s: a fast-lane batch of a few routes to a full
		// resync of 100k routes.
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
	}, []string{"reconciler"})
	m.reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wren_reconcile_errors_total",
		Help: "Runs of a reconciler that ended with an error (retried with backoff).",
	}, []string{"reconciler"})
	m.routeWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wren_kernel_route_write_errors_total",
		Help: "Kernel route writes (add, replace, delete) that failed, in full runs and BGP batches.",
	})
	m.routeRepairs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wren_kernel_route_repairs_total",
		Help: "Routes Wren had in place that the kernel lost or someone changed, written again.",
	})
	m.blockExhaustion = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wren_ipam_block_exhaustion_total",
		Help: "Address allocations that found no block to claim for this node: outcome=borrowed took an address from another node's block, outcome=exhausted failed.",
	}, []string{"outcome"})
	m.cniSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wren_cni_request_duration_seconds",
		Help:    "Time the agent took to answer a CNI command (add, del, check), failures included.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"command"})
	m.cniFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wren_cni_failures_total",
		Help: "CNI commands that failed, by command and reason (the reason decides the CNI error code the plugin returns).",
	}, []string{"command", "reason"})
	for _, r := range agent.Reconcilers {
		m.reconcileSeconds.WithLabelValues(r)
		m.reconcileErrors.WithLabelValues(r)
	}
	m.blockExhaustion.WithLabelValues(outcomeBorrowed)
	m.blockExhaustion.WithLabelValues(outcomeExhausted)
	for _, c := range cniCommands {
		m.cniSeconds.WithLabelValues(c)
		for _, r := range cniReasons {
			m.cniFailures.WithLabelValues(c, r.String())
		}
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "wren_build_info",
		Help:        "Always 1; the agent's version and the Go version it was built with are labels.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.wrap.MustRegister(m.reconcileSeconds, m.reconcileErrors, m.routeWriteErrors, m.routeRepairs, m.blockExhaustion,
		m.cniSeconds, m.cniFailures, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch registers the collector that reads src at every scrape. Call it
// once.
func (m *Metrics) Watch(src Source) error {
	return m.wrap.Register(newStateCollector(src, m.cfg.ScrapeTimeout))
}

// Gatherer is the registry, for tests and other handlers.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus text (or protobuf)
// format. A scrape that cannot read part of the state (the BGP speaker
// timed out) serves the rest and logs the error.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{m.cfg.Logger.With("component", "metrics")},
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       2 * m.cfg.ScrapeTimeout,
	})
}

// Serve watches src and serves /metrics on addr until ctx ends. An empty
// addr turns the server off (Serve returns nil at once).
func (m *Metrics) Serve(ctx context.Context, addr string, src Source) error {
	log := m.cfg.Logger.With("component", "metrics")
	if addr == "" {
		log.Info("metrics server off (--metrics-addr is empty)")
		return nil
	}
	if err := m.Watch(src); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics server (--metrics-addr): %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("serving metrics", "addr", l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server on %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics server: %w", err)
		}
		return nil
	}
}

// Reconciled implements agent.Observer.
func (m *Metrics) Reconciled(reconciler string, took time.Duration, err error) {
	m.reconcileSeconds.WithLabelValues(reconciler).Observe(took.Seconds())
	if err != nil {
		m.reconcileErrors.WithLabelValues(reconciler).Inc()
	}
}

// RoutesWritten implements agent.Observer.
func (m *Metrics) RoutesWritten(s routes.Stats) {
	m.routeWriteErrors.Add(float64(s.Errors))
	m.routeRepairs.Add(float64(s.Repaired))
}

// NoFreeBlock implements agent.Observer.
func (m *Metrics) NoFreeBlock(borrowed bool) {
	if borrowed {
		m.blockExhaustion.WithLabelValues(outcomeBorrowed).Inc()
	} else {
		m.blockExhaustion.WithLabelValues(outcomeExhausted).Inc()
	}
}

// ObserveCNI implements agent.Observer (cniserver.Observer).
func (m *Metrics) ObserveCNI(command string, took time.Duration, err error) {
	m.cniSeconds.WithLabelValues(command).Observe(took.Seconds())
	if err != nil {
		m.cniFailures.WithLabelValues(command, cniserver.ReasonOf(err).String()).Inc()
	}
}

// slogPrinter is promhttp's error log on slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("scrape", "err", fmt.Sprint(v...)) }

// bgpStates are the BGP FSM states wren_bgp_peers always reports (0 when
// no peer is in them), as bgpspeaker names them.
var bgpStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

// stateCollector reads a Source at scrape time.
type stateCollector struct {
	src     Source
	timeout time.Duration

	ready, lastSync, lastSyncOK                           *prometheus.Desc
	peers, peerUp, flaps                                  *prometheus.Desc
	received, accepted, rejected, advertised              *prometheus.Desc
	programmed                                            *prometheus.Desc
	poolSize, poolFree, poolBlocks, poolUnclaimed         *prometheus.Desc
	blocks, allocated, ownFree, borrowed, lent, ipamError *prometheus.Desc
}

func newStateCollector(src Source, timeout time.Duration) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	peer := []string{"peer", "type"}
	return &stateCollector{src: src, timeout: timeout,
		ready:      d("wren_agent_ready", "1 when /readyz answers 200: the node is registered and its dataplane synced (see wrenctl status for why not)."),
		lastSync:   d("wren_agent_last_sync_timestamp_seconds", "When the loop last completed a full run (Unix time; 0 before the first)."),
		lastSyncOK: d("wren_agent_last_sync_success", "1 when the last full run applied everything without an error."),
		peers:      d("wren_bgp_peers", "BGP sessions by FSM state and type (mesh, route-reflector, rr-client, global, node-specific, retiring, unknown).", "state", "type"),
		peerUp:     d("wren_bgp_peer_up", "1 while the BGP session to the peer is Established.", peer...),
		flaps:      d("wren_bgp_session_flaps_total", "Times the BGP session to the peer left Established since the agent started.", peer...),
		received:   d("wren_bgp_prefixes_received", "IPv4 unicast prefixes the peer sent (its Adj-RIB-In), accepted or not.", peer...),
		accepted:   d("wren_bgp_prefixes_accepted", "IPv4 unicast prefixes from the peer the import policy accepted.", peer...),
		rejected:   d("wren_bgp_prefixes_rejected", "IPv4 unicast prefixes from the peer the import policy rejected (outside every pool, the default route, node addresses, this node's own blocks).", peer...),
		advertised: d("wren_bgp_prefixes_advertised", "IPv4 unicast prefixes advertised to the peer.", peer...),
		programmed: d("wren_routes_programmed", "Wren's routes in the kernel by kind: blackhole (own blocks), pod (local /32s), remote-tunnel, remote-direct.", "kind"),
		poolSize:   d("wren_ipam_pool_addresses", "Addresses in the IPPool (every agent reports every pool).", "pool"),
		poolFree:   d("wren_ipam_pool_free_addresses", "Addresses of the IPPool no allocation holds.", "pool"),
		poolBlocks: d("wren_ipam_pool_blocks", "Blocks claimed from the IPPool by any node.", "pool"),
		poolUnclaimed: d("wren_ipam_pool_unclaimed_blocks",
			"Blocks of the IPPool no node has claimed yet; at 0, a node whose blocks are full borrows single addresses from other nodes' blocks.", "pool"),
		blocks:    d("wren_ipam_blocks", "Blocks this node owns (its affinity), by claim state (pending, confirmed).", "state"),
		allocated: d("wren_ipam_allocated_addresses", "Addresses allocated for this node's pods and tunnels, in its own blocks or borrowed."),
		ownFree:   d("wren_ipam_block_free_addresses", "Free addresses in this node's confirmed blocks."),
		borrowed:  d("wren_ipam_borrowed_addresses", "Addresses this node's pods use from other nodes' blocks (each routed as a /32)."),
		lent:      d("wren_ipam_lent_addresses", "Addresses of this node's blocks that other nodes' pods use."),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ready, c.lastSync, c.lastSyncOK, c.peers, c.peerUp, c.flaps, c.received,
		c.accepted, c.rejected, c.advertised, c.programmed, c.poolSize, c.poolFree, c.poolBlocks, c.poolUnclaimed,
		c.blocks, c.allocated, c.ownFree, c.borrowed, c.lent} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A view that cannot be read
// becomes an invalid metric (the scrape serves the rest and logs it).
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st, err := c.src.Status(ctx)
	gauge(c.ready, b2f(st.NotReady == ""))
	if !st.LastSync.IsZero() {
		gauge(c.lastSync, float64(st.LastSync.UnixNano())/1e9)
	} else {
		gauge(c.lastSync, 0)
	}
	gauge(c.lastSyncOK, b2f(!st.LastSync.IsZero() && st.LastSyncErr == ""))
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.peers, fmt.Errorf("read the BGP sessions: %w", err))
	} else {
		c.collectPeers(ch, st.Peers)
	}

	for k, n := range c.src.ProgrammedRoutes() {
		gauge(c.programmed, float64(n), k.String())
	}

	u, err := c.src.IPAMUsage()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.poolFree, fmt.Errorf("read IPAM from the cluster cache: %w", err))
		return
	}
	for _, p := range u.Pools {
		gauge(c.poolSize, float64(p.Size), p.Name)
		gauge(c.poolFree, float64(p.Free), p.Name)
		gauge(c.poolBlocks, float64(p.Blocks), p.Name)
		gauge(c.poolUnclaimed, float64(p.Unclaimed), p.Name)
	}
	for _, s := range []string{ipam.StatePending, ipam.StateConfirmed} {
		gauge(c.blocks, float64(u.Blocks[s]), s)
	}
	gauge(c.allocated, float64(u.Allocated))
	gauge(c.ownFree, float64(u.OwnFree))
	gauge(c.borrowed, float64(u.Borrowed))
	gauge(c.lent, float64(u.Lent))
}

// collectPeers reports each session and the count per state and type.
func (c *stateCollector) collectPeers(ch chan<- prometheus.Metric, peers []agent.PeerView) {
	type key struct{ state, typ string }
	count := map[key]int{}
	var types []string
	for _, p := range peers {
		typ := p.Kind
		if typ == "" {
			typ = "unknown" // a session the last run did not ask for (it is going)
		}
		if !slices.Contains(types, typ) {
			types = append(types, typ)
		}
		count[key{p.State, typ}]++
		labels := []string{p.Address.String(), typ}
		ch <- prometheus.MustNewConstMetric(c.peerUp, prometheus.GaugeValue, b2f(p.State == "established"), labels...)
		ch <- prometheus.MustNewConstMetric(c.flaps, prometheus.CounterValue, float64(p.Flaps), labels...)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.GaugeValue, float64(p.Received), labels...)
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.GaugeValue, float64(p.Accepted), labels...)
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.GaugeValue, float64(p.Rejected), labels...)
		ch <- prometheus.MustNewConstMetric(c.advertised, prometheus.GaugeValue, float64(p.Advertised), labels...)
	}
	for _, typ := range types {
		states := bgpStates
		for k := range count {
			if k.typ == typ && !slices.Contains(states, k.state) {
				states = append(states[:len(states):len(states)], k.state) // a state bgpspeaker calls "unknown"
			}
		}
		for _, s := range states {
			ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(count[key{s, typ}]), s, typ)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
