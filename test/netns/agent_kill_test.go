//go:build linux

package nstest_test

// TestAgentKill9 runs node-b's agent as the real wren-agent binary (built
// from ./cmd/agent), kills it with SIGKILL while a pod on node-a pings a
// pod on node-b, and starts it again. The binary's dataplane is node-b's
// namespace (--netns); its API connection stays in the root namespace,
// where envtest's kube-apiserver listens on 127.0.0.1.
//
// Test addresses: nodes 198.18.0.0/24 (one switch), pods 10.244.0.0/16;
// the route-watch canary is a blackhole for 198.19.255.252/30 inside
// node-b's namespace. Nothing is routed in the root namespace.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/proxyarp"
	"github.com/wren-net/wren/pkg/routes"
	"github.com/wren-net/wren/pkg/tunnel"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

// agentProc is one node's wren-agent binary: the flags it runs with and
// the process currently running them, if any.
type agentProc struct {
	t      *testing.T
	bin    string
	args   []string
	socket string     // the CNI socket
	health string     // host:port of /readyz
	ns     *nstest.NS // if set, the process runs inside ns, and so does health
	log    string     // stdout and stderr of every run, appended

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// buildAgent builds ./cmd/agent into a temporary directory once per test.
func buildAgent(t *testing.T) string { t.Helper(); return buildCmd(t, "./cmd/agent", "wren-agent") }

// buildWrenctl builds ./cmd/wrenctl likewise.
func buildWrenctl(t *testing.T) string { t.Helper(); return buildCmd(t, "./cmd/wrenctl", "wrenctl") }

// buildCmd builds the command pkg of this repository as name into a
// temporary directory.
func buildCmd(t *testing.T, pkg, name string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command(goBin, "build", "-o", bin, pkg)
	cmd.Dir = kubetest.RepoRoot(t)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	t.Logf("built %s in %s", name, time.Since(t0).Round(time.Millisecond))
	return bin
}

// writeKubeconfig writes rc (envtest's cluster-admin over 127.0.0.1) as a
// kubeconfig file for the binary's --kubeconfig.
func writeKubeconfig(t *testing.T, rc *rest.Config) string {
	t.Helper()
	return nstest.WriteKubeconfig(t, rc, rc.Host)
}

// freeLoopbackAddr returns 127.0.0.1:<a port nobody listens on now>.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// addBinaryNode creates the Node object and namespace as addNode does,
// but runs the wren-agent binary for it instead of an in-process agent.
// The returned node has no in-process agent (a is nil): its pods go
// through the binary's CNI socket (addBinaryPod).
func (ac *agentCluster) addBinaryNode(name string, sw *nstest.Switch, addr, bin, kubeconfig string) (*agentNode, *agentProc) {
	t := ac.t
	t.Helper()
	an := ac.newNode(name, sw, addr)
	dir := t.TempDir()
	p := &agentProc{t: t, bin: bin, socket: filepath.Join(dir, "wren.sock"), health: freeLoopbackAddr(t), log: filepath.Join(dir, name+".log")}
	// The process lives in the root namespace: its metrics listen on a
	// free loopback port, not on :9091 of every interface.
	p.args = []string{"--node-name", name, "--kubeconfig", kubeconfig, "--node-ip-method", "interface=eth0",
		"--netns", "/var/run/netns/" + an.ns.Name, "--socket", p.socket, "--health-addr", p.health,
		"--metrics-addr", freeLoopbackAddr(t), "--debug"}
	ac.launch(an, p)
	return an, p
}

// addBinaryNodeInNS is addBinaryNode with the whole process inside the
// node's namespace ("ip netns exec <ns> wren-agent ..."), as a DaemonSet
// pod with hostNetwork runs on a real node: every socket the agent opens
// (BGP's listener on :179 and its dials to peers, /readyz) lives there.
// Its API traffic goes through an APIProxy on the namespace's loopback to
// envtest in the root namespace. extra flags follow the common ones.
func (ac *agentCluster) addBinaryNodeInNS(name string, sw *nstest.Switch, addr, bin string, extra ...string) (*agentNode, *agentProc) {
	t := ac.t
	t.Helper()
	an := ac.newNode(name, sw, addr)
	u, err := url.Parse(ac.rc.Host)
	if err != nil || u.Host == "" {
		t.Fatalf("envtest host %q: not a URL: %v", ac.rc.Host, err)
	}
	proxy := nstest.APIProxy(t, an.ns, u.Host)
	kubeconfig := nstest.WriteKubeconfig(t, ac.rc, "https://"+proxy)
	dir := t.TempDir()
	// The namespace is fresh, so its loopback has every port free.
	p := &agentProc{t: t, bin: bin, socket: filepath.Join(dir, "wren.sock"), health: "127.0.0.1:9099", ns: an.ns, log: filepath.Join(dir, name+".log")}
	p.args = append([]string{"--node-name", name, "--kubeconfig", kubeconfig, "--node-ip-method", "interface=eth0",
		"--socket", p.socket, "--health-addr", p.health, "--debug"}, extra...)
	ac.launch(an, p)
	return an, p
}

// launch starts p for an, waits until it is ready and adds an to the
// cluster's nodes. When the test fails, the agent's log is printed.
func (ac *agentCluster) launch(an *agentNode, p *agentProc) {
	t := ac.t
	t.Helper()
	// Registered before the process's own cleanup, so it runs after the
	// kill and shows everything the agent wrote.
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("wren-agent %s log (%s):\n%s", an.name, p.log, b)
		}
	})
	p.start()
	ready := p.waitReady(30 * time.Second)
	if p.ns != nil {
		p.checkInNS()
	}
	t.Logf("wren-agent %s (pid %d) ready after %s", an.name, p.cmd.Process.Pid, ready.Round(time.Millisecond))
	ac.nodes = append(ac.nodes, an)
}

