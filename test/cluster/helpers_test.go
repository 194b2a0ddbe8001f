//go:build linux

package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

// wrenctl runs `wrenctl -o json args...` in an agent pod as an operator
// does (kubectl exec; the image ships wrenctl next to the agent) and
// parses its output into m.
func (e *env) wrenctl(pod string, m proto.Message, args ...string) error {
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	argv := e.lab.KubectlArgv(append([]string{"-n", "wren-system", "exec", pod, "-c", "wren-agent", "--", "wrenctl", "-o", "json"}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kubectl exec %s -- wrenctl %s: %w: %s", pod, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	if err := protojson.Unmarshal(out, m); err != nil {
		return fmt.Errorf("wrenctl -o json %s in %s: %w: %s", strings.Join(args, " "), pod, err, out)
	}
	return nil
}

// status is node n's agent's Status (the node and its BGP sessions),
// from `wrenctl status` in the node's wren-agent pod.
func (e *env) status(n int) (*debugv1.StatusReply, error) {
	node := fmt.Sprintf("node-%d", n)
	pod, ok := e.agentPods()[node]
	if !ok {
		return nil, fmt.Errorf("%s has no wren-agent pod", node)
	}
	r := &debugv1.StatusReply{}
	return r, e.wrenctl(pod.Name, r, "status")
}

// statusNoAPI is node n's agent's Status asked straight on its socket
// from the host, for an API server outage, when kubectl exec cannot
// reach the pod.
func (e *env) statusNoAPI(n int) (*debugv1.StatusReply, error) {
	return nstest.DebugStatus(e.lab.AgentSocket(n), 10*time.Second)
}

// sessions returns, per node, its BGP peers' "address since" when every
// peer is established, or an error naming one that is not. status is
// e.status, or e.statusNoAPI while the API server is down.
func (e *env) sessions(status func(n int) (*debugv1.StatusReply, error)) (map[int][]string, error) {
	out := map[int][]string{}
	for _, n := range e.lab.Nodes() {
		st, err := status(n)
		if err != nil {
			return nil, err
		}
		if len(st.GetPeers()) == 0 {
			return nil, fmt.Errorf("node-%d has no BGP peers", n)
		}
		for _, p := range st.GetPeers() {
			if p.GetState() != "established" {
				return nil, fmt.Errorf("node-%d: peer %s is %s", n, p.GetAddress(), p.GetState())
			}
			out[n] = append(out[n], p.GetAddress()+" since "+nstest.PeerSince(p).Format(time.RFC3339Nano))
		}
		slices.Sort(out[n])
	}
	return out, nil
}

// ringPingers starts a 10 ms ping from one workload pod on each node to
// one on the next node (entering the source pod's namespace through its
// process, so the pings need no API server).
func (e *env) ringPingers() []*nstest.Pinger {
	e.t.Helper()
	byNode := map[string]corev1.Pod{}
	var nodes []string
	for _, p := range e.workloads() {
		if _, ok := byNode[p.Spec.NodeName]; !ok {
			byNode[p.Spec.NodeName] = p
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	if len(nodes) < 2 {
		e.t.Fatalf("workload pods on %d nodes; need two or more", len(nodes))
	}
	var ps []*nstest.Pinger
	for i, node := range nodes {
		src, dst := byNode[node], byNode[nodes[(i+1)%len(nodes)]]
		pid, err := e.lab.PodPID(nodeNumber(node), string(src.UID))
		if err != nil {
			e.t.Fatal(err)
		}
		h, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			e.t.Fatal(err)
		}
		p, err := nstest.StartPinger(h, netip.MustParseAddr(dst.Status.PodIP), 10*time.Millisecond)
		h.Close()
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Logf("pinging %s (%s) from %s (%s) every 10 ms", dst.Name, dst.Spec.NodeName, src.Name, src.Spec.NodeName)
		ps = append(ps, p)
	}
	e.t.Cleanup(func() {
		for _, p := range ps {
			p.Stop()
		}
	})
	return ps
}

// stopPingers stops them and fails the test for any lost probe.
func (e *env) stopPingers(what string, ps []*nstest.Pinger) {
	e.t.Helper()
	for _, p := range ps {
		st := p.Stop()
		e.t.Logf("%s: ping %s", what, st)
		if st.Sent < 100 {
			e.t.Errorf("%s: only %d pings sent to %s; the ping did not cover it", what, st.Sent, st.Dst)
		}
		if len(st.Lost) > 0 {
			e.t.Errorf("%s: %d pings to %s lost (sequence numbers %v)", what, len(st.Lost), st.Dst, st.Lost)
		}
	}
}

// watchAllRoutes starts a route watch in every node's namespace.
func (e *env) watchAllRoutes() map[int]*nstest.RouteWatch {
	e.t.Helper()
	ws := map[int]*nstest.RouteWatch{}
	for _, n := range e.lab.Nodes() {
		h, err := netns.GetFromPath("/run/netns/" + e.lab.NodeNS(n))
		if err != nil {
			e.t.Fatal(err)
		}
		w, err := nstest.WatchRoutes(h, e.lab.NodeNS(n))
		if err != nil {
			e.t.Fatal(err)
		}
		ws[n] = w
		e.t.Cleanup(func() { w.Close(); h.Close() })
	}
	return ws
}

// noRouteDeleted fails the test for every Wren route a node deleted
// since its watch started.
func (e *env) noRouteDeleted(what string, ws map[int]*nstest.RouteWatch) {
	e.t.Helper()
	for n, w := range ws {
		dels, err := w.Deletions(routes.Protocol)
		if err != nil {
			e.t.Error(err)
		}
		if len(dels) > 0 {
			e.t.Errorf("%s: node-%d deleted Wren routes: %s", what, n, strings.Join(dels, "; "))
		}
	}
}

// agentPIDs returns the wren-agent process of each node (found through
// the pod's cgroups, without the API server), with the pod's UID.
func (e *env) agentPIDs(pods map[string]corev1.Pod) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for node, p := range pods {
		pid, err := e.lab.PodPID(nodeNumber(node), string(p.UID))
		if err != nil {
			e.t.Fatal(err)
		}
		out[node] = pid
	}
	return out
}

// cniResult is what a CNI plugin prints: a result or an error object.
type cniResult struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
	IPs  []struct {
		Address string `json:"address"`
	} `json:"ips"`
}

