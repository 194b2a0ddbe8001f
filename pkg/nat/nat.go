// Package nat reconciles IPPool natOutgoing: traffic from a pod in a pool
// with natOutgoing to a destination outside every pool leaves the node
// masqueraded to the address of the interface it goes out of (the node's
// address), as Calico does. Nothing else is rewritten: pod-to-pod traffic
// (a destination in any pool, natOutgoing or not, disabled or not) keeps
// the pod's address.
//
// Wren owns exactly one nftables table, "ip wren" (Table), and never
// reads or writes any other:
//
//	table ip wren {
//		set all-pools { type ipv4_addr; flags interval; elements = { every pool } }
//		set nat-pools { type ipv4_addr; flags interval; elements = { pools with natOutgoing } }
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr @nat-pools ip daddr != @all-pools counter masquerade fully-random
//		}
//	}
//
// (Calico's rule: `-m set --match-set cali40masq-ipam-pools src -m set !
// --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully`.) The
// pools live in interval sets, so a pool change is a set update, atomic
// with nothing else touched. When no pool has natOutgoing the table is
// deleted.
//
// Set stores the desired state and does no I/O; Apply reads the table,
// compares it with what Wren writes, and repairs it: set elements that
// differ are replaced in one transaction; any other difference (the table,
// a set, the chain or the rule missing, changed, or something added by
// hand) recreates the whole table in one transaction, so no packet ever
// sees half a table. The first Apply after start is the orphan sweep.
// Watcher turns nftables notifications about the table into pokes of the
// agent's loop, so a hand edit is repaired at once.
package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/wren-net/wren/pkg/model"
)

// Names of what Wren owns in nftables.
const (
	// Table is the name of Wren's table, family ip (IPv4).
	Table = "wren"
	// SetAllPools holds every pool's CIDR: destinations never masqueraded.
	SetAllPools = "all-pools"
	// SetNATPools holds the CIDRs of the pools with natOutgoing: the
	// sources masqueraded.
	SetNATPools = "nat-pools"
	// Chain is the NAT chain on the postrouting hook.
	Chain = "postrouting"
)

// Layout is the table without its set elements, as Kernel.Read renders
// it: one line per set, chain and rule, in nft syntax. Apply recreates a
// table whose layout differs.
const Layout = "set " + SetAllPools + " { type ipv4_addr; flags interval; }\n" +
	"set " + SetNATPools + " { type ipv4_addr; flags interval; }\n" +
	"chain " + Chain + " { type nat hook postrouting priority 100; policy accept; }\n" +
	"rule " + Chain + " ip saddr @" + SetNATPools + " ip daddr != @" + SetAllPools + " counter masquerade fully-random\n"

// Range is an inclusive range of IPv4 addresses: one interval of a set.
type Range struct{ From, To netip.Addr }

