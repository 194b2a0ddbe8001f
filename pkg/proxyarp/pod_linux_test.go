package proxyarp

// Privileged tier: real veths in namespaces made by test/netns (nstest),
// none of them linked to the root namespace. Every netlink call goes
// through a handle bound to a test namespace and every sysctl through an FS
// carrying the node namespace's handle.
//
// Test addresses: the node has 198.18.0.11/24 on an "eth0" into a switch
// namespace, with a default route via 198.18.0.1 (which nobody owns);
// pods are 10.244.1.5 and 10.244.1.6.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wren-net/wren/internal/nsexec"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/sysctl"
	nstest "github.com/wren-net/wren/test/netns"
)

const podIf = "eth0"

// newNodeNS makes a node namespace that looks like a node: an uplink eth0
// into a switch namespace, with an address and a default route. The
// default route matters: the kernel answers proxy ARP for 169.254.1.1 on a
// cali link only if it has a route to 169.254.1.1 through another
// interface. Nobody on the switch owns 198.18.0.1, and the tests send
// nothing that would take the default route.
func newNodeNS(t *testing.T) *nstest.NS {
	t.Helper()
	sw := nstest.NewSwitch(t, "sw")
	node := nstest.New(t, "node")
	sw.Attach(t, node, "eth0", "198.18.0.11/24", 1500)
	node.AddRoute(t, "default", "via", "198.18.0.1", "dev", "eth0")
	return node
}

// addBridge adds a (port-less) bridge: the non-veth link of these tests,
// as this kernel has no dummy driver.
func addBridge(t *testing.T, ns *nstest.NS, name string) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatalf("%s: add bridge %s: %v", ns.Name, name, err)
	}
}

func nodeFS(node *nstest.NS) sysctl.FS { return sysctl.FS{NS: node.Handle} }

func setup(t *testing.T, node, pod *nstest.NS, w model.Workload) {
	t.Helper()
	if err := SetupPodWith(context.Background(), node.NL, nodeFS(node), pod.Handle, w, podIf); err != nil {
		t.Fatalf("SetupPod %s: %v", w.Key(), err)
	}
}

// hasLink reports whether the namespace holds a link with the name.
func hasLink(t *testing.T, ns *nstest.NS, name string) bool {
	t.Helper()
	_, err := ns.NL.LinkByName(name)
	if err != nil && !isNotFound(err) {
		t.Fatalf("%s: look up %s: %v", ns.Name, name, err)
	}
	return err == nil
}

// checkHostSide asserts the node end of w's veth: a veth, MAC
// ee:ee:ee:ee:ee:ee, the pod MTU, admin and oper up, no IPv4 address, and
// the five sysctls read back inside the node namespace.
func checkHostSide(t *testing.T, node *nstest.NS, w model.Workload) {
	t.Helper()
	l := node.Link(t, w.HostIface)
	a := l.Attrs()
	if l.Type() != "veth" {
		t.Errorf("%s: type %s, want veth", w.HostIface, l.Type())
	}
	if a.HardwareAddr.String() != HostMAC {
		t.Errorf("%s: MAC %s, want %s", w.HostIface, a.HardwareAddr, HostMAC)
	}
	if a.MTU != w.MTU {
		t.Errorf("%s: MTU %d, want %d", w.HostIface, a.MTU, w.MTU)
	}
	if a.Flags&net.FlagUp == 0 {
		t.Errorf("%s: admin down", w.HostIface)
	}
	nstest.Poll(t, 3*time.Second, w.HostIface+" oper up", func() error {
		if st := node.Link(t, w.HostIface).Attrs().OperState; st != netlink.OperUp {
			return fmt.Errorf("oper state %s", st)
		}
		return nil
	})
	addrs, err := node.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Errorf("%s: IPv4 addresses %v, want none", w.HostIface, addrs)
	}
	want := map[string]string{
		"net.ipv4.conf." + w.HostIface + ".proxy_arp":      "1",
		"net.ipv4.conf." + w.HostIface + ".forwarding":     "1",
		"net.ipv4.conf." + w.HostIface + ".route_localnet": "1",
		"net.ipv4.neigh." + w.HostIface + ".proxy_delay":   "0",
		"net.ipv6.conf." + w.HostIface + ".accept_ra":      "0",
	}
	for key, v := range want {
		if got := node.ReadSysctl(t, key); got != v {
			t.Errorf("node %s = %s, want %s", key, got, v)
		}
	}
}

