//go:build linux

package bench

// CNI ADD → pod pingable, and DEL, for wren-cni beside the reference ptp
// plugin with host-local IPAM (Debian's containernetworking-plugins), on
// one node namespace, in one run, interleaved pod by pod so that machine
// noise hits both alike.
//
// Both plugins are executed the way a container runtime does it: CNI_*
// environment, the network configuration on stdin, run inside the node's
// namespace ("ip netns exec <node> <plugin>"), so ptp's host side lands in
// the node namespace and wren-cni reaches the agent's socket from there.
// The wren agent runs in this process, bound to the node namespace, on a
// real kube-apiserver + etcd (test/kube), with the production loop timing
// (runner defaults) and serving pkg/cniserver on a socket in a temporary
// directory.
//
// ADD latency is from the exec until the plugin has returned AND the pod
// address answers an echo request from the node namespace; for Wren the
// allocation is then checked in the API (a consistent LIST of IPAMBlocks),
// for ptp in host-local's data directory. DEL latency is from the exec
// until it returns.
//
// Test addresses: the node is 198.18.0.11/24 on a switch with a default
// route via 198.18.0.1 (nothing answers there; a real node has such a
// route, and proxy ARP for 169.254.1.1 needs a route to it through another
// interface). Wren's pods come from the IPPool 10.244.0.0/16 (no
// encapsulation: one node), ptp's from host-local's 10.245.0.0/16.
// Everything lives in wrent-* namespaces made by test/netns, never linked
// to the root namespace; echo requests go from the node namespace to pod
// addresses only.
//
// Run the benchmark (root; about a minute and a half for its two
// variants, see BenchmarkCNI, plus a few seconds for BenchmarkCNIVersion,
// which times the plugins' start alone), which prints its tables and
// metrics:
//
//	go test ./test/bench -run '^$' -bench CNI -benchtime 1x

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
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
	"github.com/wren-net/wren/pkg/runner"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

const (
	nodeName   = "bench-node"
	nodeAddr   = "198.18.0.11/24"
	nodeGW     = "198.18.0.1"
	wrenPool   = "10.244.0.0/16"
	ptpPool    = "10.245.0.0/16"
	ptpNetwork = "bench-ptp"
	podNS      = "default"

	// benchPods is the number of pods per plugin in one benchmark round.
	benchPods = 200
	// addRetries is how often the benchmark repeats an ADD that failed
	// with "try again later"; each one is reported.
	addRetries = 3
	// baselineExecs is the number of CNI VERSION calls per plugin that
	// measure what exec alone costs.
	baselineExecs = 50

	refDir     = "/usr/lib/cni"
	refPackage = "containernetworking-plugins"

	pingDeadline = 10 * time.Second
	callTimeout  = 30 * time.Second
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// plugin is one CNI plugin under test.
type plugin struct {
	name    string       // "wren" or "ptp"
	bin     string       // the executable
	cniPath string       // CNI_PATH: where it finds delegated plugins (host-local)
	conf    []byte       // network configuration, on stdin
	pool    netip.Prefix // where its pod addresses come from
	// recorded reports whether the plugin's IPAM state holds p's
	// allocation; an error if it holds something else for it.
	recorded func(ctx context.Context, p *pod) (bool, error)
}

// pod is one pod sandbox: its namespace and, while added, its address.
type pod struct {
	pl          *plugin
	name        string // K8S_POD_NAME (wren's allocations are recorded under it)
	ns          *nstest.NS
	containerID string
	ip          netip.Addr
	added       bool
}

func (p *pod) netnsPath() string { return "/var/run/netns/" + p.ns.Name }

// env is one node namespace with a running wren agent, and both plugins.
type env struct {
	c       client.Client
	node    *nstest.NS
	ping    *pinger
	tr      *tracer
	wren    *plugin
	ptp     *plugin
	ptpData string // host-local's dataDir
	refVer  string // Debian version of containernetworking-plugins
	about   string // date, machine and reference version, for the report
}

// setup builds the node, the API server, the agent and both plugins. It
// skips without root, without the API server binaries, or without the
// reference plugins (failing instead under CI). The agent's API client is
// unthrottled (envtest's 1000 requests/s) unless shippedQPS asks for the
// limit wren-agent has today.
func setup(tb testing.TB, shippedQPS bool) *env {
	tb.Helper()
	nstest.RequireRoot(tb)
	refVer := requireReference(tb)
	rc := kubetest.Start(tb)
	c, err := wcluster.NewClient(rc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.IPPoolSpec{CIDR: wrenPool, BlockSize: 26, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapNever}}
	if err := c.Create(ctx, pool); err != nil {
		tb.Fatal(err)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	if err := c.Create(ctx, n); err != nil {
		tb.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: netip.MustParsePrefix(nodeAddr).Addr().String()}}
	if err := c.Status().Update(ctx, n); err != nil {
		tb.Fatal(err)
	}

	sw := nstest.NewSwitch(tb, "sw")
	node := nstest.New(tb, "node")
	sw.Attach(tb, node, "eth0", nodeAddr, 0)
	node.AddRoute(tb, "default", "via", nodeGW)

	e := &env{c: c, node: node, tr: &tracer{}, refVer: refVer}
	sock := e.startAgent(tb, rc, shippedQPS)
	e.ping = newPinger(tb, node.Handle)

	bin := buildWrenCNI(tb)
	e.wren = &plugin{name: "wren", bin: bin, cniPath: filepath.Dir(bin), pool: netip.MustParsePrefix(wrenPool),
		conf:     fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"wren-cni","agent_socket":%q,"timeout":"30s"}`, sock),
		recorded: e.wrenRecorded}
	e.ptpData = tb.TempDir()
	e.ptp = &plugin{name: "ptp", bin: filepath.Join(refDir, "ptp"), cniPath: refDir, pool: netip.MustParsePrefix(ptpPool),
		conf: fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":%q,"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}}`,
			ptpNetwork, ptpPool, e.ptpData),
		recorded: e.ptpRecorded}
	e.about = fmt.Sprintf("%s; %d CPUs, kernel %s, %s, load %s; reference: ptp + host-local from %s %s (%s)",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), kernelRelease(), runtime.Version(),
		loadAvg(), refPackage, refVer, refDir)
	tb.Log(e.about)
	return e
}

