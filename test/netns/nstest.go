//go:build linux

// Package nstest creates throwaway network namespaces for the privileged
// test tier: nodes, pods, a bridge "underlay" and routers, wired only to
// each other with veth pairs. Nothing is ever linked to the root namespace,
// and every namespace is deleted in t.Cleanup, by the name this package
// gave it.
//
// Test addresses: nodes use 198.18.0.0/15 (RFC 2544 benchmark range), pods
// use 10.244.0.0/16, and both exist only inside these namespaces.
//
// The helpers never move the calling goroutine's thread into another
// namespace: they hand out *netlink.Handle values bound to each namespace
// (netlink.NewHandleAt) and run commands through "ip netns exec".
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace this package creates, so a
// leak is recognisable (and removable by "make clean-netns").
const Prefix = "wrent-"

// RequireRoot skips the test unless it runs as root, which the privileged
// tier needs for network namespaces. CI runs as root, so there it runs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run the privileged tier as root)")
	}
}

// NS is one network namespace made by this package.
type NS struct {
	Name   string          // name under /run/netns
	Handle netns.NsHandle  // open fd of the namespace
	NL     *netlink.Handle // netlink handle bound to the namespace

	deleted bool
}

// New creates a namespace named Prefix+<random>+"-"+role, brings its
// loopback up and deletes it when the test ends.
func New(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := Prefix + hex.EncodeToString(b[:]) + "-" + role
	if len(name) > 64 {
		name = name[:64]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	t.Cleanup(func() { ns.destroy(t) })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns.Handle = h
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.NL = nl
	ns.LinkUp(t, "lo")
	return ns
}

// Delete removes the namespace now (for tests of a namespace vanishing);
// the cleanup then has nothing left to do.
func (n *NS) Delete(t testing.TB) {
	t.Helper()
	n.destroy(t)
	n.deleted = true
}

func (n *NS) destroy(t testing.TB) {
	if n.deleted {
		return
	}
	if n.NL != nil {
		n.NL.Close()
	}
	if n.Handle.IsOpen() {
		n.Handle.Close()
	}
	// Processes a test starts inside (ping loops) are its own to stop, by
	// PID; deleting the name leaves nothing else behind.
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Ping sends count pings to dst from inside the namespace and reports
// whether every one was answered. Pings never leave the test namespaces:
// dst must be a test address.
func (n *NS) Ping(dst netip.Addr, count int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count+5)*time.Second)
	defer cancel()
	_, err := n.Run(ctx, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", "-n", "-q", dst.String())
	return err
}

// Link returns the named link in the namespace or fails the test.
func (n *NS) Link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", n.Name, name, err)
	}
	return l
}

// LinkUp sets the named link up.
func (n *NS) LinkUp(t testing.TB, name string) {
	t.Helper()
	if err := n.NL.LinkSetUp(n.Link(t, name)); err != nil {
		t.Fatalf("%s: set %s up: %v", n.Name, name, err)
	}
}

// AddAddr adds an address in CIDR form ("198.18.0.11/24") to a link.
func (n *NS) AddAddr(t testing.TB, link string, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.NL.AddrAdd(n.Link(t, link), a); err != nil {
		t.Fatalf("%s: add %s to %s: %v", n.Name, cidr, link, err)
	}
}

// AddRoute adds a plain route ("10.0.0.0/8 via 198.18.0.1") through the ip
// command inside the namespace; used to build routers and foreign routes.
func (n *NS) AddRoute(t testing.TB, args ...string) {
	t.Helper()
	n.MustRun(t, "ip", append([]string{"route", "add"}, args...)...)
}

// Sysctl writes a sysctl inside the namespace.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.MustRun(t, "sysctl", "-q", "-w", key+"="+value)
}

// ReadSysctl reads a sysctl inside the namespace.
func (n *NS) ReadSysctl(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(n.MustRun(t, "sysctl", "-n", key))
}

// Veth connects a and b with a veth pair aName <-> bName, created directly
// inside a with its peer inside b, and sets both ends up with the given MTU
// (0 keeps the default).
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string, mtu int) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = aName
	la.MTU = mtu
	v := &netlink.Veth{LinkAttrs: la, PeerName: bName, PeerNamespace: netlink.NsFd(int(b.Handle))}
	if err := a.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s <-> %s/%s: %v", a.Name, aName, b.Name, bName, err)
	}
	a.LinkUp(t, aName)
	b.LinkUp(t, bName)
}

// Switch is a namespace holding a Linux bridge that plays an L2 segment.
type Switch struct {
	*NS
	Bridge string
	ports  int
}

// NewSwitch creates a namespace with a bridge "br0" in it.
func NewSwitch(t testing.TB, role string) *Switch {
	t.Helper()
	ns := New(t, role)
	la := netlink.NewLinkAttrs()
	la.Name = "br0"
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatalf("%s: add bridge: %v", ns.Name, err)
	}
	ns.LinkUp(t, "br0")
	return &Switch{NS: ns, Bridge: "br0"}
}

// Attach plugs node into the switch: a veth named ifName inside node with
// the address cidr, its peer enslaved to the bridge.
func (s *Switch) Attach(t testing.TB, node *NS, ifName, cidr string, mtu int) {
	t.Helper()
	s.ports++
	port := fmt.Sprintf("p%d", s.ports)
	Veth(t, s.NS, port, node, ifName, mtu)
	br := s.Link(t, s.Bridge)
	if err := s.NL.LinkSetMaster(s.Link(t, port), br); err != nil {
		t.Fatalf("%s: enslave %s: %v", s.Name, port, err)
	}
	if cidr != "" {
		node.AddAddr(t, ifName, cidr)
	}
}

// Poll calls cond every 20 ms until it returns nil or the deadline passes,
// then fails the test with cond's last error. It is how tests wait: for a
// state, never for a fixed time.
func Poll(t testing.TB, deadline time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return PollEvery(t, 20*time.Millisecond, deadline, what, cond)
}

// PollEvery is Poll with another period, for conditions that cost a
// request to the API server or a command.
func PollEvery(t testing.TB, period, deadline time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > deadline {
			t.Fatalf("%s: not within %s: %v", what, deadline, err)
		}
		time.Sleep(period)
	}
}

// MustMAC parses a MAC address or panics; for test tables.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