// checkInNS fails the test unless the PID started through ip netns exec
// is the agent itself (so kill9 signals the agent, not a wrapper) and
// runs in p.ns.
func (p *agentProc) checkInNS() {
	t := p.t
	t.Helper()
	pid := p.cmd.Process.Pid
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || exe != p.bin {
		t.Fatalf("pid %d runs %q (%v); want the agent %s", pid, exe, err, p.bin)
	}
	var got, want unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(p.ns.Handle), &want); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Fatalf("wren-agent pid %d is not in namespace %s", pid, p.ns.Name)
	}
}

// start starts the binary with its flags. When the test ends, a process
// still running is killed, by its PID.
func (p *agentProc) start() {
	t := p.t
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	fmt.Fprintf(f, "=== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	if p.ns != nil {
		// ip netns exec enters the namespace and execs the agent, so the
		// PID it starts with is the agent's own (kill9 signals it).
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.ns.Name, p.bin}, p.args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wren-agent: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is read from cmd.ProcessState
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
}

// waitReady polls /readyz until it answers 200 and returns how long that
// took. The test fails at once if the process exits meanwhile.
func (p *agentProc) waitReady(deadline time.Duration) time.Duration {
	t := p.t
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	if p.ns != nil {
		hc = p.ns.HTTPClient(time.Second)
	}
	return nstest.Poll(t, deadline, "wren-agent /readyz", func() error {
		select {
		case <-p.exited:
			t.Fatalf("wren-agent exited before it was ready: %s", p.cmd.ProcessState)
		default:
		}
		resp, err := hc.Get("http://" + p.health + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return nil
	})
}

// kill9 sends SIGKILL to the process and waits until it is gone.
func (p *agentProc) kill9() {
	t := p.t
	t.Helper()
	pid := p.cmd.Process.Pid
	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 wren-agent pid %d: %v", pid, err)
	}
	// A killed process exits once none of its threads is inside the
	// kernel uninterruptibly (for example a netlink request waiting for
	// a kernel lock). That is the kernel's time, not the agent's: after
	// 2 s the threads' kernel stacks are logged, to show where they
	// wait, and only 30 s fail the test.
	select {
	case <-p.exited:
	case <-time.After(2 * time.Second):
		t.Logf("wren-agent pid %d still exiting 2s after SIGKILL; its threads in the kernel:\n%s", pid, kernelStacks(pid))
		select {
		case <-p.exited:
			t.Logf("wren-agent pid %d exited %s after SIGKILL", pid, time.Since(killed).Round(time.Millisecond))
		case <-time.After(28 * time.Second):
			t.Fatalf("wren-agent pid %d still running 30s after SIGKILL; its threads in the kernel:\n%s", pid, kernelStacks(pid))
		}
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("wren-agent pid %d ended with %s; want killed by SIGKILL", p.cmd.Process.Pid, p.cmd.ProcessState)
	}
}