// String renders r as nft lists it: a prefix when r is one, else
// "first-last".
func (r Range) String() string {
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// prefix returns the prefix r covers exactly, if it is one.
func (r Range) prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= 32; bits++ {
		p := netip.PrefixFrom(r.From, bits).Masked()
		if p.Addr() == r.From && lastAddr(p) == r.To {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	if p.Bits() == 0 {
		host = ^uint32(0)
	}
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Ranges turns prefixes into sorted, disjoint, non-adjacent ranges (the
// canonical content of an interval set: adjacent and overlapping
// prefixes merge).
func Ranges(ps []netip.Prefix) []Range {
	rs := make([]Range, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() || !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		rs = append(rs, Range{From: p.Addr(), To: lastAddr(p)})
	}
	return Merge(rs)
}

// Merge sorts ranges and merges the overlapping and adjacent ones.
func Merge(rs []Range) []Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Range) int {
		if c := a.From.Compare(b.From); c != 0 {
			return c
		}
		return a.To.Compare(b.To)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.To.Next()
			if !next.IsValid() || r.From.Compare(next) <= 0 { // overlaps or touches
				if r.To.Compare(last.To) > 0 {
					last.To = r.To
				}
				continue
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Contents is table ip wren as the kernel holds it, or as Wren wants it.
type Contents struct {
	// Layout renders the sets' declarations, the chains and the rules
	// (see the package constant Layout).
	Layout string
	// Elements are each set's intervals, merged (see Merge).
	Elements map[string][]Range
}

// String renders the layout, then each set's elements on a line
// "elements NAME {a, b}", sorted by set name.
func (c Contents) String() string {
	var b strings.Builder
	b.WriteString(c.Layout)
	for _, name := range slices.Sorted(maps.Keys(c.Elements)) {
		fmt.Fprintf(&b, "elements %s %s\n", name, rangesString(c.Elements[name]))
	}
	return b.String()
}

// Kernel is what the reconciler needs of nftables, restricted to table ip
// wren. The Linux implementation (NewKernel) speaks nftables netlink;
// tests use a fake.
type Kernel interface {
	// Read returns the table's contents; ok is false when the table does
	// not exist.
	Read() (c Contents, ok bool, err error)
	// Create makes the table exactly Layout with elems, in one
	// transaction; with replace, it deletes the existing table first, in
	// the same transaction.
	Create(elems map[string][]Range, replace bool) error
	// SetElements replaces the elements of the named sets, in one
	// transaction.
	SetElements(elems map[string][]Range) error
	// Delete deletes the table; a missing table is a success.
	Delete() error
}

// Config configures a Reconciler.
type Config struct {
	// Logger receives changes of the table at Info.
	Logger *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	if c.Logger == nil {
		return errors.New("nat: no logger (call Defaults)")
	}
	return nil
}

// Reconciler keeps table ip wren as the last Set wants it.
type Reconciler struct {
	log *slog.Logger
	k   Kernel

	mu   sync.Mutex
	want map[string][]Range // nil: no table
}

// New returns a reconciler over k. Until the first Set, Apply wants no
// table (and so deletes one left by a previous run).
func New(cfg Config, k Kernel) (*Reconciler, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Reconciler{log: cfg.Logger, k: k}, nil
}

// Set replaces the desired state. It does no I/O and keeps its own copy.
// Without a natOutgoing pool the table must not exist.
func (r *Reconciler) Set(n model.NAT) {
	var want map[string][]Range
	if masq := Ranges(n.Masquerade); len(masq) > 0 {
		// The pools with natOutgoing are pools too: never masquerade
		// towards them, even if the caller left them out of Pools.
		want = map[string][]Range{SetNATPools: masq, SetAllPools: Ranges(append(slices.Clone(n.Pools), n.Masquerade...))}
	}
	r.mu.Lock()
	r.want = want
	r.mu.Unlock()
}

// Apply makes table ip wren match the last Set.
func (r *Reconciler) Apply(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	want := r.want
	r.mu.Unlock()

	cur, exists, err := r.k.Read()
	if err != nil {
		if want == nil && unsupported(err) {
			return nil // no nftables here, and nothing wanted of it
		}
		return explain(fmt.Errorf("read nftables table ip %s: %w", Table, err))
	}
	switch {
	case want == nil && !exists:
		return nil
	case want == nil:
		if err := r.k.Delete(); err != nil {
			return fmt.Errorf("delete nftables table ip %s: %w", Table, err)
		}
		r.log.Info("nftables table deleted: no IPPool has natOutgoing", "table", "ip "+Table)
		return nil
	case !exists:
		if err := r.k.Create(want, false); err != nil {
			return explain(fmt.Errorf("create nftables table ip %s: %w", Table, err))
		}
		r.log.Info("nftables table created", "table", "ip "+Table, "nat-pools", rangesString(want[SetNATPools]), "all-pools", rangesString(want[SetAllPools]))
		return nil
	case cur.Layout != Layout:
		if err := r.k.Create(want, true); err != nil {
			return explain(fmt.Errorf("recreate nftables table ip %s: %w", Table, err))
		}
		r.log.Info("nftables table recreated: it was changed by hand", "table", "ip "+Table, "found", strings.TrimSpace(cur.Layout))
		return nil
	}
	diff := map[string][]Range{}
	for _, name := range []string{SetAllPools, SetNATPools} {
		if !slices.Equal(Merge(cur.Elements[name]), want[name]) {
			diff[name] = want[name]
		}
	}
	if len(diff) == 0 {
		return nil
	}
	if err := r.k.SetElements(diff); err != nil {
		return fmt.Errorf("update nftables sets of table ip %s: %w", Table, err)
	}
	for name, rs := range diff {
		r.log.Info("nftables set updated", "set", name, "elements", rangesString(rs), "was", rangesString(Merge(cur.Elements[name])))
	}
	return nil
}

func rangesString(rs []Range) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return "{" + strings.Join(s, ", ") + "}"
}

// unsupported reports whether err says the kernel has no nftables at all
// (no nfnetlink, or no nf_tables subsystem).
func unsupported(err error) bool {
	return errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// explain names what the kernel lacks when nftables refuses the table:
// ENOENT for the nat chain type or the masquerade expression means their
// modules are missing (the kernel tries to load them and fails).
func explain(err error) error {
	if unsupported(err) || errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%w (the node's kernel likely lacks nftables NAT: natOutgoing needs nf_tables, nf_nat, nft_chain_nat and nft_masq, i.e. CONFIG_NF_TABLES, CONFIG_NF_NAT, CONFIG_NFT_NAT, CONFIG_NFT_MASQ)", err)
	}
	return err
}
