//go:build linux

package bench

// BGP route feed: N /26 routes from one deterministic feeder into three
// receivers, one after the other in the same run, never two at once:
//
//   - Wren: the wren-agent (the real binary built from ./cmd/agent, inside
//     its node namespace as a hostNetwork DaemonSet pod runs it, with a
//     real kube-apiserver and etcd), a global BGPPeer to the feeder and
//     IPPools covering the feed without encapsulation, so every route
//     becomes "P via 198.18.0.2 dev eth0 proto wren";
//   - BIRD 1.6.8 with Calico's configuration (bgpfeed_bird16_linux_test.go),
//     installing "P via 198.18.0.2 dev eth0 proto bird";
//   - a plain GoBGP v4 server (the test binary re-executed in its
//     namespace), counting its RIB from its best-path watch.
//
// The feeder (bgpfeed_feeder_linux_test.go) is a BGP speaker written for
// the benchmark: it connects to a receiver, establishes the session, and
// once the receivers are idle writes the pre-built UPDATEs (up to 4096
// bytes, 810 /26s each, the same bytes for every receiver) and End-of-RIB
// as fast as TCP allows; "withdraw" is a Cease NOTIFICATION and the end of
// the session, a peer going away. It replaced BIRD 2.0.12, which held its
// last UPDATE back until a 3 s poll timeout unless the receiver sent
// something.
//
// Per size, each receiver is a fresh process; it first gets one
// unmeasured session with one route (warmUp: a starting agent keeps the
// routes of a dropped session through its start-up window), then the
// runs: Wren, BIRD, GoBGP in turn, WREN_FEED_RUNS times. Before each
// session and each withdraw the three processes must be idle (waitQuiet).
//
// Clocks, all on the receiving side (bgpfeed_probe_linux_test.go): T0 =
// the kernel's receive time of the first TCP segment from the feeder
// carrying an UPDATE, on the receiver's eth0 (AF_PACKET); "all" = the
// receiver's kernel holds every fed route (netlink route notifications
// counted in a bitmap; checked afterwards with a dump: every prefix, via
// the feeder on eth0), for GoBGP its best-path watch holds N; "first
// route" = the first of them; "withdraw" = the Cease on the wire → none
// left. Peak RSS is VmHWM of the receiver process after all runs of a
// size. GoBGP's process is the test binary, whose RSS before any route
// (≈58 MiB, printed) is mostly the Kubernetes libraries it links.
//
// Layout, all in wrent-bf-* namespaces on one switch, nothing in the root
// namespace (addresses in 198.18.0.0/15; the feed in feedRanges:
// 10.0.0.0/8 without 10.240.0.0/12, and 100.64.0.0/10):
//
//	feeder 198.18.0.2/24   AS 65001
//	node   198.18.0.11/24  wren-agent, AS 64512 (its default)
//	gobgp  198.18.0.12/24  plain GoBGP v4, AS 64513
//	bird   198.18.0.13/24  BIRD 1.6, AS 64514
//
// Run (root; needs the kube-apiserver cache of hack/kube/build.sh and BIRD
// 1.6 from hack/bench/bird16.sh; the full run, 10k, 100k and 300k routes,
// 5 runs each, takes about 3.5 minutes on an idle 2-CPU VM):
//
//	go test ./test/bench -run '^$' -bench BGPFeed -benchtime 1x -timeout 60m
//
// A quick run: WREN_FEED_SIZES=10000 WREN_FEED_RUNS=1 with the same
// command (about 25 s; up to a minute more for an agent that holds the
// routes of a dropped session through a start-up window, see warmUp).
// WREN_FEED_AGENT=<path> measures a prebuilt agent instead of building
// ./cmd/agent from the working tree: WREN_FEED_AGENT=$(hack/bench/agent-at.sh
// <revision>) measures a committed revision.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

const (
	feedNodeName = "feed-node"
	feederAS     = 65001
	feedNodeAS   = 64512 // the agent's default
	feedRefAS    = 64513
	feedBirdAS   = 64514
	feedHealth   = "127.0.0.1:9099" // inside the node namespace
	// feedDeadline bounds an ingest or a withdraw.
	feedDeadline = 3 * time.Minute
	// feedDialDeadline bounds getting a session: a receiver refuses one for
	// a while after the last (GoBGP: 5 s Idle; BIRD: "error wait time",
	// up to 30 s).
	feedDialDeadline = 90 * time.Second
	// feedNSPrefix names the benchmark's namespaces ("make clean-netns"
	// removes leaks of every wrent-* namespace).
	feedNSPrefix = nstest.Prefix + "bf-"
)

