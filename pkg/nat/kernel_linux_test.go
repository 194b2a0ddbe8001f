package nat

// Privileged tier: the real nftables of a network namespace this test
// creates (nothing in the root namespace), written through NFTKernel and
// broken by hand with the nft CLI.
//
// Addresses: pools 10.244.0.0/20 (natOutgoing), 10.244.16.0/20 and
// 10.245.0.0/16; only set elements, no traffic.

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/wren-net/wren/pkg/model"
	nstest "github.com/wren-net/wren/test/netns"
)

func requireNFT(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft CLI (Debian nftables; make deps installs it) to break the table by hand")
	}
}

var (
	natPool   = netip.MustParsePrefix("10.244.0.0/20")
	plainPool = netip.MustParsePrefix("10.244.16.0/20")
	otherPool = netip.MustParsePrefix("10.245.0.0/16")
)

func testNAT() model.NAT {
	return model.NAT{Masquerade: []netip.Prefix{natPool}, Pools: []netip.Prefix{natPool, plainPool, otherPool}}
}

func newPrivReconciler(t testing.TB) (*nstest.NS, *NFTKernel, *Reconciler) {
	t.Helper()
	nstest.RequireRoot(t)
	ns := nstest.New(t, "nat")
	k := NewKernel(ns.Handle)
	t.Cleanup(k.Close)
	r, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, k)
	if err != nil {
		t.Fatal(err)
	}
	return ns, k, r
}

// nftList is `nft list table ip wren` in ns, without the counter's values.
func nftList(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	out, err := ns.Run(context.Background(), "nft", "list", "table", "ip", Table)
	if err != nil {
		return "absent: " + err.Error()
	}
	return counterValues.ReplaceAllString(out, "counter")
}

// TestKernelRoundTrip: what Create writes, Read reads back as Layout with
// the same elements, and nft lists the table of the package comment.
func TestKernelRoundTrip(t *testing.T) {
	requireNFT(t)
	ns, k, r := newPrivReconciler(t)
	if _, ok, err := k.Read(); err != nil || ok {
		t.Fatalf("Read of a fresh namespace: exists %v, err %v; want absent", ok, err)
	}
	r.Set(testNAT())
	if err := r.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, ok, err := k.Read()
	if err != nil || !ok {
		t.Fatalf("Read: exists %v, err %v", ok, err)
	}
	want := Contents{Layout: Layout, Elements: map[string][]Range{
		SetNATPools: Ranges([]netip.Prefix{natPool}),
		SetAllPools: Ranges([]netip.Prefix{natPool, plainPool, otherPool}),
	}}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		t.Errorf("Read after Apply (-want +got)\n%s", diff)
	}
	const listed = `table ip wren {
	set all-pools {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/19, 10.245.0.0/16 }
	}

	set nat-pools {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/20 }
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr @nat-pools ip daddr != @all-pools counter masquerade fully-random
	}
}
`
	if diff := cmp.Diff(listed, nftList(t, ns)); diff != "" {
		t.Errorf("nft list table ip wren (-want +got)\n%s", diff)
	}
	t.Logf("nft list table ip wren:\n%s", nftList(t, ns))
}

