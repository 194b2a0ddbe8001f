// Command wren-agent is the node agent: it watches the cluster, programs
// the node's dataplane and serves the CNI plugin on a unix socket.
// "wren-agent install-cni" is the DaemonSet's init step (install.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/debugserver"
)

// version is set at build time (-X main.version=...; internal/image).
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install-cni" {
		os.Exit(installCNI(os.Args[2:]))
	}
	os.Exit(run())
}

// run: flags -> Config -> constructors -> one errgroup that joins every
// goroutine. On SIGTERM the agent just exits: kernel routes, veths and
// tunnels stay, and BGP sessions end without a Cease, so pods keep their
// connectivity and peers keep this node's routes across the restart.
func run() int {
	cfg, err := parseFlags(os.Args[1:])
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cluster.RouteLogs(log) // client-go (klog) and controller-runtime: one handler
	switch {
	case err != nil:
		log.Error("wren-agent: " + err.Error())
		return 1
	case cfg.Version:
		fmt.Println("wren-agent", version)
		return 0
	}
	cfg.Agent.Logger = log
	log.Info("wren-agent starting", "version", version, "node", cfg.Agent.NodeName)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg); err != nil {
		log.Error("wren-agent stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg Config) error {
	if cfg.NetNSPath != "" {
		h, err := netns.GetFromPath(cfg.NetNSPath)
		if err != nil {
			return fmt.Errorf("open --netns %s: %w", cfg.NetNSPath, err)
		}
		defer h.Close()
		cfg.Agent.NetNS = h
	}
	rc, err := cluster.RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	if _, err := cluster.EnsureDefaultPool(ctx, rc, cfg.DefaultPool, cfg.Agent.Logger); err != nil {
		return err
	}
	view, err := cluster.NewView(rc, cfg.Agent.NodeName, cfg.Agent.Logger, cluster.WithNamespace(cfg.Namespace))
	if err != nil {
		return err
	}
	serveMetrics := metricsFor(&cfg)
	a, err := agent.New(cfg.Agent, view)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHealth(ctx, cfg.HealthAddr, a) })
	g.Go(func() error { return serveMetrics(ctx, scrapeSource{a}) })
	debug := func(s grpc.ServiceRegistrar) { debugserver.Register(s, a, version) }
	g.Go(func() error { return cniserver.Serve(ctx, cfg.Socket, a, cfg.Agent.Logger, debug) })
	g.Go(func() error { return a.Run(ctx) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
