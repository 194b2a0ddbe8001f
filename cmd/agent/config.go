package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/cluster"
)

// Config is everything wren-agent is started with: flags, with defaults
// from the environment the DaemonSet sets (the wren-config ConfigMap).
type Config struct {
	Agent       agent.Config
	DefaultPool cluster.DefaultPool
	Kubeconfig  string
	Socket      string // unix socket of the CNI plugin (and later the debug API)
	HealthAddr  string // /livez and /readyz
	MetricsAddr string // Prometheus /metrics; "" turns it off
	Namespace   string // where the Secrets of BGP passwords live
	NetNSPath   string // program another namespace (tests); turns BGP off
	Debug       bool
	Version     bool
}

// parseFlags reads the command line (and the environment defaults) into
// a Config. Settings that do not parse are errors naming them.
func parseFlags(args []string) (Config, error) {
	var c Config
	envErrs = nil
	fs := flag.NewFlagSet("wren-agent", flag.ContinueOnError)
	fs.StringVar(&c.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig path; empty means in-cluster")
	fs.StringVar(&c.Socket, "socket", cniv1.DefaultSocket, "unix socket for the CNI plugin (mode 0600)")
	fs.StringVar(&c.HealthAddr, "health-addr", ":9099", "address of /livez and /readyz")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", envOr("WREN_METRICS_ADDR", ":9091"), "address of the Prometheus metrics (/metrics); empty turns them off")
	fs.BoolVar(&c.Debug, "debug", false, "log at debug level")
	fs.StringVar(&c.Namespace, "namespace", envOr("POD_NAMESPACE", cluster.DefaultNamespace), "namespace of the Secrets holding BGP passwords (the agent's own)")
	fs.StringVar(&c.Agent.GoBGPAPI, "gobgp-api", "", "serve GoBGP's own gRPC API here for the gobgp CLI (off when empty; loopback only, e.g. 127.0.0.1:50051)")
	fs.BoolVar(&c.Agent.BGP, "bgp", true, "run the BGP speaker (advertise this node's blocks, route other nodes' blocks of pools without VXLAN); --bgp=false for VXLAN-only clusters")
	fs.StringVar(&c.NetNSPath, "netns", "", "program the dataplane of the network namespace at this path instead of the agent's own (tests run several agents on one host); API traffic stays in the agent's namespace")
	fs.StringVar(&c.Agent.NodeName, "node-name", os.Getenv("NODENAME"), "this node's name (the Node object)")
	fs.StringVar(&c.Agent.NodeIPMethod, "node-ip-method", envOr("WREN_NODE_IP_METHOD", "first-found"), "first-found | interface=RE | skip-interface=RE | can-reach=IP | cidr=CIDR | kubernetes-internal-ip")
	fs.StringVar(&c.Agent.Sysctl.Root, "proc-sys", "/proc/sys", "the node's /proc/sys (a container sees a read-only one; the DaemonSet mounts the host's at /host/proc/sys)")
	fs.StringVar(&c.DefaultPool.CIDR, "default-ipv4-pool-cidr", os.Getenv("WREN_IPV4POOL_CIDR"), "create IPPool "+cluster.DefaultPoolName+" with this CIDR on start if the cluster has no IPPool")
	fs.IntVar(&c.DefaultPool.BlockSize, "default-ipv4-pool-block-size", envInt("WREN_IPV4POOL_BLOCK_SIZE"), "blockSize of the default pool (0: 26)")
	fs.StringVar(&c.DefaultPool.VXLANMode, "default-ipv4-pool-vxlan", os.Getenv("WREN_IPV4POOL_VXLAN"), "vxlanMode of the default pool: Always | CrossSubnet | Never")
	fs.StringVar(&c.DefaultPool.IPIPMode, "default-ipv4-pool-ipip", os.Getenv("WREN_IPV4POOL_IPIP"), "ipipMode of the default pool: Always | CrossSubnet | Never")
	fs.BoolVar(&c.DefaultPool.NATOutgoing, "default-ipv4-pool-nat-outgoing", envBool("WREN_IPV4POOL_NAT_OUTGOING"), "natOutgoing of the default pool")
	fs.DurationVar(&c.Agent.Housekeeping, "housekeeping-interval", envDuration("WREN_HOUSEKEEPING_INTERVAL", time.Minute), "period of IPAM housekeeping: empty blocks (after their grace period), addresses of deleted pods, blocks of deleted nodes")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := errors.Join(envErrs...); err != nil {
		return c, fmt.Errorf("bad setting in the environment (the wren-config ConfigMap): %w", err)
	}
	if err := c.DefaultPool.Validate(); err != nil {
		return c, fmt.Errorf("bad default pool setting (WREN_IPV4POOL_* / --default-ipv4-pool-*): %w", err)
	}
	if c.Agent.GoBGPAPI != "" {
		if err := bgpspeaker.CheckAPIAddress(c.Agent.GoBGPAPI); err != nil {
			return c, fmt.Errorf("--gobgp-api: %w", err)
		}
		if !c.Agent.BGP {
			return c, errors.New("--gobgp-api needs the BGP speaker: drop --bgp=false")
		}
	}
	if c.NetNSPath != "" {
		bgpSet := false
		fs.Visit(func(f *flag.Flag) { bgpSet = bgpSet || f.Name == "bgp" })
		if bgpSet && c.Agent.BGP {
			return c, errors.New("--netns cannot be used with --bgp: the BGP speaker's sockets live in the agent's own network namespace; run the agent inside the node's namespace instead")
		}
		c.Agent.BGP = false // the speaker would listen and dial outside the node's namespace
	}
	return c, nil
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