// podRoutes renders the pod's IPv4 main-table routes through eth0.
func podRoutes(t *testing.T, pod *nstest.NS) []string {
	t.Helper()
	l := pod.Link(t, podIf)
	rs, err := pod.NL.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		dst := "default"
		if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && strings.HasSuffix(r.Dst.String(), "/0")) {
			dst = r.Dst.String()
		}
		s := fmt.Sprintf("%s dev %s scope %s type %d", dst, podIf, r.Scope, r.Type)
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// checkPodSide asserts the pod end: eth0 with exactly w.IP/32, up, the
// pod MTU, a link route to 169.254.1.1, a default route via it, and no
// static (permanent) neighbour entry for 169.254.1.1.
func checkPodSide(t *testing.T, pod *nstest.NS, w model.Workload) {
	t.Helper()
	l := pod.Link(t, podIf)
	if l.Type() != "veth" {
		t.Errorf("pod %s: type %s, want veth", podIf, l.Type())
	}
	if l.Attrs().MTU != w.MTU {
		t.Errorf("pod %s: MTU %d, want %d", podIf, l.Attrs().MTU, w.MTU)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("pod %s: down", podIf)
	}
	addrs, err := pod.NL.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if diff := cmp.Diff([]string{w.IP.String() + "/32"}, got); diff != "" {
		t.Errorf("pod %s addresses (-want +got):\n%s", podIf, diff)
	}
	wantRoutes := []string{
		"169.254.1.1/32 dev eth0 scope link type 1",
		"default dev eth0 scope universe type 1 via 169.254.1.1",
	}
	if diff := cmp.Diff(wantRoutes, podRoutes(t, pod)); diff != "" {
		t.Errorf("pod routes (-want +got):\n%s", diff)
	}
	neighs, err := pod.NL.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(net.ParseIP(Gateway)) && n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			t.Errorf("pod has a static neighbour for %s: %+v", Gateway, n)
		}
	}
}

func testWorkload(name, ip string) model.Workload {
	return model.Workload{
		Namespace: "default", Name: name, ContainerID: "ctr-" + name,
		HostIface: VethName("default", name), IP: netip.MustParseAddr(ip), MTU: 1450,
	}
}

// TestSetupPodTwoPodsSameNode sets up two pods on one node, checks both
// ends of both veths, then proves proxy ARP end to end: pod A pings pod B
// through the node (with the per-pod /32 routes pkg/routes would add and
// ip_forward on), and A's neighbour entry for 169.254.1.1 was learnt by
// ARP as ee:ee:ee:ee:ee:ee.
func TestSetupPodTwoPodsSameNode(t *testing.T) {
	node := newNodeNS(t)
	podA, podB := nstest.New(t, "podA"), nstest.New(t, "podB")
	wA, wB := testWorkload("web-1", "10.244.1.5"), testWorkload("web-2", "10.244.1.6")

	setup(t, node, podA, wA)
	setup(t, node, podB, wB)
	checkHostSide(t, node, wA)
	checkHostSide(t, node, wB)
	checkPodSide(t, podA, wA)
	checkPodSide(t, podB, wB)

	node.AddRoute(t, wA.IP.String()+"/32", "dev", wA.HostIface, "scope", "link")
	node.AddRoute(t, wB.IP.String()+"/32", "dev", wB.HostIface, "scope", "link")
	if err := EnableForwarding(nodeFS(node)); err != nil {
		t.Fatal(err)
	}
	if got := node.ReadSysctl(t, "net.ipv4.ip_forward"); got != "1" {
		t.Fatalf("node net.ipv4.ip_forward = %s, want 1", got)
	}

	if err := podA.Ping(wB.IP, 3); err != nil {
		t.Fatalf("pod A -> pod B: %v", err)
	}
	if err := podB.Ping(wA.IP, 1); err != nil {
		t.Fatalf("pod B -> pod A: %v", err)
	}
	for _, p := range []*nstest.NS{podA, podB} {
		neighs, err := p.NL.NeighList(p.Link(t, podIf).Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, n := range neighs {
			if !n.IP.Equal(net.ParseIP(Gateway)) {
				continue
			}
			found = true
			if n.HardwareAddr.String() != HostMAC {
				t.Errorf("%s: %s resolved to %s, want %s", p.Name, Gateway, n.HardwareAddr, HostMAC)
			}
			if n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP|netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
				t.Errorf("%s: neighbour %s in state %#x, want one learnt by ARP", p.Name, Gateway, n.State)
			}
		}
		if !found {
			t.Errorf("%s: no neighbour entry for %s after ping: %+v", p.Name, Gateway, neighs)
		}
	}
}