// requireReference checks for Debian's ptp and host-local and returns the
// package version.
func requireReference(tb testing.TB) string {
	tb.Helper()
	for _, p := range []string{"ptp", "host-local"} {
		path := filepath.Join(refDir, p)
		if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
			msg := fmt.Sprintf("reference CNI plugin %s is missing: install it with: apt-get install -y %s", path, refPackage)
			if ci := os.Getenv("CI"); ci != "" {
				tb.Fatalf("%s (CI=%s: not skipping)", msg, ci)
			}
			tb.Skip(msg)
		}
	}
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", refPackage).Output()
	if err != nil || len(out) == 0 {
		return "(version unknown: not installed by dpkg)"
	}
	return string(out)
}

// loadAvg is the 1, 5 and 15 minute load average.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// startAgent runs a wren agent for the node namespace and serves its CNI
// handler on a socket; both stop when the test ends. It returns the
// socket path.
func (e *env) startAgent(tb testing.TB, rc *rest.Config, shippedQPS bool) string {
	tb.Helper()
	if shippedQPS {
		// With QPS and Burst unset (as cluster.RESTConfig leaves them),
		// cluster.NewView applies wren-agent's own limit.
		rc = rest.CopyConfig(rc)
		rc.QPS, rc.Burst = 0, 0
	}
	view, err := wcluster.NewView(rc, nodeName, quiet)
	if err != nil {
		tb.Fatal(err)
	}
	cl := &timedCluster{Cluster: view, tr: e.tr}
	cl.store = &timedStore{Store: view.IPAMStore(), tr: e.tr}
	// runner.Config{}: the production loop timing (100 ms between sync
	// starts), which is part of what an ADD waits for.
	a, err := agent.New(agent.Config{NodeName: nodeName, NodeIPMethod: "interface=eth0", NetNS: e.node.Handle,
		Logger: quiet, Runner: runner.Config{}}, cl)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sock := filepath.Join(tb.TempDir(), "wren.sock")
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- cniserver.Serve(ctx, sock, &timedHandler{Handler: a, tr: e.tr}, quiet) }()
	tb.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				tb.Errorf("agent: %v", err)
			}
		}
	})
	nstest.Poll(tb, 30*time.Second, "agent ready", a.Ready)
	nstest.Poll(tb, 5*time.Second, "CNI socket", func() error {
		fi, err := os.Stat(sock)
		if err == nil && fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s is not a socket", sock)
		}
		return err
	})
	return sock
}