var (
	feederAddr = netip.MustParsePrefix("198.18.0.2/24")
	feedNode   = netip.MustParsePrefix("198.18.0.11/24")
	feedRef    = netip.MustParsePrefix("198.18.0.12/24")
	feedBird   = netip.MustParsePrefix("198.18.0.13/24")
)

// newFeedNS creates a namespace named wrent-bf-<random>-<role> with its
// loopback up and deletes it when the test ends.
func newFeedNS(tb testing.TB, role string) *nstest.NS {
	tb.Helper()
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		tb.Fatal(err)
	}
	name := feedNSPrefix + hex.EncodeToString(r[:]) + "-" + role
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &nstest.NS{Name: name}
	tb.Cleanup(func() {
		if ns.NL != nil {
			ns.NL.Close()
		}
		if ns.Handle.IsOpen() {
			ns.Handle.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	ns.Handle = h
	if ns.NL, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.LinkUp(tb, "lo")
	return ns
}

// feedSwitch is a namespace with a bridge: the segment every namespace
// of the benchmark is plugged into.
type feedSwitch struct {
	ns    *nstest.NS
	ports int
}

func newFeedSwitch(tb testing.TB) *feedSwitch {
	tb.Helper()
	ns := newFeedNS(tb, "sw")
	la := netlink.NewLinkAttrs()
	la.Name = "br0"
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		tb.Fatalf("%s: add bridge: %v", ns.Name, err)
	}
	ns.LinkUp(tb, "br0")
	return &feedSwitch{ns: ns}
}

// attach makes a namespace with eth0 (address cidr) on the switch.
func (s *feedSwitch) attach(tb testing.TB, role string, cidr netip.Prefix) *nstest.NS {
	tb.Helper()
	ns := newFeedNS(tb, role)
	s.ports++
	port := fmt.Sprintf("p%d", s.ports)
	nstest.Veth(tb, s.ns, port, ns, "eth0", 0)
	if err := s.ns.NL.LinkSetMaster(s.ns.Link(tb, port), s.ns.Link(tb, "br0")); err != nil {
		tb.Fatalf("%s: enslave %s: %v", s.ns.Name, port, err)
	}
	ns.AddAddr(tb, "eth0", cidr.String())
	return ns
}

// feedEnv is what every size shares: namespaces, the API server with the
// pools, node and BGPPeer, the agent binary, BIRD 1.6, the feeder.
type feedEnv struct {
	feeder             *feeder
	node, bird, ref    *nstest.NS
	nodeSniff          *bgpSniffer
	birdSniff          *bgpSniffer
	refSniff           *bgpSniffer
	agentBin, agentVer string
	kubeconfig         string
	bird16, birdVer    string
	gobgpVer           string
	about              string
	// debugCheck asks the agent's debug API (Status, over its socket)
	// after an ingest: N received, 0 rejected. Only the smoke test does:
	// GoBGP counts the session's Adj-RIB-In and what it advertises inside
	// its management loop, work the measured runs should not include.
	debugCheck bool
}

// setupFeed builds everything but the receivers. It skips without root,
// BIRD 1.6 or the API server binaries (failing instead when CI is set).
func setupFeed(tb testing.TB) *feedEnv {
	tb.Helper()
	nstest.RequireRoot(tb)
	e := &feedEnv{}
	e.bird16, e.birdVer = requireBird16(tb)
	e.gobgpVer = moduleVersion(tb, "github.com/osrg/gobgp/v4")
	rc := kubetest.Start(tb)
	c, err := wcluster.NewClient(rc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	for i, r := range feedRanges {
		pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("feed-%d", i)},
			Spec: v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(r.String()), BlockSize: 26, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapNever}}
		if err := c.Create(ctx, pool); err != nil {
			tb.Fatal(err)
		}
	}
	nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: feedNodeName}}
	if err := c.Create(ctx, nodeObj); err != nil {
		tb.Fatal(err)
	}
	nodeObj.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: feedNode.Addr().String()}}
	if err := c.Status().Update(ctx, nodeObj); err != nil {
		tb.Fatal(err)
	}
	asn := v1alpha1.ASNumber(feederAS)
	if err := c.Create(ctx, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "feeder"},
		Spec: v1alpha1.BGPPeerSpec{PeerIP: feederAddr.Addr().String(), ASNumber: &asn}}); err != nil {
		tb.Fatal(err)
	}

	sw := newFeedSwitch(tb)
	e.feeder = &feeder{ns: sw.attach(tb, "feeder", feederAddr), addr: feederAddr.Addr(), as: feederAS}
	e.node = sw.attach(tb, "node", feedNode)
	e.ref = sw.attach(tb, "gobgp", feedRef)
	e.bird = sw.attach(tb, "bird16", feedBird)
	// Nothing answers at 198.18.0.1; a real node has a default route, and
	// BIRD's kernel protocol learns it as Calico's does.
	e.node.AddRoute(tb, "default", "via", "198.18.0.1")
	e.bird.AddRoute(tb, "default", "via", "198.18.0.1")
	e.nodeSniff = newBGPSniffer(tb, e.node, "eth0", e.feeder.addr)
	e.birdSniff = newBGPSniffer(tb, e.bird, "eth0", e.feeder.addr)
	e.refSniff = newBGPSniffer(tb, e.ref, "eth0", e.feeder.addr)

	e.agentBin, e.agentVer = feedAgentBinary(tb)
	u, err := url.Parse(rc.Host)
	if err != nil || u.Host == "" {
		tb.Fatalf("envtest host %q: %v", rc.Host, err)
	}
	e.kubeconfig = nstest.WriteKubeconfig(tb, rc, "https://"+nstest.APIProxy(tb, e.node, u.Host))
	e.about = fmt.Sprintf("%s; %d CPUs, kernel %s, %s; agent %s; BIRD %s; GoBGP %s",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), kernelRelease(), runtime.Version(),
		e.agentVer, e.birdVer, e.gobgpVer)
	tb.Log(e.about)
	return e
}