// cniAdd sends a CNI ADD to the binary's socket, retrying while the agent
// says it is not ready (gRPC Unavailable, CNI code 11, which the runtime
// retries too), and returns the pod's address.
func (p *agentProc) cniAdd(req *cniv1.AddRequest) netip.Addr {
	t := p.t
	t.Helper()
	conn, err := grpc.NewClient("unix://"+p.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := cniv1.NewCNIClient(conn)
	var reply *cniv1.AddReply
	nstest.Poll(t, 20*time.Second, "CNI ADD "+req.PodName+" through the wren-agent socket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := c.Add(ctx, req)
		if status.Code(err) == codes.Unavailable {
			return err
		}
		if err != nil {
			t.Fatalf("CNI ADD %s: %v", req.PodName, err)
		}
		reply = r
		return nil
	})
	ip, err := netip.ParsePrefix(reply.GetIp())
	if err != nil || ip.Bits() != 32 {
		t.Fatalf("CNI ADD %s: address %q is not a /32: %v", req.PodName, reply.GetIp(), err)
	}
	return ip.Addr()
}

// kernelStacks returns the state and kernel stack of each thread of pid
// that is not simply sleeping (root reads /proc/PID/task/TID/stack).
func kernelStacks(pid int) string {
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		stat, err := os.ReadFile(task + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ...: the state follows the last ')'.
		state := "?"
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			state = string(stat[i+2])
		}
		if state == "S" {
			continue
		}
		stack, _ := os.ReadFile(task + "/stack")
		fmt.Fprintf(&b, "%s state %s\n%s", filepath.Base(task), state, stack)
	}
	if b.Len() == 0 {
		return "(no thread outside plain sleep, or the process is gone)\n"
	}
	return b.String()
}

// addBinaryPod creates the Pod object and its namespace and runs CNI ADD
// through the node's wren-agent binary. It returns the pod and the ADD
// request, to repeat it.
func (ac *agentCluster) addBinaryPod(n *agentNode, p *agentProc, name string) (*agentPod, *cniv1.AddRequest) {
	t := ac.t
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
	if err := ac.c.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	ns := nstest.New(t, "pod")
	req := &cniv1.AddRequest{ContainerId: "ctr-" + name, Netns: "/var/run/netns/" + ns.Name, Ifname: "eth0",
		PodNamespace: "default", PodName: name, CniVersion: "1.0.0"}
	ap := &agentPod{ns: ns, name: name, ip: p.cniAdd(req)}
	n.pods = append(n.pods, ap)
	return ap, req
}

// routeWatch follows route updates in one namespace (nstest.RouteWatch,
// failing the test instead of returning errors).
type routeWatch struct{ *nstest.RouteWatch }