// buildWrenCNI builds wren-cni into a temporary directory the way the
// image ships it (internal/image goBuild: static, CGO_ENABLED=0,
// -trimpath, -ldflags "-s -w"): a cgo build with debug information is
// larger and starts slower, which is not what a node runs.
func buildWrenCNI(tb testing.TB) string {
	tb.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(tb.TempDir(), "wren-cni")
	cmd := exec.Command(goTool, "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", bin, "./cmd/cni")
	cmd.Dir = kubetest.RepoRoot(tb)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build wren-cni: %v: %s", err, out)
	}
	return bin
}

// newPod makes the pod's network namespace (deleted when the test ends)
// and, for Wren, its Pod object: the agent's address GC frees addresses of
// pods that do not exist.
func (e *env) newPod(tb testing.TB, pl *plugin, i int) *pod {
	tb.Helper()
	p := &pod{pl: pl, name: fmt.Sprintf("bench-%s-%03d", pl.name, i), ns: nstest.New(tb, pl.name[:1]+"pod")}
	if pl == e.wren {
		o := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: podNS},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
		if err := e.c.Create(context.Background(), o); err != nil {
			tb.Fatal(err)
		}
	}
	return p
}

// cleanupPods deletes (CNI DEL) every pod still added when the test ends,
// before the namespaces go: register it after creating the pods.
func (e *env) cleanupPods(tb testing.TB, pods []*pod) {
	tb.Cleanup(func() {
		for _, p := range pods {
			if p.added {
				if _, err := e.del(context.Background(), p); err != nil {
					tb.Errorf("cleanup: %v", err)
				}
			}
		}
	})
}

func newContainerID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// exec runs the plugin inside the node namespace as a runtime would.
func (e *env) exec(ctx context.Context, p *pod, command string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.node.Name, p.pl.bin)
	cmd.Env = []string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + p.containerID,
		"CNI_NETNS=" + p.netnsPath(),
		"CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=" + podNS + ";K8S_POD_NAME=" + p.name + ";K8S_POD_INFRA_CONTAINER_ID=" + p.containerID,
		"CNI_PATH=" + p.pl.cniPath,
		"PATH=" + os.Getenv("PATH"),
	}
	cmd.Stdin = bytes.NewReader(p.pl.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ce struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		_ = json.Unmarshal(stdout.Bytes(), &ce)
		return nil, &cniError{code: ce.Code, msg: ce.Msg, err: fmt.Errorf("%s %s pod %s: %w: stdout %s stderr %s", p.pl.name, command, p.name, err,
			bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(stderr.Bytes()))}
	}
	return stdout.Bytes(), nil
}

// cniError is a failed plugin run with the CNI error code it printed (0
// if it printed none).
type cniError struct {
	code uint
	msg  string // the CNI error's msg
	err  error
}

func (e *cniError) Error() string { return e.err.Error() }
func (e *cniError) Unwrap() error { return e.err }

// errTryAgain is CNI error code 11, "try again later": a runtime retries
// the sandbox.
const errTryAgain = 11

// addTiming is one ADD: until the plugin returned, and until the pod
// answered a ping. retried counts the failed attempts (code 11) before.
type addTiming struct {
	returned, pingable time.Duration
	retried            []error
}