// moduleVersion is the version of a module the main module requires (a
// test binary carries no module list of its own).
func moduleVersion(tb testing.TB, path string) string {
	tb.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", path)
	cmd.Dir = kubetest.RepoRoot(tb)
	out, err := cmd.Output()
	if err != nil {
		return "(unknown version)"
	}
	return strings.TrimSpace(string(out))
}

// feedAgentBinary builds ./cmd/agent (or takes WREN_FEED_AGENT) and says
// which agent it is: its --version and the git revision it was built from,
// with the uncommitted changes that went into it counted.
func feedAgentBinary(tb testing.TB) (bin, about string) {
	tb.Helper()
	root := kubetest.RepoRoot(tb)
	if bin = os.Getenv("WREN_FEED_AGENT"); bin != "" {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			tb.Fatalf("WREN_FEED_AGENT=%s: --version: %v: %s", bin, err, out)
		}
		return bin, fmt.Sprintf("%s (prebuilt, WREN_FEED_AGENT)", strings.TrimSpace(string(out)))
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin = filepath.Join(tb.TempDir(), "wren-agent")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build wren-agent: %v: %s", err, out)
	}
	rev, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return bin, "built from ./cmd/agent (git revision unknown)"
	}
	about = "built from ./cmd/agent at " + strings.TrimSpace(string(rev))
	// The agent is built from the working tree: say if it differs from
	// the revision in what the agent is made of.
	st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--", "cmd", "pkg", "internal", "api", "go.mod", "go.sum").Output()
	if n := len(strings.Fields(strings.TrimSpace(string(st)))) / 2; n > 0 {
		about += fmt.Sprintf(" plus uncommitted changes in %d files", n)
	}
	return bin, about
}

// feedCounter is a receiver's progress: the kernel's routes or GoBGP's RIB.
type feedCounter interface {
	arm() // forget the recorded times
	times() (count int, first, full, empty time.Time, err error)
}

// receiver is one receiver process for one size.
type receiver struct {
	name   string // "Wren", "BIRD 1.6", "GoBGP"
	where  string // "kernel" or "RIB"
	addr   netip.Addr
	as     uint32
	pid    int
	exited <-chan struct{} // closed when the process has ended
	sniff  *bgpSniffer
	count  feedCounter
	// check runs after an ingest, outside the clock; after a withdraw,
	// checkEmpty.
	check, checkEmpty func(tb testing.TB)
}