// TestApplyRepairsHostSide breaks a set-up host end in every way the
// reconciler owns (down, MTU, MAC, each sysctl) and checks that one Apply
// restores all of it.
func TestApplyRepairsHostSide(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")
	setup(t, node, pod, w)

	l := node.Link(t, w.HostIface)
	if err := node.NL.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := node.NL.LinkSetMTU(l, 1500); err != nil {
		t.Fatal(err)
	}
	if err := node.NL.LinkSetHardwareAddr(l, nstest.MustMAC("02:00:00:00:00:01")); err != nil {
		t.Fatal(err)
	}
	node.Sysctl(t, "net.ipv4.conf."+w.HostIface+".proxy_arp", "0")
	node.Sysctl(t, "net.ipv4.conf."+w.HostIface+".forwarding", "0")
	node.Sysctl(t, "net.ipv4.conf."+w.HostIface+".route_localnet", "0")
	node.Sysctl(t, "net.ipv4.neigh."+w.HostIface+".proxy_delay", "80")
	node.Sysctl(t, "net.ipv6.conf."+w.HostIface+".accept_ra", "1")
	if node.Link(t, w.HostIface).Attrs().Flags&net.FlagUp != 0 {
		t.Fatal("link still up after LinkSetDown")
	}

	r := New(Config{Sysctl: nodeFS(node), Logger: slog.New(slog.DiscardHandler)}, node.NL)
	r.Set([]model.Workload{w})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkHostSide(t, node, w)
	checkPodSide(t, pod, w)
}

