//go:build linux

// Package lab runs a real Kubernetes cluster on one machine, inside
// network namespaces: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in one namespace, and per node a containerd (with runc)
// and a kubelet in the node's own network and mount namespaces. Wren is
// installed on it the way users install it, with kubectl apply -k of
// deploy/ (through a lab overlay), from images built here and imported
// into each node's containerd; workload pods are a Deployment the
// scheduler places and containerd wires through wren-cni.
//
// make lab (hack/lab) and the real-cluster tests (test/cluster) use it.
//
// What it makes, and Down removes, is exactly:
//   - network namespaces named <Prefix>*, linked only to each other;
//   - per node a persistent mount and UTS namespace (files under
//     <State>/ns), in which overlays give the node its own /etc, /opt,
//     /var/lib, /var/log, /run and /tmp, with per-node directories bound
//     over the paths kubelet and containerd use: nothing is written to
//     the host's filesystem outside <State>;
//   - cgroups under /sys/fs/cgroup/<hierarchy>/<Prefix>node-N only;
//   - the processes it starts (pids in <State>/pids), containerd's shims
//     (in the node's mount namespace) and the containers (in the node's
//     cgroups);
//   - files under <State>.
//
// Addresses: node underlays 198.18.0.0/15, pods 10.244.0.0/16, services
// 10.96.0.0/16 (never routed), all only inside the lab's namespaces.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Modes of the lab (docs/lab.md).
const (
	ModeBGP   = "bgp"   // one subnet, no encapsulation, BGP full mesh
	ModeVXLAN = "vxlan" // node 3 behind the router, VXLAN pool
	ModeTOR   = "tor"   // node 3 behind the router, BIRD 2 top-of-rack, eBGP
)

// Config describes a lab.
type Config struct {
	// Repo is the repository root (deploy/, hack/lab/deploy/).
	Repo string
	// State holds everything the lab writes; default /var/tmp/wren-lab (not
	// under /etc, /opt, /var/lib, /var/log or /run, which nodes overlay).
	State string
	// Prefix starts every network namespace and cgroup name; default
	// "wrenlab-".
	Prefix string
	// Mode is ModeBGP (default), ModeVXLAN or ModeTOR.
	Mode string
	// VXLANMode is the pool's vxlanMode in ModeVXLAN: CrossSubnet
	// (default) or Always.
	VXLANMode string
	// Nodes is the number of nodes Up starts (default 3, at most 9).
	Nodes int
	// PodsPerNode is the number of workload pods per node (default 2).
	PodsPerNode int
	// Assets is the directory with kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kubectl and etcd (hack/kube/build.sh).
	Assets string
	// Out receives progress lines; default os.Stderr.
	Out io.Writer
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.State == "" {
		c.State = "/var/tmp/wren-lab"
	}
	if c.Prefix == "" {
		c.Prefix = "wrenlab-"
	}
	if c.Mode == "" {
		c.Mode = ModeBGP
	}
	if c.VXLANMode == "" {
		c.VXLANMode = "CrossSubnet"
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.PodsPerNode == 0 {
		c.PodsPerNode = 2
	}
	if c.Out == nil {
		c.Out = os.Stderr
	}
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeBGP, ModeVXLAN, ModeTOR:
	default:
		errs = append(errs, fmt.Errorf("lab: mode %q must be bgp, vxlan or tor", c.Mode))
	}
	if c.VXLANMode != "CrossSubnet" && c.VXLANMode != "Always" {
		errs = append(errs, fmt.Errorf("lab: VXLAN mode %q must be CrossSubnet or Always", c.VXLANMode))
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		errs = append(errs, fmt.Errorf("lab: %d nodes; 1 to 9 fit the address plan", c.Nodes))
	}
	if !filepath.IsAbs(c.State) || filepath.Clean(c.State) != c.State || len(strings.Split(c.State, "/")) < 3 {
		errs = append(errs, fmt.Errorf("lab: state directory %q must be a clean absolute path at least two levels deep", c.State))
	}
	if c.Repo == "" {
		errs = append(errs, errors.New("lab: no repository root"))
	}
	return errors.Join(errs...)
}

// Lab is one lab cluster.
type Lab struct {
	cfg Config

	mu       sync.Mutex
	images   map[string]string // name -> ref of the images in the nodes
	nodes    []int             // nodes brought up
	archives []string          // images imported after Up (ImportImage)
	waits    sync.WaitGroup    // reapers of the processes this Lab started

	beforeKubelet func() error // AddNode's hook
}

