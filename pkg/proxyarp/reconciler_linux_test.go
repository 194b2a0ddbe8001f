package proxyarp

// Fake-kernel tier: the Reconciler against fakeNL and a sysctl tree under
// t.TempDir(). No root, no namespaces. Test addresses: pods 10.244.1.0/26.

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/sysctl"
)

func workload(ns, name, ip string, mtu int) model.Workload {
	return model.Workload{
		Namespace: ns, Name: name, ContainerID: "ctr-" + name,
		HostIface: VethName(ns, name), IP: netip.MustParseAddr(ip), MTU: mtu,
	}
}

var (
	podA     = workload("default", "web-1", "10.244.1.5", 1450)
	podA1430 = workload("default", "web-1", "10.244.1.5", 1430)
	podB     = workload("default", "web-2", "10.244.1.6", 1450)
	podC     = workload("kube-system", "dns-0", "10.244.1.7", 1450) // its link has no IPv6 sysctls
)

// names expands {A} {B} {C} in golden text to the pods' veth names.
var names = strings.NewReplacer("{A}", podA.HostIface, "{B}", podB.HostIface, "{C}", podC.HostIface)

// foreign is the part of every golden state the reconciler must not touch.
const foreign = `
eth0 device 52:54:00:12:34:56 mtu 1500 up proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
veth-dbg veth 02:00:00:00:0d:bb mtu 1500 down proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
vxlan.calico vxlan 66:11:22:33:44:55 mtu 1450 up proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
`

// newNode is a fake node with an uplink, a VXLAN device and somebody
// else's veth: none of them is named cali*, so none may change.
func newNode(t *testing.T) (*fakeNL, *Reconciler) {
	f := newFakeNL(t)
	f.add("eth0", "device", "52:54:00:12:34:56", 1500, true, withSysctls)
	f.add("vxlan.calico", "vxlan", "66:11:22:33:44:55", 1450, true, withSysctls)
	f.add("veth-dbg", "veth", "02:00:00:00:0d:bb", 1500, false, withSysctls)
	r := New(Config{Sysctl: sysctl.FS{Root: f.root}, Logger: slog.New(slog.DiscardHandler)}, f)
	return f, r
}

// cniAdd plays the CNI plugin: it creates the host end of each workload
// that has none, in the state a crashed or older ADD would leave it (kernel
// MAC, default MTU, down, default sysctls), so Apply has to repair it.
func cniAdd(f *fakeNL, ws []model.Workload) {
	for _, w := range ws {
		if _, ok := f.links[w.HostIface]; ok {
			continue
		}
		tree := withSysctls
		if w.HostIface == podC.HostIface {
			tree = ipv4Only
		}
		f.add(w.HostIface, "veth", "02:00:00:00:00:01", 1500, false, tree)
	}
}