// startAgent runs a fresh wren-agent inside the node namespace and returns
// once it is ready and has the BGPPeer; the test's cleanup stops it.
func (e *feedEnv) startAgent(tb testing.TB, n int) *receiver {
	tb.Helper()
	dir := tb.TempDir()
	logPath := filepath.Join(dir, "wren-agent.log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sock := filepath.Join(dir, "wren.sock") // the debug API's too
	cmd := exec.Command("ip", "netns", "exec", e.node.Name, e.agentBin, "--node-name", feedNodeName, "--kubeconfig", e.kubeconfig,
		"--node-ip-method", "interface=eth0", "--socket", sock, "--health-addr", feedHealth)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(exited)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		tb.Fatalf("start wren-agent: %v", err)
	}
	tb.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM) // by PID: the agent itself (ip netns exec execs it)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			tb.Logf("wren-agent log:\n%s", b)
		}
	})
	hc := e.node.HTTPClient(time.Second)
	// Ready, or waiting only for its BGP peer: the feeder, which
	// connects for the first session after this (/readyz wants every
	// configured peer up in an agent's first 30 s).
	nstest.Poll(tb, 30*time.Second, "wren-agent /readyz (the feeder's session aside)", func() error {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			tb.Fatalf("wren-agent exited: %s\n%s", cmd.ProcessState, b)
		default:
		}
		resp, err := hc.Get("http://" + feedHealth + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK && !bytes.HasPrefix(b, []byte("BGP: ")) {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	})
	nstest.Poll(tb, 30*time.Second, "the agent has the BGPPeer to the feeder", func() error {
		st, err := nstest.DebugStatus(sock, 10*time.Second)
		if err != nil {
			return err
		}
		if _, ok := nstest.DebugPeer(st, feederAddr.Addr().String()); !ok {
			return fmt.Errorf("peers %v", st.GetPeers())
		}
		return nil
	})
	r := &receiver{name: "Wren", where: "kernel", addr: feedNode.Addr(), as: feedNodeAS, pid: cmd.Process.Pid, exited: exited,
		sniff: e.nodeSniff, count: newRouteMonitor(tb, e.node, rtprotWren, n)}
	r.check = func(tb testing.TB) {
		checkKernel(tb, e.node, rtprotWren, n)
		if !e.debugCheck {
			return
		}
		if st, err := nstest.DebugStatus(sock, 10*time.Second); err != nil {
			tb.Fatalf("agent's debug API: %v", err)
		} else if p, ok := nstest.DebugPeer(st, feederAddr.Addr().String()); !ok || int(p.GetReceived()) != n || p.GetRejected() != 0 {
			tb.Fatalf("agent's session to the feeder: %+v (found %v); want %d received, 0 rejected", p, ok, n)
		}
	}
	r.checkEmpty = func(tb testing.TB) { checkKernelEmpty(tb, e.node, rtprotWren) }
	return r
}

// startBird runs a fresh BIRD 1.6 in its namespace.
func (e *feedEnv) startBird(tb testing.TB, n int) *receiver {
	tb.Helper()
	b := startBird16(tb, e.bird, e.bird16, func(logPath string) string {
		return bird16Conf(feedBird.Addr(), feedBirdAS, feederAddr.Addr(), feederAS, logPath)
	})
	return &receiver{name: "BIRD " + e.birdVer, where: "kernel", addr: feedBird.Addr(), as: feedBirdAS, pid: b.pid, exited: b.done,
		sniff: e.birdSniff, count: newRouteMonitor(tb, e.bird, rtprotBird, n),
		check:      func(tb testing.TB) { checkKernel(tb, e.bird, rtprotBird, n) },
		checkEmpty: func(tb testing.TB) { checkKernelEmpty(tb, e.bird, rtprotBird) }}
}

// startGoBGP runs a fresh plain GoBGP in its namespace.
func (e *feedEnv) startGoBGP(tb testing.TB, n int) *receiver {
	tb.Helper()
	g := startRefSpeaker(tb, e.ref, feedRef.Addr(), feedRefAS, feederAddr.Addr(), feederAS, n)
	check := func(want int) func(tb testing.TB) {
		return func(tb testing.TB) {
			if c, _, _, _, err := g.times(); c != want || err != nil {
				tb.Fatalf("GoBGP holds %d routes (%v), want %d", c, err, want)
			}
		}
	}
	return &receiver{name: "GoBGP " + e.gobgpVer, where: "RIB", addr: feedRef.Addr(), as: feedRefAS, pid: g.pid(), exited: g.exited,
		sniff: e.refSniff, count: g, check: check(n), checkEmpty: check(0)}
}

// checkKernel dumps ns's routes of protocol proto (filtered in the kernel)
// and checks that the first n feed prefixes are there, via the feeder on
// eth0, and nothing else of the feed's.
func checkKernel(tb testing.TB, ns *nstest.NS, proto int, n int) {
	tb.Helper()
	seen := make([]bool, n)
	missing, wrongVia, extra := n, 0, 0
	eth0 := ns.Link(tb, "eth0").Attrs().Index
	gw := feederAddr.Addr()
	err := ns.NL.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: 254},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(rt netlink.Route) bool {
			if rt.Dst == nil {
				return true
			}
			ones, _ := rt.Dst.Mask.Size()
			a, _ := netip.AddrFromSlice(rt.Dst.IP.To4())
			i := -1
			if ones == feedBits {
				i = feedIndex(be32(a))
			}
			if i < 0 || i >= n || seen[i] {
				extra++
				return true
			}
			seen[i] = true
			missing--
			if g, _ := netip.AddrFromSlice(rt.Gw.To4()); g != gw || rt.LinkIndex != eth0 {
				wrongVia++
			}
			return true
		})
	if err != nil {
		tb.Fatalf("route dump in %s: %v", ns.Name, err)
	}
	if missing != 0 || wrongVia != 0 || extra != 0 {
		tb.Fatalf("%s kernel, protocol %d: %d of %d fed prefixes missing, %d not via %s dev eth0, %d other routes",
			ns.Name, proto, missing, n, wrongVia, gw, extra)
	}
}

