package nat

// Fast tier: the reconciler over a fake nftables that holds one table as
// text, driven through a table of states in order, then in random order.
// No root. Addresses: pools in 10.244.0.0/16 and 10.245.0.0/16.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/model"
)

// fakeKernel is table ip wren as text and a log of the calls that wrote.
type fakeKernel struct {
	exists   bool
	layout   string
	elems    map[string][]Range
	calls    []string
	readErr  error
	writeErr error
}

func (k *fakeKernel) Read() (Contents, bool, error) {
	if k.readErr != nil {
		return Contents{}, false, k.readErr
	}
	if !k.exists {
		return Contents{}, false, nil
	}
	return Contents{Layout: k.layout, Elements: maps.Clone(k.elems)}, true, nil
}

func (k *fakeKernel) Create(elems map[string][]Range, replace bool) error {
	if k.writeErr != nil {
		return k.writeErr
	}
	if k.exists && !replace {
		return fmt.Errorf("create: %w", syscall.EEXIST)
	}
	k.calls = append(k.calls, map[bool]string{false: "create", true: "recreate"}[replace])
	k.exists, k.layout, k.elems = true, Layout, map[string][]Range{}
	for n, rs := range elems {
		k.elems[n] = slices.Clone(rs)
	}
	return nil
}

func (k *fakeKernel) SetElements(elems map[string][]Range) error {
	if k.writeErr != nil {
		return k.writeErr
	}
	for _, n := range slices.Sorted(maps.Keys(elems)) {
		k.calls = append(k.calls, "elements "+n)
		k.elems[n] = slices.Clone(elems[n])
	}
	return nil
}

func (k *fakeKernel) Delete() error {
	if k.writeErr != nil {
		return k.writeErr
	}
	k.calls = append(k.calls, "delete")
	k.exists = false
	return nil
}

