//go:build linux

package nstest_test

// A Kubernetes API server outage as a running agent lives through it:
// envtest's kube-apiserver + etcd on loopback, one node namespace with an
// in-process agent whose API traffic goes through an APIGate (an HTTP
// proxy on the root namespace's loopback that the test cuts and restores),
// its CNI socket served as in production and driven by the real wren-cni
// binary. Test addresses: node 198.18.0.11/24, pods from the pool
// 10.244.0.0/16 (blocks 10.244.0.0/26 ...), a block 10.244.200.0/26 of a
// node that joins after the outage.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/agent"
	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/runner"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentAPIOutage reproduces the lab report: the API server goes away
// while pods run, comes back answering 429 to the agent's Pod and Node
// lists and watches (client-go's reflectors back off, the caches lag), a
// pod is created and ADDed right after the return, and the agent's
// housekeeping (address GC, release of deleted nodes' blocks) runs while
// its caches do not show that pod, nor a node that joined meanwhile.
//
// Before the fix GC compared blocks read from the API with the Pod cache
// and released the new pod's address (the next pod got it too), and the
// orphan release deleted the new node's block. Now nothing is released
// unless an uncached GET says the pod or node is gone, while deleted ones
// are still released at once. During the outage ADD and DEL through the
// real wren-cni fail fast with code 11 and a message naming the API
// server; the agent stays ready and keeps its routes; the loss and the
// return are logged once each.
func TestAgentAPIOutage(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapAlways)
	gate := nstest.NewAPIGate(t, ac.rc)
	var logs lineLog
	an := ac.newNode("node-a", ac.sw1, "198.18.0.11/24")
	view := ac.startAgentVia(an, gate.Config(), slog.New(slog.NewTextHandler(&logs, nil)))
	ac.nodes = append(ac.nodes, an)
	// A second node, its API traffic through the same gate: the whole
	// cluster loses the API server.
	bn := ac.newNode("node-b", ac.sw1, "198.18.0.12/24")
	ac.startAgentVia(bn, gate.Config(), quiet)
	ac.nodes = append(ac.nodes, bn)
	old := ac.addPod(an, "old-0")
	remote := ac.addPod(bn, "b-0")
	ac.pingMatrix(30 * time.Second)
	cni := newCNIRunner(t, an.a)
	ctx := context.Background()
	apiHost := gate.Host()
	if got := view.APIServer(); got != apiHost {
		t.Fatalf("view names the API server %q; want %q", got, apiHost)
	}

	// The outage lasts as long as a pod pings across nodes, 600 pings
	// 10 ms apart: long enough for client-go's reflectors to back off
	// (0.8 s, 1.6 s, 3.2 s ...), and not one ping may be lost.
	pinged := make(chan string, 1)
	go func() {
		out, _ := old.ns.Run(context.Background(), "ping", "-i", "0.01", "-c", "600", "-W", "1", "-n", "-q", remote.ip.String())
		pinged <- out
	}()
	gate.Pause()
	cut := time.Now()
	nstest.Poll(t, 20*time.Second, "the agent notices the API server is gone", func() error {
		if _, _, down := view.APIDown(); !down {
			return fmt.Errorf("APIDown says reachable")
		}
		return nil
	})
	const lostLine = "lost the Kubernetes API server " // + host: err; keeping the node's routes, retrying
	nstest.Poll(t, 5*time.Second, "the loss is logged", func() error {
		if logs.count(lostLine) == 0 {
			return fmt.Errorf("no %q line", lostLine)
		}
		return nil
	})
	t.Run("during the outage", func(t *testing.T) {
		// ADD of a pod whose Pod object exists (the kubelet saw it before
		// the outage): try again later, at once, naming the API server.
		during := ac.podObject(an, "during-0")
		start := time.Now()
		code, msg, _ := cni.run(t, "ADD", "ctr-during-0", during)
		took := time.Since(start)
		if code != 11 {
			t.Errorf("ADD during the outage: CNI code %d (%s); want 11 (try again later)", code, msg)
		}
		for _, want := range []string{"wren-cni ADD pod default/during-0 (container ctr-during-0): the Kubernetes API server " + apiHost + " is unreachable (since ",
			"node-a cannot record the pod's address until it returns; the runtime will retry"} {
			if !strings.Contains(msg, want) {
				t.Errorf("ADD during the outage: message %q lacks %q", msg, want)
			}
		}
		if took > 5*time.Second {
			t.Errorf("ADD during the outage took %s; it must fail fast (< 5s)", took.Round(time.Millisecond))
		}
		t.Logf("ADD during the outage: code %d after %s: %s", code, took.Round(time.Millisecond), msg)

		// DEL of a running pod: also try again later, blaming the API
		// server, and nothing torn down.
		start = time.Now()
		code, msg, _ = cni.run(t, "DEL", "ctr-old-0", old)
		took = time.Since(start)
		if code != 11 || !strings.Contains(msg, "the Kubernetes API server "+apiHost+" is unreachable") ||
			!strings.Contains(msg, "cannot release the pod's address until it returns") || strings.Contains(msg, "wren agent") {
			t.Errorf("DEL during the outage: code %d, message %q; want 11 naming the API server %s, not the agent", code, msg, apiHost)
		}
		if took > 5*time.Second {
			t.Errorf("DEL during the outage took %s", took.Round(time.Millisecond))
		}
		t.Logf("DEL during the outage: code %d after %s: %s", code, took.Round(time.Millisecond), msg)
		if _, err := an.ns.NL.LinkByName(proxyarp.VethName("default", "old-0")); err != nil {
			t.Errorf("old-0's veth is gone after a DEL that could not release its address: %v", err)
		}
		// The node keeps its routes and its readiness (no probe restarts it).
		if err := an.ns.Ping(old.ip, 1); err != nil {
			t.Errorf("node -> old-0 (%s) during the outage: %v", old.ip, err)
		}
		if err := an.a.Ready(); err != nil {
			t.Errorf("agent not ready during the outage: %v", err)
		}
	})

	if out := <-pinged; !strings.Contains(out, " 0% packet loss") {
		t.Errorf("old-0 -> b-0 (across nodes) during the outage:\n%s", out)
	}

	// The return: the API server answers again, but 429 to the agent's Pod
	// and Node lists and watches, as the freshly restarted API
	// server did, so those caches stay as they were before the outage.
	gate.Throttle(func(r *http.Request) bool {
		return r.Method == http.MethodGet && (r.URL.Path == "/api/v1/pods" || r.URL.Path == "/api/v1/nodes")
	})
	gate.Resume()
	nstest.Poll(t, 20*time.Second, "the agent notices the API server is back", func() error {
		if _, err, down := view.APIDown(); down {
			return fmt.Errorf("APIDown says unreachable: %v", err)
		}
		return nil
	})
	t.Logf("API cut for %s", time.Since(cut).Round(time.Millisecond))

	// A pod created right after the return, ADDed through wren-cni.
	newPod := ac.podObject(an, "new-0")
	code, msg, newIP := cni.run(t, "ADD", "ctr-new-0", newPod)
	if code != 0 {
		t.Fatalf("ADD new-0 after the return: code %d: %s", code, msg)
	}
	// A node that joined meanwhile, with the block its agent claimed.
	nodeC := ac.nodeWithBlock("node-c", "10.244.200.0/26")
	// The reflectors tried again and were turned away.
	nstest.Poll(t, 90*time.Second, "the agent's Pod/Node informers retry and get 429", func() error {
		if gate.Throttled() == 0 {
			return fmt.Errorf("no list or watch of pods or nodes yet")
		}
		return nil
	})

	// Housekeeping while the caches show neither new-0 nor node-c.
	if err := an.a.Housekeep(ctx); err != nil {
		t.Errorf("housekeeping: %v", err)
	}
	allocs := ac.allocations()
	if got, ok := allocs["default/new-0/ctr-new-0"]; !ok || got != newIP {
		t.Errorf("after GC new-0 (created after the outage, Pod object present) holds %v (held: %v); want %s: GC freed a live pod's address", got, ok, newIP)
	}
	if _, ok := allocs["default/old-0/ctr-old-0"]; !ok {
		t.Errorf("after GC old-0 lost its address")
	}
	if !ac.blockExists("10.244.200.0/26") {
		t.Errorf("block 10.244.200.0/26 of node-c (joined during the outage, Node object present) was released")
	}
	// The next pod gets another address, and the node routes new-0's.
	nextPod := ac.podObject(an, "new-1")
	code, msg, nextIP := cni.run(t, "ADD", "ctr-new-1", nextPod)
	if code != 0 {
		t.Fatalf("ADD new-1: code %d: %s", code, msg)
	}
	if nextIP == newIP || nextIP == old.ip {
		t.Errorf("new-1 got %s, already held by %s", nextIP, map[bool]string{true: "new-0", false: "old-0"}[nextIP == newIP])
	}
	ac.wantPodRoute(an, newIP, "new-0")
	if err := an.ns.Ping(newIP, 1); err != nil {
		t.Errorf("node -> new-0 (%s): %v", newIP, err)
	}

	// Deleted pods and nodes are still released at once, caches or not:
	// new-1's Pod object goes without a CNI DEL, node-c's Node goes.
	if err := ac.c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "new-1"}}, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	if err := ac.c.Delete(ctx, nodeC); err != nil {
		t.Fatal(err)
	}
	if err := an.a.Housekeep(ctx); err != nil {
		t.Errorf("housekeeping: %v", err)
	}
	allocs = ac.allocations()
	if _, ok := allocs["default/new-1/ctr-new-1"]; ok {
		t.Errorf("new-1's Pod object is deleted, but GC kept its address %s", nextIP)
	}
	if got := allocs["default/new-0/ctr-new-0"]; got != newIP {
		t.Errorf("new-0 holds %v; want %s", got, newIP)
	}
	if ac.blockExists("10.244.200.0/26") {
		t.Errorf("node-c is deleted, but its block 10.244.200.0/26 was kept")
	}
	nstest.Poll(t, 10*time.Second, "new-1's veth swept after GC", func() error {
		if _, err := an.ns.NL.LinkByName(proxyarp.VethName("default", "new-1")); err == nil {
			return fmt.Errorf("veth of new-1 still there")
		}
		return nil
	})

	// Throttling ends; the caches catch up; nothing changes.
	gate.Throttle(nil)
	if err := an.a.Housekeep(ctx); err != nil {
		t.Errorf("housekeeping: %v", err)
	}
	if got := ac.allocations()["default/new-0/ctr-new-0"]; got != newIP {
		t.Errorf("after the caches caught up new-0 holds %v; want %s", got, newIP)
	}
	ac.wantPodRoute(an, newIP, "new-0")

	const backLine = "Kubernetes API server " // + host reachable again after 1.2s
	if n, m := logs.count(lostLine+apiHost+": "), logs.count(backLine+apiHost+" reachable again after "); n != 1 || m != 1 {
		t.Errorf("want one loss and one return line, got %d and %d:\n%s", n, m, logs.grep("Kubernetes API server"))
	} else {
		t.Logf("logged:\n%s", logs.grep("Kubernetes API server"))
	}
}