// New returns a lab for cfg; nothing is started.
func New(cfg Config) (*Lab, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Lab{cfg: cfg, images: map[string]string{}}, nil
}

// Open returns the lab recorded in state (for make lab-down, checks and
// kubectl): mode, nodes, images and assets come from the state files, and
// so does the prefix when prefix is "".
func Open(repo, state, prefix string, out io.Writer) (*Lab, error) {
	if b, err := os.ReadFile(filepath.Join(state, "prefix")); err == nil && prefix == "" {
		prefix = strings.TrimSpace(string(b))
	}
	cfg := Config{Repo: repo, State: state, Prefix: prefix, Out: out}
	cfg.Defaults()
	l := &Lab{cfg: cfg, images: map[string]string{}}
	if b, err := os.ReadFile(l.path("mode")); err == nil {
		l.cfg.Mode = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(l.path("assets")); err == nil {
		l.cfg.Assets = strings.TrimSpace(string(b))
	}
	// internal/image writes "<name> <ref> <digest> <path>" lines.
	if b, err := os.ReadFile(l.path("images", "images.txt")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				l.images[f[0]] = f[1]
			}
		}
	}
	entries, _ := os.ReadDir(l.path("nodes"))
	for _, e := range entries {
		if n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "node-")); err == nil {
			l.nodes = append(l.nodes, n)
		}
	}
	return l, nil
}

// Config returns the lab's configuration.
func (l *Lab) Config() Config { return l.cfg }

// Nodes returns the numbers of the nodes brought up.
func (l *Lab) Nodes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.nodes...)
}

// Image returns the ref of a lab image ("wren", "pause", "busybox").
func (l *Lab) Image(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.images[name]
}

func (l *Lab) path(elem ...string) string {
	return filepath.Join(append([]string{l.cfg.State}, elem...)...)
}

func (l *Lab) logf(format string, args ...any) {
	fmt.Fprintf(l.cfg.Out, "%s lab: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Up brings the whole lab up: images, namespaces, certificates, control
// plane, nodes, Wren (kubectl apply -k), the workload Deployment. It
// refuses to run over an existing lab. On failure what is up stays up
// for debugging; Down removes it.
func (l *Lab) Up(ctx context.Context) error {
	if _, err := os.Stat(l.cfg.State); err == nil {
		return fmt.Errorf("lab: %s exists: a lab is up or partly up; remove it first (make lab-down)", l.cfg.State)
	}
	if ns := l.namespaces(); len(ns) > 0 {
		return fmt.Errorf("lab: network namespaces %s exist; remove them first (make lab-down)", strings.Join(ns, " "))
	}
	if err := l.CheckTools(); err != nil {
		return err
	}
	t0 := time.Now()
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"images (wren, pause, busybox)", l.buildImages},
		{"namespaces and underlay", l.topology},
		{"certificates and kubeconfigs", l.pki},
		{"control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler", l.controlPlane},
		{fmt.Sprintf("nodes: containerd + kubelet in node-1..node-%d", l.cfg.Nodes), l.startNodes},
		{"Wren: kubectl apply -k (lab overlay of deploy/)", l.installWren},
		{fmt.Sprintf("workloads: Deployment web, %d pods per node", l.cfg.PodsPerNode), l.deployWorkloads},
	}
	for i, s := range steps {
		st := time.Now()
		l.logf("--- %d/%d %s", i+1, len(steps), s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		l.logf("    done in %s", time.Since(st).Round(100*time.Millisecond))
	}
	if err := os.WriteFile(l.path("stage"), []byte("complete\n"), 0o644); err != nil {
		return err
	}
	l.logf("lab up in %s", time.Since(t0).Round(time.Second))
	return nil
}

// CheckTools makes sure the programs and files the lab runs exist.
func (l *Lab) CheckTools() error {
	var missing []string
	for _, b := range []string{"ip", "nsenter", "unshare", "mount", "containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if l.cfg.Mode == ModeTOR {
		if _, err := lookPath("bird"); err != nil {
			missing = append(missing, "bird")
		}
	}
	if _, err := os.Stat(loopbackPlugin); err != nil {
		missing = append(missing, loopbackPlugin)
	}
	for _, b := range kubeBinaries {
		if _, err := os.Stat(filepath.Join(l.cfg.Assets, b)); err != nil {
			missing = append(missing, filepath.Join(l.cfg.Assets, b))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab: missing %s: run make deps (apt packages and the Kubernetes build)", strings.Join(missing, ", "))
	}
	return nil
}

// kubeBinaries are what hack/kube/build.sh puts in the assets directory.
var kubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"}