// add runs CNI ADD with a fresh container ID and waits until the pod's
// address answers from the node namespace. With retries > 0 it repeats an
// ADD that failed with code 11 ("try again later") at once, as a runtime
// retries the sandbox (a kubelet only after a back-off of seconds); the
// time counts from the first attempt.
func (e *env) add(ctx context.Context, p *pod, retries int) (addTiming, error) {
	p.containerID = newContainerID()
	p.added = true // from the first attempt on, a DEL is due (and harmless)
	var at addTiming
	start := time.Now()
	var out []byte
	var err error
	for {
		out, err = e.exec(ctx, p, "ADD")
		var ce *cniError
		if err == nil || len(at.retried) >= retries || !errors.As(err, &ce) || ce.code != errTryAgain {
			break
		}
		at.retried = append(at.retried, err)
	}
	at.returned = time.Since(start)
	if err != nil {
		return at, err
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		return at, fmt.Errorf("%s ADD pod %s: result %s: want one address (%v)", p.pl.name, p.name, out, err)
	}
	ip, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil || !p.pl.pool.Contains(ip.Addr()) {
		return at, fmt.Errorf("%s ADD pod %s: address %q is not in %s", p.pl.name, p.name, res.IPs[0].Address, p.pl.pool)
	}
	p.ip = ip.Addr()
	if err := e.ping.waitReachable(p.ip, pingDeadline); err != nil {
		return at, fmt.Errorf("%s ADD pod %s: %w", p.pl.name, p.name, err)
	}
	at.pingable = time.Since(start)
	return at, nil
}

// del runs CNI DEL.
func (e *env) del(ctx context.Context, p *pod) (time.Duration, error) {
	start := time.Now()
	_, err := e.exec(ctx, p, "DEL")
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	p.added = false
	return took, nil
}

// checkAdded asserts the plugin recorded the allocation.
func (e *env) checkAdded(ctx context.Context, p *pod) error {
	ok, err := p.pl.recorded(ctx, p)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s ADD pod %s returned %s, but its IPAM does not record it", p.pl.name, p.name, p.ip)
	}
	return nil
}

// checkDeleted asserts the allocation is released and the pod's eth0 gone.
func (e *env) checkDeleted(ctx context.Context, p *pod) error {
	ok, err := p.pl.recorded(ctx, p)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s DEL pod %s: %s is still allocated", p.pl.name, p.name, p.ip)
	}
	if _, err := p.ns.NL.LinkByName("eth0"); !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("%s DEL pod %s: eth0 in %s: still there (lookup error: %v)", p.pl.name, p.name, p.ns.Name, err)
	}
	return nil
}

// wrenRecorded looks the container up in the IPAMBlocks, read from the
// API server (an uncached client: what etcd has committed).
func (e *env) wrenRecorded(ctx context.Context, p *pod) (bool, error) {
	var bl v1alpha1.IPAMBlockList
	if err := e.c.List(ctx, &bl); err != nil {
		return false, fmt.Errorf("list IPAMBlocks: %w", err)
	}
	for _, b := range bl.Items {
		for _, al := range b.Spec.Allocations {
			if al.ContainerID != p.containerID {
				continue
			}
			if al.IP != p.ip.String() || al.Node != nodeName || al.Namespace != podNS || al.Pod != p.name {
				return true, fmt.Errorf("IPAMBlock %s records container %s as %+v, want %s for %s/%s on %s",
					b.Name, p.containerID, al, p.ip, podNS, p.name, nodeName)
			}
			return true, nil
		}
	}
	return false, nil
}

// ptpRecorded reads host-local's reservation file for the pod's address:
// its first line is the container ID.
func (e *env) ptpRecorded(_ context.Context, p *pod) (bool, error) {
	b, err := os.ReadFile(filepath.Join(e.ptpData, ptpNetwork, p.ip.String()))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if id, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n"); strings.TrimSpace(id) != p.containerID {
		if p.added {
			return true, fmt.Errorf("host-local records %s for container %q, want %s", p.ip, id, p.containerID)
		}
		return false, nil // reused by another pod since
	}
	return true, nil
}