// TestSetupPodIdempotent runs SetupPod twice (the CNI may repeat an ADD)
// and checks that the second call succeeds and changes nothing: same
// links (same ifindexes, so not re-created), addresses and routes.
func TestSetupPodIdempotent(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")

	snapshot := func() string {
		h, p := node.Link(t, w.HostIface).Attrs(), pod.Link(t, podIf).Attrs()
		addrs, err := pod.NL.AddrList(pod.Link(t, podIf), netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("host %d %s %s mtu %d %s peer %d\npod %d %s mtu %d %s peer %d\naddrs %v\nroutes %v\n",
			h.Index, h.Name, h.HardwareAddr, h.MTU, h.Flags, h.ParentIndex,
			p.Index, p.HardwareAddr, p.MTU, p.Flags, p.ParentIndex, addrs, podRoutes(t, pod))
	}
	setup(t, node, pod, w)
	first := snapshot()
	setup(t, node, pod, w)
	if diff := cmp.Diff(first, snapshot()); diff != "" {
		t.Errorf("second SetupPod changed the state (-first +second):\n%s", diff)
	}
	checkHostSide(t, node, w)
	checkPodSide(t, pod, w)
}

// TestSetupPodBadNamespace hands SetupPod pod namespace handles that are
// no longer (or never were) a network namespace and checks for an error
// naming the pod, with no host link left behind.
func TestSetupPodBadNamespace(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")

	open := func(t *testing.T) netns.NsHandle {
		h, err := netns.GetFromName(pod.Name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	openFile := func(t *testing.T, path string) netns.NsHandle {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return netns.NsHandle(f.Fd())
	}

	for _, tc := range []struct {
		name    string
		ns      func(t *testing.T) netns.NsHandle
		wantErr string
	}{
		{"closed handle", func(t *testing.T) netns.NsHandle {
			h := open(t)
			h.Close() // sets it to -1
			return h
		}, "network namespace handle -1 is closed"},
		{"netns.None", func(*testing.T) netns.NsHandle { return netns.None() }, "is closed"},
		{"stale descriptor", func(t *testing.T) netns.NsHandle {
			h := open(t)
			stale := netns.NsHandle(int(h)) // the number, kept after Close
			h.Close()
			return stale // nothing opens a file before SetupPod runs
		}, "is not open"},
		{"not a namespace", func(t *testing.T) netns.NsHandle { return openFile(t, os.DevNull) }, "is not a namespace"},
		{"mount namespace", func(t *testing.T) netns.NsHandle { return openFile(t, "/proc/self/ns/mnt") }, "not a network namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := SetupPodWith(context.Background(), node.NL, nodeFS(node), tc.ns(t), w, podIf)
			if err == nil {
				t.Fatal("SetupPod succeeded")
			}
			if prefix := "pod default/web-1 (" + w.HostIface + "): "; !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q: want prefix %q and %q", err, prefix, tc.wantErr)
			}
			if hasLink(t, node, w.HostIface) {
				t.Fatalf("host link %s left behind", w.HostIface)
			}
		})
	}
	if hasLink(t, pod, podIf) {
		t.Fatalf("pod got an %s although every setup failed", podIf)
	}
}

// TestSetupPodRollback makes setup fail after the veth pair exists (the
// host sysctls cannot be written) and checks that both ends are gone
// again, so a retried ADD starts clean.
func TestSetupPodRollback(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")

	// Still the node namespace, but a /proc/sys root with nothing in it.
	empty := sysctl.FS{Root: t.TempDir(), NS: node.Handle}
	err := SetupPodWith(context.Background(), node.NL, empty, pod.Handle, w, podIf)
	if err == nil {
		t.Fatal("SetupPod succeeded without sysctls")
	}
	for _, want := range []string{"pod default/web-1 (" + w.HostIface + "): ", "sysctl net/ipv4/conf/" + w.HostIface + "/proxy_arp"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if hasLink(t, node, w.HostIface) {
		t.Errorf("half-made host link %s left behind", w.HostIface)
	}
	if hasLink(t, pod, podIf) {
		t.Errorf("half-made pod %s left behind", podIf)
	}
	// A retry with a working sysctl tree succeeds from scratch.
	setup(t, node, pod, w)
	checkHostSide(t, node, w)
	checkPodSide(t, pod, w)
}

// TestSetupPodForeignLinks checks that SetupPod refuses to adopt links it
// did not make: a non-veth with the cali name, a cali veth whose peer is in
// another namespace, and an eth0 already in the pod. Each is an error
// naming the pod and the link, and nothing is changed or left behind.
func TestSetupPodForeignLinks(t *testing.T) {
	w := testWorkload("web-1", "10.244.1.5")
	prefix := "pod default/web-1 (" + w.HostIface + "): "

	t.Run("bridge with the cali name", func(t *testing.T) {
		node, pod := newNodeNS(t), nstest.New(t, "pod")
		addBridge(t, node, w.HostIface)
		err := SetupPodWith(context.Background(), node.NL, nodeFS(node), pod.Handle, w, podIf)
		want := prefix + "link " + w.HostIface + " already exists and is not this pod's veth: it is a bridge, not a veth"
		if err == nil || err.Error() != want {
			t.Fatalf("SetupPod = %v, want %q", err, want)
		}
		if l := node.Link(t, w.HostIface); l.Type() != "bridge" || l.Attrs().HardwareAddr.String() == HostMAC {
			t.Errorf("foreign bridge was modified: %s %s", l.Type(), l.Attrs().HardwareAddr)
		}
		if hasLink(t, pod, podIf) {
			t.Errorf("pod got an %s", podIf)
		}
	})

	t.Run("cali veth with its peer elsewhere", func(t *testing.T) {
		node, pod, other := newNodeNS(t), nstest.New(t, "pod"), nstest.New(t, "other")
		nstest.Veth(t, node, w.HostIface, other, podIf, 1500)
		err := SetupPodWith(context.Background(), node.NL, nodeFS(node), pod.Handle, w, podIf)
		if err == nil || !strings.HasPrefix(err.Error(), prefix+"link "+w.HostIface+" already exists and is not this pod's veth: its peer is not eth0 in the pod netns") {
			t.Fatalf("SetupPod = %v", err)
		}
		if l := node.Link(t, w.HostIface); l.Attrs().MTU != 1500 || l.Attrs().HardwareAddr.String() == HostMAC {
			t.Errorf("foreign veth was modified: mtu %d %s", l.Attrs().MTU, l.Attrs().HardwareAddr)
		}
		if !hasLink(t, other, podIf) || hasLink(t, pod, podIf) {
			t.Errorf("peer moved or pod got an %s", podIf)
		}
	})

	t.Run("cali veth whose peer has the same ifindex in another namespace", func(t *testing.T) {
		// Interface indexes are per namespace: build a pod whose eth0
		// has exactly the indexes of the real pair (eth0 = the cali
		// link's peer index, eth0's peer = the cali link's index), so
		// that only the peer's namespace id tells them apart.
		node, pod, other := newNodeNS(t), nstest.New(t, "pod"), nstest.New(t, "other")
		nstest.Veth(t, node, w.HostIface, other, podIf, 1500)
		la := netlink.NewLinkAttrs()
		la.Name = "x"
		if err := pod.NL.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: podIf}); err != nil {
			t.Fatal(err)
		}
		host, podEth := node.Link(t, w.HostIface).Attrs(), pod.Link(t, podIf).Attrs()
		if host.ParentIndex != podEth.Index || podEth.ParentIndex != host.Index {
			t.Fatalf("test setup: indexes do not line up (host %d peer %d, pod eth0 %d peer %d)",
				host.Index, host.ParentIndex, podEth.Index, podEth.ParentIndex)
		}
		err := SetupPodWith(context.Background(), node.NL, nodeFS(node), pod.Handle, w, podIf)
		if err == nil || !strings.HasPrefix(err.Error(), prefix+"link "+w.HostIface+" already exists and is not this pod's veth: its peer is in netnsid ") {
			t.Fatalf("SetupPod = %v", err)
		}
		if l := node.Link(t, w.HostIface); l.Attrs().HardwareAddr.String() == HostMAC {
			t.Errorf("foreign veth was modified")
		}
	})

	t.Run("eth0 already in the pod", func(t *testing.T) {
		node, pod := newNodeNS(t), nstest.New(t, "pod")
		addBridge(t, pod, podIf)
		err := SetupPodWith(context.Background(), node.NL, nodeFS(node), pod.Handle, w, podIf)
		want := prefix + "interface eth0 already exists in the pod netns (a bridge)"
		if err == nil || err.Error() != want {
			t.Fatalf("SetupPod = %v, want %q", err, want)
		}
		if hasLink(t, node, w.HostIface) {
			t.Errorf("host link %s left behind", w.HostIface)
		}
		if pod.Link(t, podIf).Type() != "bridge" {
			t.Errorf("pod's own eth0 was replaced")
		}
	})
}