// startAgentVia starts (or restarts) the node's agent with its API
// traffic through cfg (the API server's, or an APIGate's) and logging to
// log, and waits until it is ready.
func (ac *agentCluster) startAgentVia(an *agentNode, cfg *rest.Config, log *slog.Logger) *wcluster.View {
	t := ac.t
	t.Helper()
	view, err := wcluster.NewView(cfg, an.name, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{NodeName: an.name, NodeIPMethod: "interface=eth0", NetNS: an.ns.Handle, Logger: log,
		Runner: runner.Config{MinInterval: 50 * time.Millisecond, RetryMin: 100 * time.Millisecond, RetryMax: time.Second}}, view)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	an.a = a
	an.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", an.name, err)
		}
	}
	t.Cleanup(an.stop)
	ready := a.Ready
	if ac.started != nil {
		ready = func() error { return ac.started(a) }
	}
	nstest.Poll(t, 20*time.Second, "agent "+an.name+" ready", ready)
	return view
}

// podObject creates a Pod object on n and a namespace for its sandbox.
func (ac *agentCluster) podObject(n *agentNode, name string) *agentPod {
	t := ac.t
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
	if err := ac.c.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return &agentPod{ns: nstest.New(t, "pod"), name: name}
}

// nodeWithBlock creates a Node and a confirmed block with its affinity, as
// that node's agent would have claimed it.
func (ac *agentCluster) nodeWithBlock(name, cidr string) *corev1.Node {
	t := ac.t
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := ac.c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	b := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: strings.NewReplacer(".", "-", "/", "-").Replace(cidr)},
		Spec: v1alpha1.IPAMBlockSpec{CIDR: v1alpha1.CIDR(cidr), Affinity: name, State: v1alpha1.BlockConfirmed}}
	if err := ac.c.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	return n
}

