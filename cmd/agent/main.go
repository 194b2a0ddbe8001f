// Command wren-agent is the node agent: it watches the cluster, programs
// the node's dataplane and serves the CNI plugin on a unix socket.
// "wren-agent install-cni" is the DaemonSet's init step (install.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cniserver"
)

// version is set at build time (-X main.version=...; internal/image).
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install-cni" {
		os.Exit(installCNI(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var cfg agent.Config
	var pool cluster.DefaultPool
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig path; empty means in-cluster")
	socket := flag.String("socket", cniv1.DefaultSocket, "unix socket for the CNI plugin (mode 0600)")
	health := flag.String("health-addr", ":9099", "address of /livez and /readyz")
	debug := flag.Bool("debug", false, "log at debug level")
	namespace := flag.String("namespace", envOr("POD_NAMESPACE", cluster.DefaultNamespace), "namespace of the Secrets holding BGP passwords (the agent's own)")
	flag.BoolVar(&cfg.BGP, "bgp", true, "run the BGP speaker (advertise this node's blocks, route other nodes' blocks of pools without VXLAN); --bgp=false for VXLAN-only clusters")
	nsPath := flag.String("netns", "", "program the dataplane of the network namespace at this path instead of the agent's own (tests run several agents on one host); API traffic stays in the agent's namespace")
	flag.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODENAME"), "this node's name (the Node object)")
	flag.StringVar(&cfg.NodeIPMethod, "node-ip-method", envOr("WREN_NODE_IP_METHOD", "first-found"), "first-found | interface=RE | skip-interface=RE | can-reach=IP | cidr=CIDR | kubernetes-internal-ip")
	flag.StringVar(&cfg.Sysctl.Root, "proc-sys", "/proc/sys", "the node's /proc/sys (a container sees a read-only one; the DaemonSet mounts the host's at /host/proc/sys)")
	flag.StringVar(&pool.CIDR, "default-ipv4-pool-cidr", os.Getenv("WREN_IPV4POOL_CIDR"), "create IPPool "+cluster.DefaultPoolName+" with this CIDR on start if the cluster has no IPPool")
	flag.IntVar(&pool.BlockSize, "default-ipv4-pool-block-size", envInt("WREN_IPV4POOL_BLOCK_SIZE"), "blockSize of the default pool (0: 26)")
	flag.StringVar(&pool.VXLANMode, "default-ipv4-pool-vxlan", os.Getenv("WREN_IPV4POOL_VXLAN"), "vxlanMode of the default pool: Always | CrossSubnet | Never")
	flag.StringVar(&pool.IPIPMode, "default-ipv4-pool-ipip", os.Getenv("WREN_IPV4POOL_IPIP"), "ipipMode of the default pool: Always | CrossSubnet | Never")
	flag.BoolVar(&pool.NATOutgoing, "default-ipv4-pool-nat-outgoing", envBool("WREN_IPV4POOL_NAT_OUTGOING"), "natOutgoing of the default pool")
	flag.DurationVar(&cfg.Housekeeping, "housekeeping-interval", envDuration("WREN_HOUSEKEEPING_INTERVAL", time.Minute), "period of IPAM housekeeping: empty blocks (after their grace period), addresses of deleted pods, blocks of deleted nodes")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("wren-agent", version)
		return 0
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log
	// client-go (klog) and controller-runtime: into the same handler.
	cluster.RouteLogs(log)
	if err := errors.Join(envErrs...); err != nil {
		log.Error("wren-agent: bad setting in the environment (the wren-config ConfigMap)", "err", err)
		return 1
	}
	if err := pool.Validate(); err != nil {
		log.Error("wren-agent: bad default pool setting (WREN_IPV4POOL_* / --default-ipv4-pool-*)", "err", err)
		return 1
	}
	log.Info("wren-agent starting", "version", version, "node", cfg.NodeName)
	if *nsPath != "" {
		bgpSet := false
		flag.Visit(func(f *flag.Flag) { bgpSet = bgpSet || f.Name == "bgp" })
		if bgpSet && cfg.BGP {
			log.Error("wren-agent: --netns cannot be used with --bgp: the BGP speaker's sockets live in the agent's own network namespace; run the agent inside the node's namespace instead")
			return 1
		}
		cfg.BGP = false // the speaker would listen and dial outside the node's namespace
		h, err := netns.GetFromPath(*nsPath)
		if err != nil {
			log.Error("wren-agent: open --netns", "path", *nsPath, "err", err)
			return 1
		}
		defer h.Close()
		cfg.NetNS = h
	}
	if err := serve(cfg, pool, *kubeconfig, *socket, *health, *namespace); err != nil {
		log.Error("wren-agent stopped", "err", err)
		return 1
	}
	return 0
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envErrs collects environment settings that do not parse; run refuses
// to start with them (a typo must not silently become the default).
var envErrs []error

// envInt is the integer in environment variable key, or 0 if unset.
func envInt(key string) int {
	v := os.Getenv(key)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q is not an integer", key, v))
	}
	return n
}

// envBool is the boolean in environment variable key, or false if unset.
func envBool(key string) bool {
	v := os.Getenv(key)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q is not true or false", key, v))
	}
	return b
}

// envDuration is the duration in environment variable key, or def if
// unset.
func envDuration(key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		envErrs = append(envErrs, fmt.Errorf("%s=%q is not a duration such as 1m or 30s", key, v))
		return def
	}
	return d
}

func serve(cfg agent.Config, pool cluster.DefaultPool, kubeconfig, socket, health, namespace string) error {
	// On SIGTERM the agent just exits: kernel routes, veths and tunnels
	// stay, so pods keep their connectivity across agent restarts.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rc, err := cluster.RESTConfig(kubeconfig)
	if err != nil {
		return err
	}
	if _, err := cluster.EnsureDefaultPool(ctx, rc, pool, cfg.Logger); err != nil {
		return err
	}
	view, err := cluster.NewView(rc, cfg.NodeName, cfg.Logger, cluster.WithNamespace(namespace))
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, view)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/debug/bgp", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.BGPStatus(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	})
	srv := &http.Server{Addr: health, Handler: mux}
	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("health server: %w", srv.ListenAndServe()) }()
	go func() { errc <- cniserver.Serve(ctx, socket, a, cfg.Logger) }()
	go func() { errc <- a.Run(ctx) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		return nil
	case err := <-errc:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
}