func sortedLines(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// TestReconcilerStates walks the reconciler through desired pod sets, in
// order and then in random orders, and compares the whole fake node with
// golden text after each Apply: repaired host ends, swept orphans, foreign
// links untouched, and a second Apply writing nothing.
func TestReconcilerStates(t *testing.T) {
	states := []struct {
		name string
		ws   []model.Workload
		want string // pod lines; foreign is added
	}{
		{name: "no pods", want: ``},
		{name: "one pod", ws: []model.Workload{podA}, want: `
{A} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
`},
		{name: "two pods", ws: []model.Workload{podB, podA}, want: `
{A} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{B} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
`},
		{name: "pod MTU lowered", ws: []model.Workload{podA1430, podB}, want: `
{A} veth ee:ee:ee:ee:ee:ee mtu 1430 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{B} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
`},
		// A was deleted while the agent was down: its veth is an orphan.
		// C's node has IPv6 disabled for it: accept_ra is absent, tolerated.
		{name: "pod replaced", ws: []model.Workload{podB, podC}, want: `
{B} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{C} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=-
`},
		{name: "three pods", ws: []model.Workload{podC, podB, podA}, want: `
{A} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{B} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{C} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=-
`},
		{name: "all pods gone", want: ``},
	}

	run := func(t *testing.T, order []int) {
		f, r := newNode(t)
		for _, i := range order {
			st := states[i]
			cniAdd(f, st.ws)
			r.Set(st.ws)
			if err := r.Apply(context.Background()); err != nil {
				t.Fatalf("state %q: Apply: %v", st.name, err)
			}
			want := sortedLines(names.Replace(foreign + st.want))
			if diff := cmp.Diff(want, f.String()); diff != "" {
				t.Fatalf("state %q (order %v): node state (-want +got):\n%s", st.name, order, diff)
			}
			// Level-triggered and converged: a second pass writes nothing.
			before := f.writes
			if err := r.Apply(context.Background()); err != nil {
				t.Fatalf("state %q: second Apply: %v", st.name, err)
			}
			if f.writes != before {
				t.Fatalf("state %q: second Apply made %d netlink writes, want 0", st.name, f.writes-before)
			}
		}
	}

	inOrder := make([]int, len(states))
	for i := range inOrder {
		inOrder[i] = i
	}
	t.Run("in order", func(t *testing.T) { run(t, inOrder) })

	seed := uint64(time.Now().UnixNano())
	t.Logf("random order seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 20 {
		order := rng.Perm(len(states))
		t.Run("random order", func(t *testing.T) { run(t, order) })
	}
}

// TestSetIsPure checks that Set does no I/O and that repeating a Set (even
// reordered) keeps the reconciler's state.
func TestSetIsPure(t *testing.T) {
	f, r := newNode(t)
	r.Set([]model.Workload{podA, podB})
	if f.lists != 0 || f.writes != 0 {
		t.Fatalf("Set did I/O: %d lists, %d writes", f.lists, f.writes)
	}
	desired := r.desired
	r.Set([]model.Workload{podB, podA})
	if f.lists != 0 || f.writes != 0 {
		t.Fatalf("second Set did I/O: %d lists, %d writes", f.lists, f.writes)
	}
	// A no-op keeps the very same map (white box: nothing was rebuilt).
	if len(r.desired) != 2 || reflect.ValueOf(desired).UnsafePointer() != reflect.ValueOf(r.desired).UnsafePointer() {
		t.Fatalf("repeated Set rebuilt the desired state: %v -> %v", desired, r.desired)
	}
	// The caller's slice is not kept: changing it afterwards changes nothing.
	ws := []model.Workload{podA}
	r.Set(ws)
	ws[0] = podB
	if _, ok := r.desired[podA.HostIface]; !ok || len(r.desired) != 1 {
		t.Fatalf("desired state aliases the caller's slice: %v", r.desired)
	}
}

// TestApplyErrors feeds the reconciler one broken thing of each kind and
// checks that each is reported once, naming the pod or link, while
// everything else is still repaired or swept.
func TestApplyErrors(t *testing.T) {
	f, r := newNode(t)

	missing := workload("default", "web-missing", "10.244.1.8", 1450)
	noSysctl := workload("default", "web-nosysctl", "10.244.1.9", 1450)
	badIP := workload("default", "web-badip", "10.244.1.10", 1450)
	badIP.IP = netip.Addr{}
	dupOfB := workload("default", "web-dup", "10.244.1.11", 1450)
	dupOfB.HostIface = podB.HostIface
	squatted := workload("default", "web-squat", "10.244.1.12", 1450)

	cniAdd(f, []model.Workload{podA, podB, badIP})
	f.add(noSysctl.HostIface, "veth", "02:00:00:00:00:09", 1500, false, noSysctls)
	f.add(squatted.HostIface, "dummy", "02:00:00:00:00:0c", 1500, true, withSysctls) // desired name, wrong kind
	f.add("calidummy", "dummy", "02:00:00:00:00:0d", 1500, true, withSysctls)        // not desired, not a veth
	f.add("caliorphan00001", "veth", "02:00:00:00:00:0e", 1500, true, withSysctls)   // swept
	f.add("caliorphan00002", "veth", "02:00:00:00:00:0f", 1500, true, withSysctls)   // sweep fails
	f.fail["mtu "+podA.HostIface] = errors.New("injected mtu failure")
	f.fail["del caliorphan00002"] = errors.New("injected delete failure")

	r.Set([]model.Workload{podA, podB, missing, noSysctl, badIP, dupOfB, squatted})
	err := r.Apply(context.Background())
	if err == nil {
		t.Fatal("Apply succeeded, want errors")
	}
	msg := err.Error()
	t.Logf("Apply error:\n%s", msg)
	for _, want := range []string{
		"pod default/web-1 (" + podA.HostIface + "): set " + podA.HostIface + " mtu 1450: injected mtu failure",
		"pod default/web-missing (" + missing.HostIface + "): link " + missing.HostIface + " is missing",
		"pod default/web-nosysctl (" + noSysctl.HostIface + "): sysctl net/ipv4/conf/" + noSysctl.HostIface + "/proxy_arp:",
		"pod default/web-badip (" + badIP.HostIface + "): IP \"invalid IP\" is not a usable IPv4 address",
		"pod default/web-dup (" + podB.HostIface + "): host interface already belongs to pod default/web-2",
		"pod default/web-squat (" + squatted.HostIface + "): link " + squatted.HostIface + " is a dummy, not a veth",
		"link calidummy: named like a pod veth but is a dummy; not deleting it",
		"delete orphan veth caliorphan00002: injected delete failure",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	// One line per failure, each naming its pod or link: one per broken
	// object, but four for web-nosysctl (each IPv4 key is missing,
	// accept_ra is tolerated).
	lines := strings.Split(msg, "\n")
	if got, want := len(lines), 7+4; got != want {
		t.Errorf("error has %d lines, want %d:\n%s", got, want, msg)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "pod default/") && !strings.HasPrefix(l, "link cali") && !strings.HasPrefix(l, "delete orphan veth cali") {
			t.Errorf("error line names no pod or link: %q", l)
		}
	}

	// A's MTU could not be set, but the rest of A still was; B is fine;
	// the orphan is gone; the invalid workload's link is neither repaired
	// nor swept; everything not ours is untouched.
	want := sortedLines(names.Replace(foreign + `
{A} veth ee:ee:ee:ee:ee:ee mtu 1500 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
{B} veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0
calidummy dummy 02:00:00:00:00:0d mtu 1500 up proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
caliorphan00002 veth 02:00:00:00:00:0f mtu 1500 up proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
` + noSysctl.HostIface + ` veth ee:ee:ee:ee:ee:ee mtu 1450 up proxy_arp=- forwarding=- route_localnet=- proxy_delay=- accept_ra=-
` + badIP.HostIface + ` veth 02:00:00:00:00:01 mtu 1500 down proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
` + squatted.HostIface + ` dummy 02:00:00:00:00:0c mtu 1500 up proxy_arp=0 forwarding=0 route_localnet=0 proxy_delay=80 accept_ra=1
`))
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("node state (-want +got):\n%s", diff)
	}
}