// checkEmpty asserts no pod allocation is left in either IPAM.
func (e *env) checkEmpty(ctx context.Context) error {
	var bl v1alpha1.IPAMBlockList
	if err := e.c.List(ctx, &bl); err != nil {
		return fmt.Errorf("list IPAMBlocks: %w", err)
	}
	for _, b := range bl.Items {
		if len(b.Spec.Allocations) > 0 {
			return fmt.Errorf("IPAMBlock %s still has %d allocations after every DEL", b.Name, len(b.Spec.Allocations))
		}
	}
	des, err := os.ReadDir(filepath.Join(e.ptpData, ptpNetwork))
	if errors.Is(err, os.ErrNotExist) {
		return nil // host-local never ran
	}
	if err != nil {
		return fmt.Errorf("host-local data: %w", err)
	}
	for _, d := range des {
		if a, err := netip.ParseAddr(d.Name()); err == nil {
			return fmt.Errorf("host-local still reserves %s after every DEL", a)
		}
	}
	return nil
}

// TestCNIAddDel runs one ADD (until pingable) and DEL per plugin through
// the benchmark's set-up, so that CI notices when the benchmark breaks.
func TestCNIAddDel(t *testing.T) {
	e := setup(t, false)
	ctx := t.Context()
	for _, pl := range []*plugin{e.wren, e.ptp} {
		t.Run(pl.name, func(t *testing.T) {
			p := e.newPod(t, pl, 0)
			e.cleanupPods(t, []*pod{p})
			at, err := e.add(ctx, p, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.checkAdded(ctx, p); err != nil {
				t.Fatal(err)
			}
			took, err := e.del(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.checkDeleted(ctx, p); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s; ADD returned in %s ms, pingable after %s ms; DEL %s ms", pl.name, p.ip,
				ms(at.returned), ms(at.pingable), ms(took))
		})
	}
	if err := e.checkEmpty(ctx); err != nil {
		t.Error(err)
	}
}

// BenchmarkCNI adds 200 pods per plugin, interleaved (wren, ptp, then
// ptp, wren, ...), then deletes them the same way, and reports the
// percentiles of ADD → pingable and DEL. It asserts correctness (address
// recorded, pingable, released), never speed.
//
// It runs twice: with the agent's API client unthrottled (agentqps=1000,
// as the other end-to-end tests run it), and with the client-side limit
// the shipped wren-agent has (cluster.ClientQPS, burst
// cluster.ClientBurst).
func BenchmarkCNI(b *testing.B) {
	b.Run("agentqps=1000", func(b *testing.B) { benchCNI(b, false) })
	b.Run(fmt.Sprintf("agentqps=%d", wcluster.ClientQPS), func(b *testing.B) { benchCNI(b, true) })
}

func benchCNI(b *testing.B, shippedQPS bool) {
	e := setup(b, shippedQPS)
	ctx := context.Background()
	pairs := make([][2]*pod, benchPods)
	var all []*pod
	for i := range pairs {
		pairs[i] = [2]*pod{e.newPod(b, e.wren, i), e.newPod(b, e.ptp, i)}
		all = append(all, pairs[i][:]...)
	}
	e.cleanupPods(b, all)
	base := e.execBaseline(b)

	st := map[string]*stats{}
	get := func(k string) *stats {
		if st[k] == nil {
			st[k] = &stats{}
		}
		return st[k]
	}
	var wb wrenBreakdown
	retried := map[string]int{}
	var retryLog []string
	for b.Loop() {
		e.tr.reset()
		for i, pr := range pairs {
			order := pr
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, p := range order {
				n := e.tr.count(kindAdd)
				at, err := e.add(ctx, p, addRetries)
				if err != nil {
					b.Fatal(err)
				}
				for _, err := range at.retried {
					retried[p.pl.name]++
					retryLog = append(retryLog, strings.ReplaceAll(err.(*cniError).msg, "\n", " | "))
				}
				if err := e.checkAdded(ctx, p); err != nil {
					b.Fatal(err)
				}
				get(p.pl.name + "/add").add(at.pingable)
				get(p.pl.name + "/add-returned").add(at.returned)
				if p.pl == e.wren && len(at.retried) == 0 {
					wb.addCall(e.tr, n, at)
				}
			}
		}
		for i, pr := range pairs {
			order := pr
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, p := range order {
				n := e.tr.count(kindDel)
				took, err := e.del(ctx, p)
				if err != nil {
					b.Fatal(err)
				}
				if err := e.checkDeleted(ctx, p); err != nil {
					b.Fatal(err)
				}
				get(p.pl.name + "/del").add(took)
				if p.pl == e.wren {
					wb.delCall(e.tr, n, took)
				}
			}
		}
		if err := e.checkEmpty(ctx); err != nil {
			b.Fatal(err)
		}
		wb.syncs(e.tr)
	}

	b.ReportMetric(0, "ns/op")
	for _, pl := range []string{"wren", "ptp"} {
		for _, op := range []string{"add", "del"} {
			s := get(pl + "/" + op)
			for _, q := range []struct {
				name string
				v    time.Duration
			}{{"p50", s.pct(50)}, {"p90", s.pct(90)}, {"p99", s.pct(99)}, {"max", s.max()}} {
				b.ReportMetric(float64(q.v)/1e6, fmt.Sprintf("%s-%s-%s-ms", pl, op, q.name))
			}
		}
	}
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%d pods per plugin x %d round(s), interleaved (ms):\n", benchPods, b.N)
	fmt.Fprintf(&tbl, "%-34s %8s %8s %8s %8s %8s %8s\n", "", "n", "p50", "p90", "p99", "max", "mean")
	row := func(label string, s *stats) {
		fmt.Fprintf(&tbl, "%-34s %8d %8s %8s %8s %8s %8s\n", label, s.n(), ms(s.pct(50)), ms(s.pct(90)), ms(s.pct(99)), ms(s.max()), ms(s.mean()))
	}
	row("wren ADD -> pingable", get("wren/add"))
	row("ptp  ADD -> pingable", get("ptp/add"))
	row("wren DEL", get("wren/del"))
	row("ptp  DEL", get("ptp/del"))
	row("wren ADD (plugin returned)", get("wren/add-returned"))
	row("ptp  ADD (plugin returned)", get("ptp/add-returned"))
	row("wren exec only (CNI VERSION)", base["wren"])
	row("ptp  exec only (CNI VERSION)", base["ptp"])
	for _, pl := range []string{"wren", "ptp"} {
		b.ReportMetric(float64(retried[pl]), pl+"-add-retries")
		fmt.Fprintf(&tbl, "%s ADDs that failed with code 11 and were retried at once (counted in the latency): %d\n", pl, retried[pl])
	}
	// Printed, not logged: the testing package cuts a benchmark's log
	// to a few lines unless -v is given.
	fmt.Printf("%s: CNI ADD/DEL latency, %s\n%s%s", b.Name(), e.about, tbl.String(), wb.String())
	for _, m := range retryLog {
		fmt.Printf("retried after code 11: %s\n", m)
	}
}

// execBaseline times CNI VERSION calls, which do no work: what starting
// the plugin inside the node namespace costs.
func (e *env) execBaseline(tb testing.TB) map[string]*stats {
	tb.Helper()
	out := map[string]*stats{"wren": {}, "ptp": {}}
	for range baselineExecs {
		for _, pl := range []*plugin{e.wren, e.ptp} {
			p := &pod{pl: pl, name: "version", ns: e.node, containerID: "version"}
			start := time.Now()
			if _, err := e.exec(context.Background(), p, "VERSION"); err != nil {
				tb.Fatal(err)
			}
			out[pl.name].add(time.Since(start))
		}
	}
	return out
}

// versionRuns is the number of CNI VERSION executions per binary in
// BenchmarkCNIVersion.
const versionRuns = 200

// BenchmarkCNIVersion times what starting a plugin costs, before it can
// send one request: CNI VERSION, which reads the configuration's
// cniVersion from stdin and prints the supported versions. Each binary is
// executed directly, as containerd executes plugins (no "ip netns exec",
// which BenchmarkCNI's exec-only rows include), versionRuns times,
// interleaved with the others in rotating order. It prints the wall time
// from exec to exit and, less sensitive to what else the machine runs,
// the child's CPU time (user + system) and minor page faults from its
// rusage. No root, agent or API server needed:
//
//	go test ./test/bench -run '^$' -bench CNIVersion -benchtime 1x
//
// WREN_CNI_COMPARE="name=/path/to/binary,..." adds other builds to the
// rotation, e.g. wren-cni of an earlier revision built the same way
// (CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w").
func BenchmarkCNIVersion(b *testing.B) {
	refVer := requireReference(b)
	type binary struct {
		name, path string
		size       int64
		wall, cpu  stats
		faults     []int64
	}
	bins := []*binary{{name: "wren-cni", path: buildWrenCNI(b)}, {name: "ptp", path: filepath.Join(refDir, "ptp")}}
	if v := os.Getenv("WREN_CNI_COMPARE"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			name, path, ok := strings.Cut(kv, "=")
			if !ok || name == "" || path == "" {
				b.Fatalf("WREN_CNI_COMPARE: %q is not name=path", kv)
			}
			bins = append(bins, &binary{name: name, path: path})
		}
	}
	for _, bn := range bins {
		fi, err := os.Stat(bn.path)
		if err != nil {
			b.Fatal(err)
		}
		bn.size = fi.Size()
	}
	conf := []byte(`{"cniVersion":"1.0.0","name":"bench","type":"version"}`)
	run := func(bn *binary) {
		cmd := exec.Command(bn.path)
		cmd.Env = []string{"CNI_COMMAND=VERSION", "CNI_PATH=" + filepath.Dir(bn.path), "PATH=" + os.Getenv("PATH")}
		cmd.Stdin = bytes.NewReader(conf)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil || !bytes.Contains(stdout.Bytes(), []byte(`"supportedVersions"`)) {
			b.Fatalf("%s VERSION: %v: stdout %s stderr %s", bn.name, err, stdout.Bytes(), stderr.Bytes())
		}
		ps := cmd.ProcessState
		bn.wall.add(took)
		bn.cpu.add(ps.UserTime() + ps.SystemTime())
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			bn.faults = append(bn.faults, ru.Minflt)
		}
	}
	load := loadAvg()
	for b.Loop() {
		for i := range versionRuns {
			for j := range bins {
				run(bins[(i+j)%len(bins)])
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%d runs per binary x %d round(s), interleaved; wall = exec to exit, cpu = user+sys of the child (ms):\n", versionRuns, b.N)
	fmt.Fprintf(&tbl, "%-16s %9s %8s %8s %8s %8s %8s %8s %8s %9s\n", "", "size MiB", "p50", "p90", "p99", "max", "mean", "cpu p50", "cpu p99", "minflt p50")
	for _, bn := range bins {
		slices.Sort(bn.faults)
		var flt int64
		if len(bn.faults) > 0 {
			flt = bn.faults[len(bn.faults)/2]
		}
		fmt.Fprintf(&tbl, "%-16s %9.1f %8s %8s %8s %8s %8s %8s %8s %9d\n", bn.name, float64(bn.size)/(1<<20),
			ms(bn.wall.pct(50)), ms(bn.wall.pct(90)), ms(bn.wall.pct(99)), ms(bn.wall.max()), ms(bn.wall.mean()),
			ms(bn.cpu.pct(50)), ms(bn.cpu.pct(99)), flt)
		for _, q := range []struct {
			name string
			v    time.Duration
		}{{"p50", bn.wall.pct(50)}, {"p99", bn.wall.pct(99)}, {"cpu-p50", bn.cpu.pct(50)}} {
			b.ReportMetric(float64(q.v)/1e6, fmt.Sprintf("%s-%s-ms", bn.name, q.name))
		}
	}
	fmt.Printf("%s: CNI VERSION start-to-exit, %s; %d CPUs, kernel %s, %s, load %s at the start, %s at the end; ptp from %s %s\n%s",
		b.Name(), time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), kernelRelease(), runtime.Version(),
		load, loadAvg(), refPackage, refVer, tbl.String())
}

// stats is a set of latency samples.
type stats struct{ d []time.Duration }

func (s *stats) add(d time.Duration) { s.d = append(s.d, d) }
func (s *stats) n() int              { return len(s.d) }

// pct is the nearest-rank percentile: the smallest sample with at least
// q% of the samples at or below it (p99 of 200 is the 198th).
func (s *stats) pct(q int) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	i := (q*len(d)+99)/100 - 1
	return d[max(i, 0)]
}

func (s *stats) max() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	return slices.Max(s.d)
}

func (s *stats) mean() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range s.d {
		t += d
	}
	return t / time.Duration(len(s.d))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e6) }