// watchRoutes subscribes to route updates in ns until the test ends.
func watchRoutes(t *testing.T, ns *nstest.NS) *routeWatch {
	t.Helper()
	w, err := nstest.WatchRoutes(ns.Handle, ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return &routeWatch{w}
}

// deletions returns the deletions of Wren's routes since the watch
// started (or the previous call), proven complete by a canary route.
func (w *routeWatch) deletions(t *testing.T) []string {
	t.Helper()
	dels, err := w.Deletions(routes.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	return dels
}

// linkIndex returns the index of the named link in ns.
func linkIndex(t *testing.T, ns *nstest.NS, name string) int {
	t.Helper()
	return ns.Link(t, name).Attrs().Index
}

// errorLines returns the agent log's lines at level ERROR or WARN.
func errorLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		if l := s.Text(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			out = append(out, l)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAgentKill9: the acceptance point "kill -9 an agent while pods ping
// across nodes; it comes back with the same blocks and IPs, deletes no
// route while starting, and the ping loses no packet", with the real
// wren-agent binary on node-b.
func TestAgentKill9(t *testing.T) {
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	kubeconfig := writeKubeconfig(t, ac.rc)
	ac.pool(v1alpha1.EncapAlways)
	a := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	b, proc := ac.addBinaryNode("node-b", ac.sw1, "198.18.0.12/24", bin, kubeconfig)
	src := ac.addPod(a, "client")
	dst, dstReq := ac.addBinaryPod(b, proc, "server")
	ac.pingMatrix(20 * time.Second)
	ac.assertStates(false)
	blocksBefore, tunBefore := ac.clusterFacts()
	if len(blocksBefore["node-b"]) == 0 || !tunBefore["node-b"].IsValid() {
		t.Fatalf("node-b has no block or no tunnel address before the kill: %v %v", blocksBefore, tunBefore)
	}
	veth := proxyarp.VethName("default", dst.name)
	vxBefore, vethBefore := linkIndex(t, b.ns, tunnel.VXLANName), linkIndex(t, b.ns, veth)

	// Watch node-b's kernel for deletions of our routes from now on.
	watch := watchRoutes(t, b.ns)
	pingOut := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := src.ns.Run(ctx, "ping", "-i", "0.01", "-c", "600", "-W", "1", "-n", "-q", dst.ip.String())
		if err != nil {
			out += "\n" + err.Error()
		}
		pingOut <- out
	}()
	rx := func() uint64 { return dst.ns.Link(t, "eth0").Attrs().Statistics.RxPackets }
	rx0 := rx()
	nstest.Poll(t, 5*time.Second, "ping reaching the server pod", func() error {
		if n := rx() - rx0; n < 20 {
			return fmt.Errorf("only %d packets so far", n)
		}
		return nil
	})

	oldPID := proc.cmd.Process.Pid
	killed := time.Now()
	proc.kill9()
	gone := time.Since(killed)
	proc.start()
	ready := proc.waitReady(20 * time.Second)
	t.Logf("wren-agent on node-b: pid %d killed (gone in %s); pid %d ready %s after its start, %s after the SIGKILL",
		oldPID, gone.Round(time.Millisecond), proc.cmd.Process.Pid, ready.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	select {
	case out := <-pingOut:
		t.Fatalf("the ping ended before the new agent was ready, so it does not cover the restart:\n%s", out)
	default:
	}

	out := <-pingOut
	if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("packets lost across the kill -9:\n%s", out)
	} else if i := strings.Index(out, "600 packets"); i >= 0 {
		t.Logf("ping across the kill -9: %s", strings.TrimSpace(out[i:]))
	}
	for _, d := range watch.deletions(t) {
		t.Errorf("node-b deleted its own route %s across the kill -9", d)
	}
	if got := linkIndex(t, b.ns, tunnel.VXLANName); got != vxBefore {
		t.Errorf("node-b's %s was recreated across the kill -9: ifindex %d -> %d", tunnel.VXLANName, vxBefore, got)
	}
	if got := linkIndex(t, b.ns, veth); got != vethBefore {
		t.Errorf("node-b's pod veth %s was recreated across the kill -9: ifindex %d -> %d", veth, vethBefore, got)
	}
	blocksAfter, tunAfter := ac.clusterFacts()
	if !reflect.DeepEqual(blocksBefore, blocksAfter) {
		t.Errorf("blocks changed across the kill -9: %v -> %v", blocksBefore, blocksAfter)
	}
	if !reflect.DeepEqual(tunBefore, tunAfter) {
		t.Errorf("tunnel addresses changed across the kill -9: %v -> %v", tunBefore, tunAfter)
	}
	ac.assertStates(false)

	// The runtime may repeat an ADD it saw fail while the agent was
	// down: the new process returns the same address, and touches no
	// route of the running pod.
	if ip := proc.cniAdd(dstReq); ip != dst.ip {
		t.Errorf("CNI ADD of %s again after the kill -9: %s; want %s", dstReq.ContainerId, ip, dst.ip)
	}
	for _, d := range watch.deletions(t) {
		t.Errorf("node-b deleted its own route %s on the repeated CNI ADD", d)
	}
	ac.assertStates(false)
	ac.pingMatrix(10 * time.Second)

	for _, l := range errorLines(t, proc.log) {
		t.Logf("wren-agent log: %s", l)
	}
	select {
	case <-proc.exited:
		t.Errorf("the new wren-agent exited: %s", proc.cmd.ProcessState)
	default:
	}
}

// bgpDebug asks the agent's debug API, over its socket, for its BGP
// sessions and learned routes (wrenctl status and routes).
func (p *agentProc) bgpDebug() (nstest.AgentBGP, error) {
	return nstest.DebugBGP(p.socket, 10*time.Second)
}

// bgpStatus asks the agent's debug API for its Status only: the sessions
// with their prefix counts, without the routes.
func (p *agentProc) bgpStatus() (*debugv1.StatusReply, error) {
	return nstest.DebugStatus(p.socket, 10*time.Second)
}
