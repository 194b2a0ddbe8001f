package metrics

// The registry the agent builds, over a fake Source and with every hook
// called once: values, labels, lint, and that docs/metrics.md documents
// every family. Test addresses: nodes 198.18.0.0/24, pools in
// 10.244.0.0/16; the HTTP test listens on 127.0.0.1 only.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/routes"
)

// fakeSource is a node-1 with two BGP sessions (one up), routes of every
// kind and a small pool from which it borrows.
type fakeSource struct {
	statusErr error
}

func (f fakeSource) Status(context.Context) (agent.StatusView, error) {
	v := agent.StatusView{Node: "node-1", BGP: true, LastSync: time.Unix(1700000000, 500_000_000), Peers: []agent.PeerView{
		{Address: netip.MustParseAddr("198.18.0.12"), Kind: "mesh", State: "established", Received: 3, Accepted: 1, Rejected: 2, Advertised: 4, Flaps: 1},
		{Address: netip.MustParseAddr("198.18.0.1"), Kind: "global", State: "idle", Flaps: 3},
	}}
	if f.statusErr != nil {
		v.Peers = nil
	}
	return v, f.statusErr
}

func (fakeSource) IPAMUsage() (agent.IPAMUsage, error) {
	return agent.IPAMUsage{
		Pools:  []agent.PoolUsage{{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/28"), Size: 16, Free: 1, Blocks: 4, Unclaimed: 0}},
		Blocks: map[string]int{ipam.StatePending: 0, ipam.StateConfirmed: 1}, Allocated: 6, OwnFree: 0, Borrowed: 2, Lent: 1,
	}, nil
}

func (fakeSource) ProgrammedRoutes() map[model.RouteKind]int {
	return map[model.RouteKind]int{model.RouteBlackhole: 1, model.RoutePod: 4, model.RouteRemoteTunnel: 0, model.RouteRemoteDirect: 3}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// populated is the agent's registry over src with every hook called.
func populated(t *testing.T, src Source) *Metrics {
	t.Helper()
	m := New(Config{Node: "node-1", Version: "v1.2.3", Logger: quiet})
	if err := m.Watch(src); err != nil {
		t.Fatal(err)
	}
	m.Reconciled(agent.ReconcilerRoutes, 12*time.Millisecond, nil)
	m.Reconciled(agent.ReconcilerRoutes, 3*time.Millisecond, errors.New("add route 10.244.1.0/26: file exists"))
	m.RoutesWritten(routes.Stats{Added: 5, Errors: 2, Repaired: 3})
	m.RoutesWritten(routes.Stats{Replaced: 1, Repaired: 1})
	m.NoFreeBlock(true)
	m.NoFreeBlock(true)
	m.NoFreeBlock(false)
	m.ObserveCNI("add", 40*time.Millisecond, nil)
	m.ObserveCNI("add", 5*time.Millisecond, fmt.Errorf("pod default/web: %w", ipam.ErrExhausted))
	m.ObserveCNI("del", 8*time.Millisecond, nil)
	return m
}

// gather returns the families by name.
func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// sample finds the series of name with labels (a subset of its labels).
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric family %s", name)
	}
	for _, m := range mf.GetMetric() {
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == labels[i] && l.GetValue() == labels[i+1] }) {
				ok = false
			}
		}
		if ok {
			return m
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := sample(t, mfs, name, labels...)
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("%s%v: no gauge, counter or histogram", name, labels)
	return 0
}