// TestKernelRepairs: each hand edit is found by Read and undone by one
// Apply, which leaves exactly the table it wrote; a pool change is a set
// update that keeps the rule (same handle); no natOutgoing pool deletes
// the table; a foreign table is never touched.
func TestKernelRepairs(t *testing.T) {
	requireNFT(t)
	ns, k, r := newPrivReconciler(t)
	ctx := context.Background()
	ns.MustRun(t, "nft", "add table inet foreign; add chain inet foreign c { type filter hook output priority 0; policy accept; }; add rule inet foreign c counter")
	foreign := ns.MustRun(t, "nft", "list", "table", "inet", "foreign")
	r.Set(testNAT())
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	good := nftList(t, ns)
	for _, edit := range []struct{ name, nft string }{
		{"flush table", "flush table ip wren"},
		{"delete table", "delete table ip wren"},
		{"flush a set", "flush set ip wren nat-pools"},
		{"add an element", "add element ip wren all-pools { 192.168.0.0/16 }"},
		{"add a rule", "add rule ip wren postrouting ip saddr 10.1.0.0/16 masquerade"},
		{"insert an accept", "insert rule ip wren postrouting accept"},
		{"change the policy", "add chain ip wren postrouting { type nat hook postrouting priority srcnat; policy drop; }"},
		{"add a chain", "add chain ip wren extra"},
		{"add a set", "add set ip wren extra { type ipv4_addr; }"},
		{"dormant table", "add table ip wren { flags dormant; }"},
	} {
		ns.MustRun(t, "nft", edit.nft)
		if got := nftList(t, ns); got == good {
			t.Fatalf("%s: the edit changed nothing nft lists", edit.name)
		}
		cur, _, err := k.Read()
		if err != nil {
			t.Fatalf("%s: Read: %v", edit.name, err)
		}
		if cur.Layout == Layout && cur.String() == (Contents{Layout: Layout, Elements: map[string][]Range{SetNATPools: Ranges(testNAT().Masquerade), SetAllPools: Ranges(testNAT().Pools)}}).String() {
			t.Errorf("%s: Read does not see the edit: %+v", edit.name, cur)
		}
		if err := r.Apply(ctx); err != nil {
			t.Fatalf("%s: Apply: %v", edit.name, err)
		}
		if diff := cmp.Diff(good, nftList(t, ns)); diff != "" {
			t.Errorf("%s: not repaired by one Apply (-want +got)\n%s", edit.name, diff)
		}
	}

	// A pool change: the sets change, the rule stays (same handle).
	handle := ruleHandle(t, ns)
	n := testNAT()
	n.Pools = append(n.Pools, netip.MustParsePrefix("10.250.0.0/16"))
	n.Masquerade = append(n.Masquerade, netip.MustParsePrefix("10.250.0.0/16"))
	r.Set(n)
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	got := nftList(t, ns)
	if !strings.Contains(got, "elements = { 10.244.0.0/19, 10.245.0.0/16,\n\t\t\t     10.250.0.0/16 }") && !strings.Contains(got, "10.250.0.0/16") {
		t.Errorf("after adding pool 10.250.0.0/16:\n%s", got)
	}
	if h := ruleHandle(t, ns); h != handle {
		t.Errorf("a pool change replaced the rule (handle %s, was %s); want a set update", h, handle)
	}
	cur, _, _ := k.Read()
	if want := Ranges(n.Masquerade); rangesString(cur.Elements[SetNATPools]) != rangesString(want) {
		t.Errorf("nat-pools = %v; want %v", cur.Elements[SetNATPools], want)
	}

	r.Set(model.NAT{Pools: n.Pools})
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := k.Read(); ok || err != nil {
		t.Errorf("no natOutgoing pool: table exists %v (err %v); want deleted", ok, err)
	}
	if err := r.Apply(ctx); err != nil {
		t.Errorf("Apply without a table and without NAT: %v", err)
	}
	if got := ns.MustRun(t, "nft", "list", "table", "inet", "foreign"); got != foreign {
		t.Errorf("the foreign table changed:\n%s\nwas\n%s", got, foreign)
	}
}

// ruleHandle is the handle of the rule in chain postrouting.
func ruleHandle(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	out := ns.MustRun(t, "nft", "-a", "list", "chain", "ip", Table, Chain)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "masquerade") {
			if i := strings.Index(l, "# handle "); i >= 0 {
				return strings.TrimSpace(l[i+len("# handle "):])
			}
		}
	}
	t.Fatalf("no masquerade rule with a handle in:\n%s", out)
	return ""
}

// counterValues matches the counter's values in nft's listing.
var counterValues = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// TestElementRanges: interval set elements as the kernel dumps them (in
// any order, nft's leading end element at 0.0.0.0, adjacent ranges with
// no end between them, an open last range) read back as merged ranges,
// and what setElements writes reads back as what it was given.
func TestElementRanges(t *testing.T) {
	el := func(a string, end bool) nftables.SetElement {
		k := netip.MustParseAddr(a).As4()
		return nftables.SetElement{Key: k[:], IntervalEnd: end}
	}
	for _, tc := range []struct {
		name string
		els  []nftables.SetElement
		want string
	}{
		{"empty", nil, "{}"},
		{"nft's form", []nftables.SetElement{el("10.244.16.0", true), el("10.244.0.0", false), el("0.0.0.0", true)}, "{10.244.0.0/20}"},
		{"adjacent starts", []nftables.SetElement{el("10.244.0.0", false), el("10.244.16.0", false), el("10.244.32.0", true)}, "{10.244.0.0/19}"},
		{"two ranges", []nftables.SetElement{el("10.246.0.0", false), el("10.247.0.0", true), el("10.244.0.0", false), el("10.245.0.0", true)}, "{10.244.0.0/16, 10.246.0.0/16}"},
		{"open last range", []nftables.SetElement{el("255.255.255.0", false)}, "{255.255.255.0/24}"},
		{"end at a start's key", []nftables.SetElement{el("10.0.0.0", false), el("10.1.0.0", true), el("10.1.0.0", false), el("10.2.0.0", true)}, "{10.0.0.0/15}"},
	} {
		if got := rangesString(elementRanges(tc.els)); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, got, tc.want)
		}
	}
	for _, ps := range [][]netip.Prefix{pfx("10.244.0.0/20", "10.245.0.0/16"), pfx("0.0.0.0/0"), pfx("255.255.255.255/32", "10.0.0.0/8")} {
		rs := Ranges(ps)
		if got := elementRanges(setElements(rs)); rangesString(got) != rangesString(rs) {
			t.Errorf("round trip of %v: %v", rs, got)
		}
	}
}