// cni runs node n's installed /opt/cni/bin/wren-cni as containerd would:
// command ADD, DEL or CHECK for a pod default/<pod> in network namespace
// /var/run/netns/<netnsName> (made inside the node's mount namespace).
func (e *env) cni(n int, command, containerID, pod, netnsName string) (cniResult, time.Duration, error) {
	conf := `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"wren-cni","agent_socket":"/var/run/wren/wren.sock"}`
	argv := e.lab.InNode(n, "env", "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID,
		"CNI_NETNS=/var/run/netns/"+netnsName, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+pod, "/opt/cni/bin/wren-cni")
	cmd := exec.CommandContext(e.ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(conf)
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	var r cniResult
	if len(out) > 0 {
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			return r, took, fmt.Errorf("wren-cni %s printed %q: %w", command, out, jerr)
		}
	}
	if err != nil && r.Code == 0 {
		return r, took, fmt.Errorf("wren-cni %s: %w (stdout %q)", command, err, out)
	}
	return r, took, nil
}

// nodeNetns makes (or removes) a network namespace inside node n's mount
// namespace, as containerd does for a sandbox.
func (e *env) nodeNetns(n int, op, name string) {
	e.t.Helper()
	argv := e.lab.InNode(n, "ip", "netns", op, name)
	if out, err := exec.CommandContext(e.ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		e.t.Fatalf("ip netns %s %s on node-%d: %v: %s", op, name, n, err, out)
	}
}

// fileID is a file's content, mode, inode and mtime: a rewrite changes
// the inode (rename) or the mtime.
type fileID struct {
	content string
	mode    os.FileMode
	ino     uint64
	mtime   time.Time
}

func statFile(path string) (fileID, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return fileID{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	var ino uint64
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = s.Ino
	}
	return fileID{content: string(b), mode: st.Mode(), ino: ino, mtime: st.ModTime()}, nil
}