func checkKernelEmpty(tb testing.TB, ns *nstest.NS, proto int) {
	tb.Helper()
	c := 0
	err := ns.NL.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: 254},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(netlink.Route) bool { c++; return true })
	if err != nil {
		tb.Fatalf("route dump in %s: %v", ns.Name, err)
	}
	if c != 0 {
		tb.Fatalf("after the withdraw %s still has %d routes of protocol %d", ns.Name, c, proto)
	}
}

// phase is one ingest and withdraw by one receiver.
type phase struct {
	all       time.Duration // T0 → every route in (kernel or RIB)
	first     time.Duration // T0 → the first route in
	half, p90 time.Duration // T0 → 50 % and 90 % in (kernel receivers)
	delivered time.Duration // T0 → the last segment from the feeder at the receiver
	withdraw  time.Duration // Cease on the wire → none left
	cpuIn     time.Duration // the receiver's CPU time (user + system) from the feed's send to every route in
	cpuOut    time.Duration // the same from the Cease to none left
	notQuiet  bool          // the receivers were not idle before a phase (see waitQuiet)
}

// wait is waitTime for one of the receiver's times, failing at once if
// the receiver's process has ended.
func (r *receiver) wait(tb testing.TB, what string, pick func(first, full, empty time.Time) time.Time) time.Time {
	tb.Helper()
	return waitTime(tb, r.name+": "+what, func() (time.Time, error) {
		select {
		case <-r.exited:
			return time.Time{}, fmt.Errorf("%s (pid %d) exited", r.name, r.pid)
		default:
		}
		_, first, full, empty, err := r.count.times()
		return pick(first, full, empty), err
	})
}

func pickFirst(first, _, _ time.Time) time.Time { return first }
func pickFull(_, full, _ time.Time) time.Time   { return full }
func pickEmpty(_, _, empty time.Time) time.Time { return empty }

// waitTime polls get every 5 ms (it reads a few fields under a lock)
// until it returns a time.
func waitTime(tb testing.TB, what string, get func() (time.Time, error)) time.Time {
	tb.Helper()
	var t time.Time
	nstest.PollEvery(tb, 5*time.Millisecond, feedDeadline, what, func() error {
		var err error
		t, err = get()
		if err != nil {
			tb.Fatalf("%s: %v", what, err)
		}
		if t.IsZero() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return t
}

// cpuTicks is the CPU time (user + system, in clock ticks of 10 ms) the
// processes have used.
func cpuTicks(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime 14, stime 15.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			sum += u + st
		}
	}
	return sum
}

// waitQuiet polls, every 100 ms, until the receivers together used at
// most one clock tick (10 ms) in each of two consecutive intervals: what
// the last phase left (garbage collection, BIRD's kernel scan, log writes)
// is done. After 30 s it gives up and reports false.
func waitQuiet(pids []int) bool {
	end := time.Now().Add(30 * time.Second)
	prev, calm := cpuTicks(pids), 0
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond) // the poll period
		cur := cpuTicks(pids)
		if cur-prev <= 1 {
			calm++
		} else {
			calm = 0
		}
		prev = cur
		if calm >= 2 {
			return true
		}
	}
	return false
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(tb testing.TB, pid int) uint64 { tb.Helper(); return procStatus(tb, pid, "VmHWM") }

// vmRSS is a process's resident set size in bytes.
func vmRSS(tb testing.TB, pid int) uint64 { tb.Helper(); return procStatus(tb, pid, "VmRSS") }

func procStatus(tb testing.TB, pid int, key string) uint64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("peak RSS of pid %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("%s of pid %d: %q", key, pid, l)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no %s for pid %d", key, pid)
	return 0
}