// allocations reads every allocation from the API: handle -> address.
// Two allocations of one address fail the test.
func (ac *agentCluster) allocations() map[string]netip.Addr {
	t := ac.t
	t.Helper()
	var l v1alpha1.IPAMBlockList
	if err := ac.c.List(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	out := map[string]netip.Addr{}
	holder := map[netip.Addr]string{}
	for _, b := range l.Items {
		for _, al := range b.Spec.Allocations {
			ip, err := netip.ParseAddr(al.IP)
			if err != nil {
				t.Fatalf("block %s: allocation %+v: %v", b.Name, al, err)
			}
			if h, dup := holder[ip]; dup {
				t.Errorf("%s is allocated to both %s and %s", ip, h, al.Handle)
			}
			holder[ip] = al.Handle
			out[al.Handle] = ip
		}
	}
	return out
}

func (ac *agentCluster) blockExists(cidr string) bool {
	ac.t.Helper()
	var l v1alpha1.IPAMBlockList
	if err := ac.c.List(context.Background(), &l); err != nil {
		ac.t.Fatal(err)
	}
	for _, b := range l.Items {
		if string(b.Spec.CIDR) == cidr {
			return true
		}
	}
	return false
}

// wantPodRoute checks that the node routes ip to pod's veth, and only
// there.
func (ac *agentCluster) wantPodRoute(n *agentNode, ip netip.Addr, pod string) {
	t := ac.t
	t.Helper()
	veth := n.ns.Link(t, proxyarp.VethName("default", pod))
	dst := &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
	rs, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].LinkIndex != veth.Attrs().Index {
		t.Errorf("routes to %s: %v; want one via %s's veth %s (ifindex %d)", ip, rs, pod, veth.Attrs().Name, veth.Attrs().Index)
	}
}