func TestScrape(t *testing.T) {
	mfs := gather(t, populated(t, fakeSource{}))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wren_build_info", []string{"version", "v1.2.3", "goversion", runtime.Version()}, 1},
		{"wren_agent_ready", nil, 1},
		{"wren_agent_last_sync_timestamp_seconds", nil, 1700000000.5},
		{"wren_agent_last_sync_success", nil, 1},
		{"wren_bgp_peers", []string{"state", "established", "type", "mesh"}, 1},
		{"wren_bgp_peers", []string{"state", "idle", "type", "mesh"}, 0},
		{"wren_bgp_peers", []string{"state", "idle", "type", "global"}, 1},
		{"wren_bgp_peer_up", []string{"peer", "198.18.0.12", "type", "mesh"}, 1},
		{"wren_bgp_peer_up", []string{"peer", "198.18.0.1", "type", "global"}, 0},
		{"wren_bgp_session_flaps_total", []string{"peer", "198.18.0.1"}, 3},
		{"wren_bgp_prefixes_received", []string{"peer", "198.18.0.12"}, 3},
		{"wren_bgp_prefixes_accepted", []string{"peer", "198.18.0.12"}, 1},
		{"wren_bgp_prefixes_rejected", []string{"peer", "198.18.0.12"}, 2},
		{"wren_bgp_prefixes_advertised", []string{"peer", "198.18.0.12"}, 4},
		{"wren_routes_programmed", []string{"kind", "pod"}, 4},
		{"wren_routes_programmed", []string{"kind", "remote-tunnel"}, 0},
		{"wren_ipam_pool_addresses", []string{"pool", "default"}, 16},
		{"wren_ipam_pool_free_addresses", []string{"pool", "default"}, 1},
		{"wren_ipam_pool_blocks", []string{"pool", "default"}, 4},
		{"wren_ipam_pool_unclaimed_blocks", []string{"pool", "default"}, 0},
		{"wren_ipam_blocks", []string{"state", "confirmed"}, 1},
		{"wren_ipam_blocks", []string{"state", "pending"}, 0},
		{"wren_ipam_allocated_addresses", nil, 6},
		{"wren_ipam_block_free_addresses", nil, 0},
		{"wren_ipam_borrowed_addresses", nil, 2},
		{"wren_ipam_lent_addresses", nil, 1},
		{"wren_reconcile_duration_seconds", []string{"reconciler", "routes"}, 2},
		{"wren_reconcile_duration_seconds", []string{"reconciler", "sessions"}, 0},
		{"wren_reconcile_errors_total", []string{"reconciler", "routes"}, 1},
		{"wren_reconcile_errors_total", []string{"reconciler", "tunnels"}, 0},
		{"wren_kernel_route_write_errors_total", nil, 2},
		{"wren_kernel_route_repairs_total", nil, 4},
		{"wren_ipam_block_exhaustion_total", []string{"outcome", "borrowed"}, 2},
		{"wren_ipam_block_exhaustion_total", []string{"outcome", "exhausted"}, 1},
		{"wren_cni_request_duration_seconds", []string{"command", "add"}, 2},
		{"wren_cni_request_duration_seconds", []string{"command", "del"}, 1},
		{"wren_cni_failures_total", []string{"command", "add", "reason", "pool-exhausted"}, 1},
		{"wren_cni_failures_total", []string{"command", "del", "reason", "internal"}, 0},
	} {
		if got := value(t, mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Go runtime and process collectors.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	// Every series names its node.
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "node" && l.GetValue() == "node-1" }) {
				t.Errorf("%s: a series without node=\"node-1\": %v", name, m.GetLabel())
			}
		}
	}
}

// TestScrapeStatusError: a speaker that does not answer leaves out the
// BGP series and fails the scrape's error check, the rest is served.
func TestScrapeStatusError(t *testing.T) {
	m := populated(t, fakeSource{statusErr: errors.New("list peers: context deadline exceeded")})
	mfs, err := m.Gatherer().Gather()
	if err == nil || !strings.Contains(err.Error(), "read the BGP sessions") {
		t.Errorf("Gather error = %v; want one about the BGP sessions", err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if names["wren_bgp_peer_up"] || !names["wren_agent_ready"] || !names["wren_ipam_pool_free_addresses"] {
		t.Errorf("families served: %v", names)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "wren_ipam_pool_free_addresses{") {
		t.Errorf("handler: %d\n%s", rec.Code, rec.Body)
	}
}

// TestLint: the wren_ families follow Prometheus' naming rules.
func TestLint(t *testing.T) {
	var mfs []*dto.MetricFamily
	for name, mf := range gather(t, populated(t, fakeSource{})) {
		if strings.HasPrefix(name, "wren_") {
			mfs = append(mfs, mf)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestDocumented: docs/metrics.md has a row for every wren_ family, and
// names none the agent does not export.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(wren_[a-z_]+)`").FindAllStringSubmatch(string(b), -1) {
		rows[m[1]] = true
	}
	mfs := gather(t, populated(t, fakeSource{}))
	for name := range mfs {
		if strings.HasPrefix(name, "wren_") && !rows[name] {
			t.Errorf("docs/metrics.md has no row for %s", name)
		}
	}
	for name := range rows {
		if mfs[name] == nil {
			t.Errorf("docs/metrics.md documents %s, which the agent does not export", name)
		}
	}
}

// TestServe: an empty address turns the server off; a taken one is an
// error naming the flag; otherwise /metrics answers.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(Config{Node: "node-1", Logger: quiet})
	if err := m.Serve(ctx, "", fakeSource{}); err != nil {
		t.Fatalf("Serve(\"\") = %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().String()
	err = New(Config{Node: "node-1", Logger: quiet}).Serve(ctx, taken, fakeSource{})
	if err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Errorf("Serve on a taken address: %v", err)
	}
	l.Close()
	done := make(chan error, 1)
	go func() { done <- New(Config{Node: "node-1", Logger: quiet}).Serve(ctx, taken, fakeSource{}) }()
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + taken + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(body, `wren_agent_ready{node="node-1"} 1`) {
		t.Errorf("/metrics lacks wren_agent_ready:\n%s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}