// warmUp gives a fresh receiver one unmeasured session with one route
// (the feed's first) and End-of-RIB, then the Cease, and waits for the
// route to come and to go. A starting receiver may keep the routes of a
// session that goes down (the agent keeps them through its start-up
// window, up to a minute, until its sessions have settled): the measured
// sessions then meet a receiver past its start-up, as the peers of a
// running node do, and the wait ends as soon as the receiver is there.
func (e *feedEnv) warmUp(tb testing.TB, r *receiver) {
	tb.Helper()
	one, _ := bgpUpdates(feedPrefixes(1), feederAS, feederAddr.Addr())
	s := e.feeder.dial(tb, r.addr, r.as, feedDialDeadline)
	r.count.arm()
	if err := s.send(one); err != nil {
		tb.Fatal(err)
	}
	r.wait(tb, "the warm-up route in", pickFirst)
	if err := s.withdraw(); err != nil {
		tb.Fatal(err)
	}
	sent := time.Now()
	r.wait(tb, "the warm-up route gone", pickEmpty)
	if d := time.Since(sent); d > 100*time.Millisecond {
		tb.Logf("%s kept the warm-up route %s after the Cease (start-up)", r.name, d.Round(time.Millisecond))
	}
	s.closed(tb, 30*time.Second)
}

// ingest feeds one receiver and takes it back: session, feed, every route
// in, Cease, none left.
func (e *feedEnv) ingest(tb testing.TB, r *receiver, feed []byte, pids []int) phase {
	tb.Helper()
	var p phase
	p.notQuiet = !waitQuiet(pids)
	s := e.feeder.dial(tb, r.addr, r.as, feedDialDeadline)
	// The session is new: let the receiver finish what it does on
	// Established before the clock starts.
	p.notQuiet = !waitQuiet(pids) || p.notQuiet
	r.sniff.arm()
	r.count.arm()
	c0 := cpuTicks([]int{r.pid})
	if err := s.send(feed); err != nil {
		tb.Fatal(err)
	}
	full := r.wait(tb, "every fed route in its "+r.where, pickFull)
	p.cpuIn = time.Duration(cpuTicks([]int{r.pid})-c0) * 10 * time.Millisecond
	t0, last, _, err := r.sniff.seen()
	if err != nil || t0.IsZero() {
		tb.Fatalf("%s: no UPDATE seen on its eth0 (%v)", r.name, err)
	}
	_, first, _, _, _ := r.count.times()
	p.all, p.first, p.delivered = full.Sub(t0), first.Sub(t0), last.Sub(t0)
	if m, ok := r.count.(*routeMonitor); ok {
		half, p90 := m.progress()
		p.half, p.p90 = half.Sub(t0), p90.Sub(t0)
	}
	r.check(tb)

	p.notQuiet = !waitQuiet(pids) || p.notQuiet
	r.sniff.arm()
	r.count.arm()
	c0 = cpuTicks([]int{r.pid})
	if err := s.withdraw(); err != nil {
		tb.Fatal(err)
	}
	empty := r.wait(tb, "the fed routes gone from its "+r.where, pickEmpty)
	p.cpuOut = time.Duration(cpuTicks([]int{r.pid})-c0) * 10 * time.Millisecond
	_, _, t1, err := r.sniff.seen()
	if err != nil || t1.IsZero() {
		tb.Fatalf("%s: the Cease was not seen on its eth0 (%v): the withdraw probe is broken", r.name, err)
	}
	p.withdraw = empty.Sub(t1)
	s.closed(tb, 30*time.Second)
	r.checkEmpty(tb)
	return p
}

// sizeResult is one size: per receiver (Wren, BIRD, GoBGP) its phases and
// peak RSS.
type sizeResult struct {
	n      int
	msgs   int // UPDATEs in the feed, End-of-RIB included
	bytes  int
	names  [3]string
	phases [3][]phase
	rss    [3]uint64 // peak (VmHWM) after every run
	start  [3]uint64 // VmRSS of the fresh process, before its first session
}

// runSize starts a fresh receiver of each kind and feeds them in turn,
// runs times, then reads their peak RSS.
func (e *feedEnv) runSize(tb testing.TB, n, runs int) sizeResult {
	tb.Helper()
	feed, msgs := bgpUpdates(feedPrefixes(n), feederAS, feederAddr.Addr())
	rcvs := []*receiver{e.startAgent(tb, n), e.startBird(tb, n), e.startGoBGP(tb, n)}
	pids := []int{rcvs[0].pid, rcvs[1].pid, rcvs[2].pid}
	res := sizeResult{n: n, msgs: msgs, bytes: len(feed)}
	for j, r := range rcvs {
		res.start[j] = vmRSS(tb, r.pid)
		e.warmUp(tb, r)
	}
	for i := range runs {
		for j, r := range rcvs {
			p := e.ingest(tb, r, feed, pids)
			res.phases[j] = append(res.phases[j], p)
			tb.Logf("%d routes, run %d, %s: all in %s %s (first %s, delivered %s), withdraw %s%s", n, i+1, r.name, r.where,
				fms(p.all), fms(p.first), fms(p.delivered), fms(p.withdraw), map[bool]string{true: " (receivers not idle before)"}[p.notQuiet])
		}
	}
	for j, r := range rcvs {
		res.names[j] = r.name
		res.rss[j] = vmHWM(tb, r.pid)
	}
	return res
}