func (k *fakeKernel) String() string {
	if !k.exists {
		return "no table\n"
	}
	return Contents{Layout: k.layout, Elements: k.elems}.String()
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func newFake(t *testing.T) (*fakeKernel, *Reconciler) {
	t.Helper()
	k := &fakeKernel{}
	r, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, r
}

// wantTable renders what Wren writes for the given set contents.
func wantTable(all, masq string) string {
	return Layout + "elements all-pools {" + all + "}\nelements nat-pools {" + masq + "}\n"
}

type state struct {
	name  string
	nat   model.NAT
	edit  func(k *fakeKernel) // a hand edit before Apply
	want  string              // the table after Apply
	calls string              // the writes Apply made, in order
}

var states = []state{{
	name: "no pool has natOutgoing: no table",
	nat:  model.NAT{Pools: pfx("10.244.0.0/20")},
	want: "no table\n",
}, {
	name:  "a natOutgoing pool: the table is created",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20"), Pools: pfx("10.244.0.0/20", "10.244.16.0/20", "10.245.0.0/16")},
	want:  wantTable("10.244.0.0/19, 10.245.0.0/16", "10.244.0.0/20"),
	calls: "create",
}, {
	name: "the same again: nothing is written",
	nat:  model.NAT{Masquerade: pfx("10.244.0.0/20"), Pools: pfx("10.244.0.0/20", "10.244.16.0/20", "10.245.0.0/16")},
	want: wantTable("10.244.0.0/19, 10.245.0.0/16", "10.244.0.0/20"),
}, {
	name:  "a second natOutgoing pool: both sets updated, the rest kept",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.244.16.0/20", "10.246.0.0/24")},
	want:  wantTable("10.244.0.0/19, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "elements all-pools, elements nat-pools",
}, {
	name:  "a pool without natOutgoing removed: only all-pools changes",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	want:  wantTable("10.244.0.0/20, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "elements all-pools",
}, {
	name:  "flushed by hand (rules gone): recreated",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	edit:  func(k *fakeKernel) { k.layout = strings.Join(strings.SplitAfter(Layout, "\n")[:3], "") },
	want:  wantTable("10.244.0.0/20, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "recreate",
}, {
	name:  "deleted by hand: created",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	edit:  func(k *fakeKernel) { k.exists = false },
	want:  wantTable("10.244.0.0/20, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "create",
}, {
	name:  "an element added by hand: the set is put back",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	edit:  func(k *fakeKernel) { k.elems[SetNATPools] = Ranges(pfx("10.244.0.0/20", "10.246.0.0/24", "0.0.0.0/0")) },
	want:  wantTable("10.244.0.0/20, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "elements nat-pools",
}, {
	name:  "a rule added by hand: recreated",
	nat:   model.NAT{Masquerade: pfx("10.244.0.0/20", "10.246.0.0/24"), Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	edit:  func(k *fakeKernel) { k.layout += "rule postrouting accept\n" },
	want:  wantTable("10.244.0.0/20, 10.246.0.0/24", "10.244.0.0/20, 10.246.0.0/24"),
	calls: "recreate",
}, {
	name:  "natOutgoing turned off: the table is deleted",
	nat:   model.NAT{Pools: pfx("10.244.0.0/20", "10.246.0.0/24")},
	want:  "no table\n",
	calls: "delete",
}}

// TestStates walks the states in order: the table and the writes that
// got it there.
func TestStates(t *testing.T) {
	k, r := newFake(t)
	for _, st := range states {
		if st.edit != nil {
			st.edit(k)
		}
		k.calls = nil
		r.Set(st.nat)
		if err := r.Apply(context.Background()); err != nil {
			t.Fatalf("%s: Apply: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, k.String()); diff != "" {
			t.Errorf("%s: table (-want +got)\n%s", st.name, diff)
		}
		if got := strings.Join(k.calls, ", "); got != st.calls {
			t.Errorf("%s: writes %q; want %q", st.name, got, st.calls)
		}
	}
}

// TestStatesRandom: from whatever state the last one left (hand edits
// included), one Apply reaches the wanted table.
func TestStatesRandom(t *testing.T) {
	k, r := newFake(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		st := states[rng.IntN(len(states))]
		if st.edit != nil && k.exists {
			st.edit(k)
		}
		r.Set(st.nat)
		if err := r.Apply(context.Background()); err != nil {
			t.Fatalf("%s: Apply: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, k.String()); diff != "" {
			t.Fatalf("%s: table (-want +got)\n%s", st.name, diff)
		}
	}
}

// TestKernelErrors: a kernel without nftables fails only when a pool
// needs NAT, and then says what is missing.
func TestKernelErrors(t *testing.T) {
	k, r := newFake(t)
	ctx := context.Background()
	k.readErr = fmt.Errorf("open nftables netlink socket: %w", syscall.EPROTONOSUPPORT)
	if err := r.Apply(ctx); err != nil {
		t.Errorf("no nftables, no natOutgoing pool: %v; want nil", err)
	}
	r.Set(model.NAT{Masquerade: pfx("10.244.0.0/20"), Pools: pfx("10.244.0.0/20")})
	err := r.Apply(ctx)
	if err == nil || !strings.Contains(err.Error(), "nf_tables") || !errors.Is(err, syscall.EPROTONOSUPPORT) {
		t.Errorf("no nftables, a natOutgoing pool: %v; want an error naming nf_tables", err)
	}
	k.readErr = nil
	k.writeErr = fmt.Errorf("conn.Receive: %w", syscall.ENOENT) // the nat chain type or masq is not loadable
	err = r.Apply(ctx)
	for _, want := range []string{"create nftables table ip wren", "nft_chain_nat", "nft_masq", "CONFIG_NFT_MASQ"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no NAT in nftables: %v; want it to name %q", err, want)
		}
	}
	t.Logf("the error: %v", err)
}

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []netip.Prefix
		want string
	}{
		{nil, "{}"},
		{pfx("10.244.0.0/20", "10.244.16.0/20"), "{10.244.0.0/19}"},
		{pfx("10.244.16.0/20", "10.244.0.0/20", "10.244.32.0/20"), "{10.244.0.0-10.244.47.255}"},
		{pfx("10.244.0.0/16", "10.244.3.0/24"), "{10.244.0.0/16}"},
		{pfx("10.244.0.1/16", "10.246.0.0/16"), "{10.244.0.0/16, 10.246.0.0/16}"},
		{pfx("255.255.255.0/24", "255.255.254.0/24"), "{255.255.254.0/23}"},
		{pfx("0.0.0.0/0", "10.0.0.0/8"), "{0.0.0.0/0}"},
	} {
		if got := rangesString(Ranges(tc.in)); got != tc.want {
			t.Errorf("Ranges(%v) = %s; want %s", tc.in, got, tc.want)
		}
	}
}