// cniRunner runs the real wren-cni binary against the agent's handler
// served on a unix socket by pkg/cniserver, as in production.
type cniRunner struct {
	bin, conf string
}

func newCNIRunner(t *testing.T, h cniserver.Handler) *cniRunner {
	t.Helper()
	dir, err := os.MkdirTemp("", "wrencni") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "wren-cni")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/cni")
	cmd.Dir = kubetest.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cni: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "wren.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cniserver.Serve(ctx, sock, h, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cni server: %v", err)
		}
	})
	nstest.Poll(t, 5*time.Second, "CNI socket", func() error { _, err := os.Stat(sock); return err })
	return &cniRunner{bin: bin, conf: fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"wren-cni","agent_socket":%q}`, sock)}
}

// run executes one CNI command for p and returns the CNI error code (0 on
// success), its message, and the address of a successful ADD.
func (r *cniRunner) run(t *testing.T, command, containerID string, p *agentPod) (uint, string, netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=/var/run/netns/" + p.ns.Name,
		"CNI_IFNAME=eth0", "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + p.name, "CNI_PATH=" + filepath.Dir(r.bin),
		"PATH=" + os.Getenv("PATH")}
	cmd.Stdin = strings.NewReader(r.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		if command != "ADD" {
			return 0, "", netip.Addr{}
		}
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res.IPs) != 1 {
			t.Fatalf("wren-cni ADD result %s: %v", stdout.Bytes(), err)
		}
		pfx, err := netip.ParsePrefix(res.IPs[0].Address)
		if err != nil {
			t.Fatal(err)
		}
		p.ip = pfx.Addr()
		return 0, "", pfx.Addr()
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr != nil {
		t.Fatalf("wren-cni %s: %v; stdout is not a CNI error: %s (stderr %s)", command, err, stdout.Bytes(), stderr.String())
	}
	return e.Code, e.Msg, netip.Addr{}
}

// lineLog collects an agent's log for assertions.
type lineLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// grep returns the lines that contain s.
func (l *lineLog) grep(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