// fms is d in milliseconds, with a decimal below 10 ms.
func fms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", ms64(d))
	}
	return fmt.Sprintf("%.0f ms", ms64(d))
}

func median(ps []phase, f func(phase) time.Duration) time.Duration {
	d := make([]time.Duration, len(ps))
	for i, p := range ps {
		d[i] = f(p)
	}
	slices.Sort(d)
	if len(d) == 0 {
		return 0
	}
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

func kRoutes(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// feedReport is the printed table: medians per receiver, the ratios, the
// targets of issue 9, and every run.
func feedReport(about, load string, runs int, rs []sizeResult) string {
	var b strings.Builder
	if len(rs) == 0 {
		return ""
	}
	names := rs[0].names
	fmt.Fprintf(&b, "BGP route feed, medians of %d runs; %s; load average before %s, after %s\n\n", runs, about, load, loadAvg())
	fmt.Fprintf(&b, "| routes | metric | Wren (kernel) | %s (kernel) | %s (RIB) | Wren/BIRD | Wren/GoBGP |\n|---|---|---|---|---|---|---|\n", names[1], names[2])
	ratio := func(a, c float64) string {
		if c == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/c)
	}
	for _, r := range rs {
		for _, m := range []struct {
			name string
			f    func(phase) time.Duration
		}{
			{"first UPDATE → all routes in", func(p phase) time.Duration { return p.all }},
			{"first UPDATE → first route in", func(p phase) time.Duration { return p.first }},
			{"Cease → none left (withdraw)", func(p phase) time.Duration { return p.withdraw }},
			{"first UPDATE → last segment at the receiver", func(p phase) time.Duration { return p.delivered }},
			{"receiver's CPU time, feed sent → all in", func(p phase) time.Duration { return p.cpuIn }},
			{"receiver's CPU time, Cease → none left", func(p phase) time.Duration { return p.cpuOut }},
		} {
			var v [3]time.Duration
			for j := range v {
				v[j] = median(r.phases[j], m.f)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", kRoutes(r.n), m.name, fms(v[0]), fms(v[1]), fms(v[2]),
				ratio(v[0].Seconds(), v[1].Seconds()), ratio(v[0].Seconds(), v[2].Seconds()))
		}
		mib := func(x uint64) string { return fmt.Sprintf("%.1f MiB", float64(x)/(1<<20)) }
		fmt.Fprintf(&b, "| %s | peak RSS (VmHWM) | %s | %s | %s | %s | %s |\n", kRoutes(r.n), mib(r.rss[0]), mib(r.rss[1]), mib(r.rss[2]),
			ratio(float64(r.rss[0]), float64(r.rss[1])), ratio(float64(r.rss[0]), float64(r.rss[2])))
		fmt.Fprintf(&b, "| %s | RSS of the fresh process, before any route | %s | %s | %s | | |\n", kRoutes(r.n), mib(r.start[0]), mib(r.start[1]), mib(r.start[2]))
		grow := func(j int) uint64 { return r.rss[j] - min(r.rss[j], r.start[j]) }
		fmt.Fprintf(&b, "| %s | peak RSS − RSS before any route | %s | %s | %s | %s | %s |\n", kRoutes(r.n), mib(grow(0)), mib(grow(1)), mib(grow(2)),
			ratio(float64(grow(0)), float64(grow(1))), ratio(float64(grow(0)), float64(grow(2))))
	}

	b.WriteString("\nTargets (issue 9):\n")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	for _, r := range rs {
		all := func(j int) time.Duration { return median(r.phases[j], func(p phase) time.Duration { return p.all }) }
		wd := func(j int) time.Duration {
			return median(r.phases[j], func(p phase) time.Duration { return p.withdraw })
		}
		k := kRoutes(r.n)
		fmt.Fprintf(&b, "- %s: Wren all in kernel %s ≤ BIRD 1.6's %s: %s\n", k, fms(all(0)), fms(all(1)), verdict(all(0) <= all(1)))
		fmt.Fprintf(&b, "- %s: Wren all in kernel %s ≤ 1.1 × GoBGP RIB complete %s = %s: %s\n", k, fms(all(0)), fms(all(2)),
			fms(all(2)*11/10), verdict(all(0) <= all(2)*11/10))
		fmt.Fprintf(&b, "- %s: Wren withdraw %s ≤ BIRD 1.6's %s: %s\n", k, fms(wd(0)), fms(wd(1)), verdict(wd(0) <= wd(1)))
		fmt.Fprintf(&b, "- %s: Wren withdraw %s ≤ 1.1 × GoBGP RIB empty %s = %s: %s\n", k, fms(wd(0)), fms(wd(2)),
			fms(wd(2)*11/10), verdict(wd(0) <= wd(2)*11/10))
		if r.n == 100_000 {
			fmt.Fprintf(&b, "- 100k: Wren peak RSS %.1f MiB ≤ 100 MiB: %s\n", float64(r.rss[0])/(1<<20), verdict(r.rss[0] <= 100<<20))
		}
	}
	if !slices.ContainsFunc(rs, func(r sizeResult) bool { return r.n == 100_000 }) {
		b.WriteString("- Wren peak RSS at 100k ≤ 100 MiB: not measured (100000 not in WREN_FEED_SIZES)\n")
	}

	b.WriteString("\nEvery run (all in / first route / withdraw, ms; Wren's kernel 50 % / 90 %):\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s (%d UPDATEs, %d bytes):\n", kRoutes(r.n), r.msgs, r.bytes)
		for j, name := range r.names {
			var runs []string
			for _, p := range r.phases[j] {
				s := fmt.Sprintf("%.0f/%.0f/%.0f", ms64(p.all), ms64(p.first), ms64(p.withdraw))
				if j == 0 {
					s += fmt.Sprintf(" (%.0f/%.0f)", ms64(p.half), ms64(p.p90))
				}
				if p.notQuiet {
					s += " (not idle before)"
				}
				runs = append(runs, s)
			}
			fmt.Fprintf(&b, "  - %s: %s\n", name, strings.Join(runs, ", "))
		}
	}
	return b.String()
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// feedSizes is WREN_FEED_SIZES ("10000,100000,300000" by default; "10k"
// works too) and feedRuns WREN_FEED_RUNS (5).
func feedSizes(tb testing.TB) []int {
	tb.Helper()
	v := cmp.Or(os.Getenv("WREN_FEED_SIZES"), "10000,100000,300000")
	var ns []int
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		mul := 1
		if t, ok := strings.CutSuffix(s, "k"); ok {
			s, mul = t, 1000
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n*mul > feedMax() {
			tb.Fatalf("WREN_FEED_SIZES=%q: %q is not a number of routes between 1 and %d", v, s, feedMax())
		}
		ns = append(ns, n*mul)
	}
	return ns
}

func feedRuns(tb testing.TB) int {
	tb.Helper()
	v := cmp.Or(os.Getenv("WREN_FEED_RUNS"), "5")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("WREN_FEED_RUNS=%q: want a positive number", v)
	}
	return n
}

