//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// loopbackPlugin is the reference CNI loopback plugin (Debian
// containernetworking-plugins). containerd's CRI sets up every sandbox's
// lo with it, so a node has it in /opt/cni/bin before any network add-on
// (kubeadm's kubernetes-cni package ships it); the lab copies it there.
const loopbackPlugin = "/usr/lib/cni/loopback"

// overlays are the host directories each node sees through an overlay of
// its own: the node may write there (kubelet, containerd, the agent's
// init container do) and the host's copy never changes. The state
// directory must not be under any of them.
var overlays = []string{"/etc", "/opt", "/var/lib", "/var/log", "/run"}

// nodeBinds are per-node real directories bound over the paths kubelet,
// containerd and the Wren DaemonSet use: overlayfs cannot host
// containerd's overlay snapshots, unix sockets that the host reaches, or
// namespace files, and the tests look at the CNI directories from the
// host. Key: directory under the node's state; value: path on the node.
var nodeBinds = [][2]string{
	{"containerd", "/var/lib/containerd"},
	{"kubelet", "/var/lib/kubelet"},
	{"run-containerd", "/run/containerd"},
	{"netns", "/run/netns"},
	{"wren", "/run/wren"},
	{"cni-bin", "/opt/cni/bin"},
	{"cni-conf", "/etc/cni/net.d"},
	{"rt_protos.d", "/etc/iproute2/rt_protos.d"},
}

// kernelTunables are the host-wide sysctls kubelet sets at start
// (vm.overcommit_memory=1, kernel.panic=10, ...). Each node sees its own
// file over them, so no lab kubelet changes the machine's settings.
var kernelTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic",
	"kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// NodeDir is node n's directory in the state directory.
func (l *Lab) NodeDir(n int) string { return l.path("nodes", nodeName(n)) }

// AgentSocket is node n's wren-agent socket (the DaemonSet's
// /var/run/wren/wren.sock) as the host reaches it: the node's /run/wren
// is <NodeDir>/wren (nodeBinds). A unix socket is reached by its path
// from any namespace, with no API server in the way.
func (l *Lab) AgentSocket(n int) string { return filepath.Join(l.NodeDir(n), "wren", "wren.sock") }

func (l *Lab) mountNSFile(n int) string { return l.path("ns", nodeName(n)+".mnt") }
func (l *Lab) utsNSFile(n int) string   { return l.path("ns", nodeName(n)+".uts") }

// CgroupName is the name of node n's cgroup root in every hierarchy.
func (l *Lab) CgroupName(n int) string { return l.cfg.Prefix + nodeName(n) }