// TestApplySweepsOrphans sets up two pods, then tells the reconciler only
// one is wanted: the other's veth (both ends) goes, a cali-named bridge is
// reported but kept, a veth not named cali* is not touched, and a desired
// pod without a link is reported by name.
func TestApplySweepsOrphans(t *testing.T) {
	node := newNodeNS(t)
	podA, podB, other := nstest.New(t, "podA"), nstest.New(t, "podB"), nstest.New(t, "other")
	wA, wB := testWorkload("web-1", "10.244.1.5"), testWorkload("web-2", "10.244.1.6")
	wMissing := testWorkload("web-3", "10.244.1.7")
	setup(t, node, podA, wA)
	setup(t, node, podB, wB)
	addBridge(t, node, "calinotaveth")
	nstest.Veth(t, node, "veth-keep", other, "eth0", 1500)

	r := New(Config{Sysctl: nodeFS(node), Logger: slog.New(slog.DiscardHandler)}, node.NL)
	r.Set([]model.Workload{wA, wMissing})
	err := r.Apply(context.Background())
	if err == nil {
		t.Fatal("Apply succeeded, want errors for the missing link and the bridge")
	}
	wantErr := strings.Join([]string{
		"pod default/web-3 (" + wMissing.HostIface + "): link " + wMissing.HostIface + " is missing (the CNI plugin creates it on ADD)",
		"link calinotaveth: named like a pod veth but is a bridge; not deleting it",
	}, "\n")
	if diff := cmp.Diff(wantErr, err.Error()); diff != "" {
		t.Errorf("Apply error (-want +got):\n%s", diff)
	}
	if hasLink(t, node, wB.HostIface) {
		t.Errorf("orphan %s not deleted", wB.HostIface)
	}
	if hasLink(t, podB, podIf) {
		t.Errorf("orphan's pod end %s not deleted with it", podIf)
	}
	if !hasLink(t, node, "calinotaveth") || !hasLink(t, node, "veth-keep") || !hasLink(t, node, "eth0") {
		t.Errorf("a link that is not an orphan cali veth was deleted")
	}
	checkHostSide(t, node, wA)
	checkPodSide(t, podA, wA)
}