// TestApplyDumpInterrupted checks that interrupted link dumps are retried,
// and reported when they never complete.
func TestApplyDumpInterrupted(t *testing.T) {
	f, r := newNode(t)
	cniAdd(f, []model.Workload{podA})
	r.Set([]model.Workload{podA})

	f.interrupt = dumpAttempts - 1
	if err := r.Apply(context.Background()); err != nil {
		t.Fatalf("Apply after %d interrupted dumps: %v", dumpAttempts-1, err)
	}
	if !strings.Contains(f.String(), podA.HostIface+" veth ee:ee:ee:ee:ee:ee mtu 1450 up") {
		t.Fatalf("pod link not repaired after retried dump:\n%s", f)
	}

	f.interrupt = dumpAttempts
	f.lists = 0
	err := r.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "list links: interrupted") {
		t.Fatalf("Apply with dumps always interrupted = %v, want list links error", err)
	}
	if f.lists != dumpAttempts {
		t.Errorf("LinkList called %d times, want %d", f.lists, dumpAttempts)
	}
}

// TestApplyCanceled checks that a canceled context stops Apply before any
// write and says so.
func TestApplyCanceled(t *testing.T) {
	f, r := newNode(t)
	cniAdd(f, []model.Workload{podA})
	f.add("caliorphan00001", "veth", "02:00:00:00:00:0e", 1500, true, withSysctls)
	r.Set([]model.Workload{podA})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Apply(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply(canceled) = %v, want context.Canceled", err)
	}
	if f.writes != 0 {
		t.Fatalf("Apply(canceled) made %d writes, want 0", f.writes)
	}
}

// TestApplyBeforeSet checks that a reconciler that was never told the
// desired pods refuses to run rather than sweep every pod's veth.
func TestApplyBeforeSet(t *testing.T) {
	f, r := newNode(t)
	cniAdd(f, []model.Workload{podA})
	before := f.String()
	err := r.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "before the first Set") {
		t.Fatalf("Apply before Set = %v, want refusal", err)
	}
	if diff := cmp.Diff(before, f.String()); diff != "" || f.writes != 0 {
		t.Fatalf("Apply before Set changed the node (%d writes):\n%s", f.writes, diff)
	}
	// An explicit empty Set is a real desired state: now the sweep runs.
	r.Set(nil)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.links[podA.HostIface]; ok {
		t.Fatal("Set(nil) + Apply kept an undesired pod veth")
	}
}

// TestSysctlRecheck: sysctls of a link already found right are re-read
// only every SysctlRecheck (each sync would otherwise cost five reads per
// pod), at once for a new link, and a drifted value is repaired by the
// next Apply after the interval.
func TestSysctlRecheck(t *testing.T) {
	f := newFakeNL(t)
	now := time.Unix(1000, 0)
	r := New(Config{Sysctl: sysctl.FS{Root: f.root}, Logger: slog.New(slog.DiscardHandler), SysctlRecheck: time.Minute,
		Now: func() time.Time { return now }}, f)
	cniAdd(f, []model.Workload{podA})
	r.Set([]model.Workload{podA})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(f.root, "net/ipv4/conf", podA.HostIface, "proxy_arp")
	read := func() string {
		b, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read(); got != "1" {
		t.Fatalf("proxy_arp after the first Apply = %s, want 1", got)
	}
	if err := os.WriteFile(key, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "0" {
		t.Fatalf("proxy_arp re-checked before the interval (= %s)", got)
	}
	// A new pod's link is checked at once.
	cniAdd(f, []model.Workload{podB})
	r.Set([]model.Workload{podA, podB})
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "net/ipv4/conf", podB.HostIface, "proxy_arp")); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("new link's proxy_arp = %q, %v; want 1", b, err)
	}
	now = now.Add(31 * time.Second)
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "1" {
		t.Fatalf("proxy_arp not repaired after the interval (= %s)", got)
	}
}