// startNodes brings up every node in parallel.
func (l *Lab) startNodes(ctx context.Context) error {
	errc := make(chan error, l.cfg.Nodes)
	for n := 1; n <= l.cfg.Nodes; n++ {
		go func() { errc <- l.startNode(ctx, n) }()
	}
	var errs []error
	for range l.cfg.Nodes {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// AddNode brings up node n (network, containerd, kubelet) on a running
// lab and waits until its Node is registered. Wren reaches it through
// the DaemonSet. beforeKubelet, if not nil, runs when the node is ready
// but its kubelet not started yet (tests look at the node's files then).
func (l *Lab) AddNode(ctx context.Context, n int, beforeKubelet func() error) error {
	if n < 1 || n > 9 {
		return fmt.Errorf("lab: node %d: 1 to 9 fit the address plan", n)
	}
	if err := l.nodeNetwork(ctx, n); err != nil {
		return err
	}
	l.beforeKubelet = beforeKubelet
	defer func() { l.beforeKubelet = nil }()
	return l.startNode(ctx, n)
}

// startNode gives node n its mount namespace, containerd with the lab's
// images, and a kubelet registered with the API server.
func (l *Lab) startNode(ctx context.Context, n int) error {
	name := nodeName(n)
	dir := l.NodeDir(n)
	if err := l.nodeFiles(n); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := l.cgroupRoot(n); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := l.mountNamespace(ctx, n); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// TMPDIR: the node's own temporary files stay in its directory (the
	// host's /tmp stays visible in the node, like every host path).
	tmp := "TMPDIR=" + filepath.Join(dir, "tmp")
	if err := l.start("containerd-"+name, l.InNode(n, "env", tmp, "containerd", "--config", dir+"/containerd.toml")); err != nil {
		return err
	}
	sock := filepath.Join(dir, "run-containerd", "containerd.sock")
	if err := l.poll(ctx, 30*time.Second, name+" containerd", "containerd-"+name, func() error {
		_, err := run(ctx, "ctr", "--address", sock, "version")
		return err
	}); err != nil {
		return err
	}
	for _, img := range []string{"pause", "busybox", "wren"} {
		if err := l.importImage(ctx, n, l.path("images", img+".tar")); err != nil {
			return err
		}
	}
	// Images imported later (an upgrade) are on every node too.
	l.mu.Lock()
	extra := append([]string(nil), l.archives...)
	l.mu.Unlock()
	for _, a := range extra {
		if err := l.importImage(ctx, n, a); err != nil {
			return err
		}
	}
	if l.beforeKubelet != nil {
		if err := l.beforeKubelet(); err != nil {
			return err
		}
	}
	if err := l.start("kubelet-"+name, l.InNode(n, "env", tmp, filepath.Join(l.cfg.Assets, "kubelet"),
		"--config", dir+"/kubelet.yaml", "--kubeconfig", l.path("pki", name+".kubeconfig"),
		"--hostname-override", name, "--node-ip", l.NodeIP(n),
		"--node-labels", "rack="+l.nodeRack(n), "--v", "1")); err != nil {
		return err
	}
	if err := l.poll(ctx, 60*time.Second, name+" registered", "kubelet-"+name, func() error {
		_, err := l.Kubectl(ctx, "get", "node", name)
		return err
	}); err != nil {
		return err
	}
	// Read by the agent at start: the node's AS (tor mode: one per node).
	if _, err := l.Kubectl(ctx, "annotate", "--overwrite", "node", name, fmt.Sprintf("wren.network/as-number=%d", l.nodeAS(n))); err != nil {
		return err
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	l.logf("    %s: containerd and kubelet up, Node registered (%s)", name, l.NodeIP(n))
	return nil
}

// importImage loads an OCI archive (internal/image) into node n's
// containerd (namespace k8s.io, where the CRI looks). The archive keeps
// its digest.
func (l *Lab) importImage(ctx context.Context, n int, archive string) error {
	sock := filepath.Join(l.NodeDir(n), "run-containerd", "containerd.sock")
	if _, err := run(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", archive); err != nil {
		return fmt.Errorf("%s: %w", nodeName(n), err)
	}
	return nil
}

// ImportImage loads an OCI archive (internal/image) into every node's
// containerd, and into nodes added later (it keeps a copy in the state
// directory): for an upgrade to a new image, since no registry is
// reachable.
func (l *Lab) ImportImage(ctx context.Context, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	l.mu.Lock()
	archive := l.path("images", fmt.Sprintf("imported-%d.tar", len(l.archives)+1))
	l.archives = append(l.archives, archive)
	l.mu.Unlock()
	if err := os.WriteFile(archive, b, 0o644); err != nil {
		return err
	}
	for _, n := range l.Nodes() {
		if err := l.importImage(ctx, n, archive); err != nil {
			return err
		}
	}
	return nil
}

// nodeFiles writes node n's directories and configuration files.
func (l *Lab) nodeFiles(n int) error {
	dir := l.NodeDir(n)
	for _, b := range nodeBinds {
		if err := os.MkdirAll(filepath.Join(dir, b[0]), 0o755); err != nil {
			return err
		}
	}
	for _, o := range overlays {
		for _, d := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(dir, "ovl", overlayKey(o), d), 0o755); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{"cg", "sysctl", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, t := range kernelTunables {
		v, err := os.ReadFile(filepath.Join("/proc/sys", t))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "sysctl", strings.ReplaceAll(t, "/", ".")), v, 0o644); err != nil {
			return err
		}
	}
	lo, err := os.ReadFile(loopbackPlugin)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni-bin", "loopback"), lo, 0o755); err != nil {
		return err
	}
	// The node's /etc/resolv.conf (in its /etc overlay), which pods
	// without cluster DNS get too, points at loopback: no name lookup of
	// containerd, the kubelet or a pod leaves its namespace.
	if err := os.WriteFile(filepath.Join(dir, "ovl", "etc", "upper", "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(l.containerdConfig()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(l.kubeletConfig(n)), 0o644)
}

func overlayKey(dir string) string { return strings.ReplaceAll(strings.Trim(dir, "/"), "/", "-") }

// containerdConfig is containerd 1.6's configuration for a lab node: the
// lab's pause image, runc with cgroupfs (matching the kubelet), and
// restrict_oom_score_adj because root here lacks CAP_SYS_RESOURCE (runc
// fails every sandbox otherwise: "can't get final child's PID from pipe").
func (l *Lab) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`, l.Image("pause"))
}

// kubeletConfig is node n's KubeletConfiguration: cgroupfs under its own
// cgroup root, cgroup v1 allowed (this machine's hierarchy), client
// certificates checked against the lab CA, webhook authorization.
func (l *Lab) kubeletConfig(n int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
volumePluginDir: /var/lib/kubelet/volume-plugins
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 2%%, imagefs.available: 2%%}
nodeStatusReportFrequency: 10s
`, l.path("pki", "ca.crt"), l.CgroupName(n))
}

// cgroupRoot creates node n's cgroup root in every hierarchy (kubelet's
// cgroupRoot must exist), with cpuset's cpus and mems from the parent.
func (l *Lab) cgroupRoot(n int) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, l.CgroupName(n))
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s/%s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers,
// named ones, the unified v2 one).
func cgroupHierarchies() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		_, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(line)
		if !ok || len(f) < 5 {
			continue
		}
		if fs := strings.Fields(post); len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") {
			out = append(out, f[4])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return out, nil
}

