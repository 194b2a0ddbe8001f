package main

import (
	"context"

	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/metrics"
)

// metricsFor builds the agent's Prometheus metrics and makes them the
// agent's Observer (cfg.Agent.Observer, so it must run before agent.New).
// It returns what serves them on --metrics-addr once the agent exists.
func metricsFor(cfg *Config) func(ctx context.Context, src metrics.Source) error {
	m := metrics.New(metrics.Config{Node: cfg.Agent.NodeName, Version: version, Logger: cfg.Agent.Logger})
	cfg.Agent.Observer = m
	return func(ctx context.Context, src metrics.Source) error { return m.Serve(ctx, cfg.MetricsAddr, src) }
}

// scrapeSource gives the metrics the agent's ScrapeStatus, which counts
// the prefixes the import policy rejected at most once a minute.
type scrapeSource struct{ *agent.Agent }

func (s scrapeSource) Status(ctx context.Context) (agent.StatusView, error) {
	return s.ScrapeStatus(ctx)
}