// BenchmarkBGPFeed feeds each size of WREN_FEED_SIZES to Wren, BIRD 1.6
// and GoBGP, WREN_FEED_RUNS times each, and prints the table of medians
// (see the file comment). Run it with -benchtime 1x: the runs are
// WREN_FEED_RUNS, not b.N.
func BenchmarkBGPFeed(b *testing.B) {
	sizes, runs := feedSizes(b), feedRuns(b)
	load := loadAvg()
	e := setupFeed(b)
	results := map[int]sizeResult{}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			r := e.runSize(b, n, runs)
			results[n] = r
			b.ReportMetric(0, "ns/op")
			for j, key := range []string{"wren", "bird", "gobgp"} {
				b.ReportMetric(median(r.phases[j], func(p phase) time.Duration { return p.all }).Seconds(), key+"-all-s")
				b.ReportMetric(median(r.phases[j], func(p phase) time.Duration { return p.withdraw }).Seconds(), key+"-withdraw-s")
				b.ReportMetric(float64(r.rss[j])/(1<<20), key+"-rss-MiB")
			}
		})
	}
	var rs []sizeResult
	for _, n := range sizes {
		if r, ok := results[n]; ok {
			rs = append(rs, r)
		}
	}
	fmt.Print(feedReport(e.about, load, runs, rs))
}

// TestBGPFeedSmoke runs one small feed (500 routes, one run) through the
// same set-up, so that a broken benchmark is noticed in the privileged
// tier; it also checks the agent's own count of the session.
func TestBGPFeedSmoke(t *testing.T) {
	e := setupFeed(t)
	e.debugCheck = true
	load := loadAvg()
	r := e.runSize(t, 500, 1)
	t.Log("\n" + feedReport(e.about, load, 1, []sizeResult{r}))
}