// mountNamespace creates node n's persistent mount and UTS namespaces
// (files under <State>/ns, kept by bind mounts like ip netns keeps
// network namespaces) and sets them up from inside:
//
//   - hostname node-N;
//   - /sys mounted afresh in the node's network namespace (so
//     /sys/class/net shows the node's interfaces) with the cgroup
//     hierarchies moved over from the host's /sys;
//   - overlays on /etc, /opt, /var/lib, /var/log, /run, then the per-node
//     directories of nodeBinds;
//   - per-node files over kubelet's host-wide kernel tunables;
//   - every mount shared within the node (kubelet's and the DaemonSet's
//     mount propagation need it).
//
// The namespace starts as a slave of the host's: nothing mounted in the
// node reaches the host.
func (l *Lab) mountNamespace(ctx context.Context, n int) error {
	if err := l.privateNSDir(ctx); err != nil {
		return err
	}
	for _, f := range []string{l.mountNSFile(n), l.utsNSFile(n)} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
	}
	dir := l.NodeDir(n)
	var s strings.Builder
	fmt.Fprintf(&s, "set -eu\nhostname %s\n", nodeName(n))
	fmt.Fprintf(&s, "mount --rbind /sys/fs/cgroup %s/cg\numount -l /sys\nmount -t sysfs sysfs /sys\nmount --move %s/cg /sys/fs/cgroup\n", dir, dir)
	for _, o := range overlays {
		k := filepath.Join(dir, "ovl", overlayKey(o))
		fmt.Fprintf(&s, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s\n", o, k, k, o)
	}
	for _, b := range nodeBinds {
		fmt.Fprintf(&s, "mkdir -p %s\nmount --bind %s/%s %s\n", b[1], dir, b[0], b[1])
	}
	for _, t := range kernelTunables {
		fmt.Fprintf(&s, "mount --bind %s/sysctl/%s /proc/sys/%s\n", dir, strings.ReplaceAll(t, "/", "."), t)
	}
	// Shared inside the node, as on a systemd host: kubelet's
	// /var/lib/kubelet and the DaemonSet's HostToContainer mount of
	// /var/run/netns need it (containerd checks the mount of "/", since
	// it does not resolve the /var/run symlink). Last, because
	// mount --move needs a parent that is not shared.
	s.WriteString("mount --make-rshared /\n")
	argv := inNetns(l.NodeNS(n), "unshare", "--mount="+l.mountNSFile(n), "--uts="+l.utsNSFile(n),
		"--propagation", "slave", "--", "/bin/sh", "-c", s.String())
	if _, err := run(ctx, argv[0], argv[1:]...); err != nil {
		return fmt.Errorf("set up the mount namespace: %w", err)
	}
	return nil
}