// TestTeardownPod deletes a pod's veth (both ends go), repeats the delete
// (success: nothing to do), and refuses to delete a non-veth with the name.
func TestTeardownPod(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")
	setup(t, node, pod, w)

	for i := range 2 {
		if err := TeardownPod(node.NL, w); err != nil {
			t.Fatalf("TeardownPod #%d: %v", i+1, err)
		}
		if hasLink(t, node, w.HostIface) || hasLink(t, pod, podIf) {
			t.Fatalf("TeardownPod #%d left a link behind", i+1)
		}
	}

	addBridge(t, node, w.HostIface)
	err := TeardownPod(node.NL, w)
	if want := "pod default/web-1 (" + w.HostIface + "): link " + w.HostIface + " is a bridge, not a veth; not deleting it"; err == nil || err.Error() != want {
		t.Fatalf("TeardownPod on a bridge = %v, want %q", err, want)
	}
	if !hasLink(t, node, w.HostIface) {
		t.Fatal("TeardownPod deleted a bridge")
	}

	bad := w
	bad.HostIface = "eth0"
	if err := TeardownPod(node.NL, bad); err == nil {
		t.Fatal("TeardownPod accepted a non-cali interface")
	}
	if !hasLink(t, node, "eth0") {
		t.Fatal("TeardownPod deleted eth0")
	}
}

// TestSetupPodFromNodeNamespace runs plain SetupPod the way the CNI plugin
// does: from inside the node's namespace, so the caller's /proc/sys is the
// node's. nsexec.Do runs it on an OS thread that joins the node namespace
// and is moved back (or destroyed) afterwards; the test goroutine itself
// never changes namespace.
func TestSetupPodFromNodeNamespace(t *testing.T) {
	node := newNodeNS(t)
	pod := nstest.New(t, "pod")
	w := testWorkload("web-1", "10.244.1.5")

	err := nsexec.Do(node.Handle, func() error {
		return SetupPod(context.Background(), node.NL, pod.Handle, w, podIf)
	})
	if err != nil {
		t.Fatalf("SetupPod: %v", err)
	}
	checkHostSide(t, node, w)
	checkPodSide(t, pod, w)
}

// TestProxyARPNeedsRouteToGateway documents a precondition of the design,
// not a choice of this package: the kernel answers proxy ARP for
// 169.254.1.1 only when the node has a route to it leaving through another
// interface (arp_fwd_proxy: the route's device must differ from the
// asking one). A node without a default route is silent, and pods cannot
// reach anything; one default route later, the same pods work.
func TestProxyARPNeedsRouteToGateway(t *testing.T) {
	sw := nstest.NewSwitch(t, "sw")
	node := nstest.New(t, "node")
	sw.Attach(t, node, "eth0", "198.18.0.11/24", 1500)
	podA, podB := nstest.New(t, "podA"), nstest.New(t, "podB")
	wA, wB := testWorkload("web-1", "10.244.1.5"), testWorkload("web-2", "10.244.1.6")
	setup(t, node, podA, wA)
	setup(t, node, podB, wB)
	node.AddRoute(t, wA.IP.String()+"/32", "dev", wA.HostIface, "scope", "link")
	node.AddRoute(t, wB.IP.String()+"/32", "dev", wB.HostIface, "scope", "link")
	if err := EnableForwarding(nodeFS(node)); err != nil {
		t.Fatal(err)
	}

	if err := podA.Ping(wB.IP, 1); err == nil {
		t.Fatal("pod A reached pod B although the node has no route to 169.254.1.1")
	}
	node.AddRoute(t, "default", "via", "198.18.0.1", "dev", "eth0")
	// The failed neighbour entry is retried by the next packets.
	nstest.Poll(t, 10*time.Second, "pod A -> pod B after adding a default route", func() error {
		return podA.Ping(wB.IP, 1)
	})
}