// privateNSDir makes <State>/ns a private bind mount of itself, so the
// namespace files bound there never propagate into other namespaces (the
// kernel refuses a mount namespace file inside its own namespace).
func (l *Lab) privateNSDir(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.path("ns")
	if isMountPoint(d) {
		return nil
	}
	if _, err := run(ctx, "mount", "--bind", d, d); err != nil {
		return err
	}
	_, err := run(ctx, "mount", "--make-private", d)
	return err
}

// isMountPoint reports whether path is a mount point in this mount
// namespace.
func isMountPoint(path string) bool {
	for _, m := range mountsUnder(path) {
		if m == path {
			return true
		}
	}
	return false
}

// mountsUnder lists this namespace's mount points at or below dir,
// deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first, so unmounting in order works.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMount decodes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// stopNode stops node n: kubelet first (so nothing restarts), then every
// container (the processes in the node's cgroups), containerd, and any
// process left in the node's mount namespace (containerd's shims); then
// it releases the namespace files and removes the node's cgroups.
func (l *Lab) stopNode(ctx context.Context, n int) error {
	name := nodeName(n)
	l.stop("kubelet-"+name, 15*time.Second)
	var errs []error
	if err := l.killCgroups(n); err != nil {
		errs = append(errs, err)
	}
	l.stop("containerd-"+name, 10*time.Second)
	if ino, err := nsInode(l.mountNSFile(n)); err == nil {
		killInMountNS(ino)
	}
	for _, f := range []string{l.mountNSFile(n), l.utsNSFile(n)} {
		if isMountPoint(f) {
			if _, err := run(ctx, "umount", f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := l.removeCgroups(n); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killCgroups SIGKILLs every process in node n's cgroups until none is
// left (10 s at most).
func (l *Lab) killCgroups(n int) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, h := range hs {
			root := filepath.Join(h, l.CgroupName(n))
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
						_ = syscall.Kill(pid, syscall.SIGKILL)
						left++
					}
				}
				return nil
			})
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d processes still in its cgroups after 10 s", nodeName(n), left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes node n's cgroup directories, deepest first.
func (l *Lab) removeCgroups(n int) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, l.CgroupName(n))
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// nsInode returns the inode of a namespace file (its identity).
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// killInMountNS SIGKILLs every process whose mount namespace has inode
// ino, until none is left (5 s at most).
func killInMountNS(ino uint64) {
	want := fmt.Sprintf("mnt:[%d]", ino)
	for range 50 {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid <= 1 {
				continue
			}
			if t, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && t == want {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PodPID returns the pid of a process of the pod with this UID on node n
// (found in the node's cgroups, where kubelet puts every pod in a
// "pod<UID>" cgroup): /proc/<pid>/ns/net is the pod's network namespace,
// reachable from the host without the API server.
func (l *Lab) PodPID(n int, uid string) (int, error) {
	root := filepath.Join("/sys/fs/cgroup/pids", l.CgroupName(n))
	var pid int
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || pid != 0 {
			return nil
		}
		if !strings.Contains(p, "/pod"+uid+"/") {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if f := strings.Fields(string(b)); len(f) > 0 {
			pid, _ = strconv.Atoi(f[0])
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if pid == 0 {
		return 0, fmt.Errorf("%s: no process in a cgroup of pod %s", nodeName(n), uid)
	}
	return pid, nil
}
