package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NFTKernel is Kernel over nftables netlink (github.com/google/nftables)
// in one network namespace. It opens its socket on first use and opens a
// new one after any error (a failed exchange can leave replies unread in
// the socket). One goroutine uses it at a time (the agent's loop); PortID
// may be called from any.
type NFTKernel struct {
	ns netns.NsHandle

	mu   sync.Mutex
	conn *nftables.Conn
	port atomic.Uint32 // the open socket's netlink port id; 0 when closed
}

var _ Kernel = (*NFTKernel)(nil)

// NewKernel returns a kernel for the namespace ns (<= 0: the caller's). It
// does no I/O: a node without nftables fails only when a pool needs NAT.
func NewKernel(ns netns.NsHandle) *NFTKernel { return &NFTKernel{ns: ns} }

// PortID is the netlink port id of the socket Wren writes nftables
// through (0 while none is open): the kernel stamps it on the
// notifications of Wren's own changes, which Watcher ignores.
func (k *NFTKernel) PortID() uint32 { return k.port.Load() }

// open returns the connection, dialing it if needed.
func (k *NFTKernel) open() (*nftables.Conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn != nil {
		return k.conn, nil
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			sa, err := unix.Getsockname(int(fd))
			if err != nil {
				serr = err
				return
			}
			if nl, ok := sa.(*unix.SockaddrNetlink); ok {
				k.port.Store(nl.Pid)
			}
		}); err != nil {
			return err
		}
		return serr
	})}
	if k.ns > 0 {
		opts = append(opts, nftables.WithNetNSFd(int(k.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	k.conn = c
	return c, nil
}

// reset drops the connection after an error; the next call opens another.
func (k *NFTKernel) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn != nil {
		_ = k.conn.CloseLasting()
		k.conn = nil
	}
	k.port.Store(0)
}

// Close closes the socket.
func (k *NFTKernel) Close() { k.reset() }

var table = &nftables.Table{Name: Table, Family: nftables.TableFamilyIPv4}

// Read lists table ip wren: the table, its sets with their elements, the
// chain postrouting and its rules. Dumps stay inside the table (no other
// table is listed); objects of other kinds or other chains show through
// the table's use count.
func (k *NFTKernel) Read() (Contents, bool, error) {
	c, err := k.open()
	if err != nil {
		return Contents{}, false, err
	}
	out, ok, err := read(c)
	if err != nil {
		k.reset()
	}
	return out, ok, err
}

func read(c *nftables.Conn) (Contents, bool, error) {
	t, err := c.ListTableOfFamily(Table, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return Contents{}, false, nil
	}
	if err != nil {
		return Contents{}, false, fmt.Errorf("get table: %w", err)
	}
	var lines []string
	if flags := fromBE(t.Flags); flags != 0 {
		lines = append(lines, fmt.Sprintf("table flags %#x", flags)) // dormant, owner, ...
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return Contents{}, true, fmt.Errorf("list sets: %w", err)
	}
	out := Contents{Elements: map[string][]Range{}}
	slices.SortFunc(sets, func(a, b *nftables.Set) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range sets {
		lines = append(lines, renderSet(s))
		if s.Interval && !s.IsMap && s.KeyType.Bytes == 4 && (s.Name == SetAllPools || s.Name == SetNATPools) {
			els, err := c.GetSetElements(s)
			if err != nil {
				return Contents{}, true, fmt.Errorf("list elements of set %s: %w", s.Name, err)
			}
			out.Elements[s.Name] = elementRanges(els)
		}
	}
	chains := 0
	ch, err := c.ListChain(t, Chain)
	if err == nil {
		chains = 1
		lines = append(lines, renderChain(ch))
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return Contents{}, true, fmt.Errorf("list rules of chain %s: %w", Chain, err)
		}
		for _, r := range rules {
			lines = append(lines, "rule "+Chain+" "+renderRule(r))
		}
	}
	// The table's use count: its chains, sets, stateful objects and
	// flowtables. More than the listed ones: something else was added.
	if other := int(fromBE(t.Use)) - chains - len(sets); other != 0 {
		lines = append(lines, fmt.Sprintf("%d other chains or objects", other))
	}
	// Sets first, then the chain, then its rules: what Layout spells.
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	out.Layout = b.String()
	return out, true, nil
}

// fromBE corrects a table attribute google/nftables v0.3.0 decodes in
// host byte order (NFTA_TABLE_USE, NFTA_TABLE_FLAGS): the kernel sends
// them big-endian.
func fromBE(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

func renderSet(s *nftables.Set) string {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{s.Anonymous, "anonymous"}, {s.Constant, "constant"}, {s.Interval, "interval"}, {s.HasTimeout, "timeout"}, {s.Dynamic, "dynamic"}, {s.Concatenation, "concatenation"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	typ := s.KeyType.Name
	if s.IsMap {
		typ += " : " + s.DataType.Name
	}
	line := "set " + s.Name + " { type " + typ + ";"
	if len(flags) > 0 {
		line += " flags " + strings.Join(flags, ",") + ";"
	}
	if s.Counter {
		line += " counter;"
	}
	if s.Timeout != 0 {
		line += fmt.Sprintf(" timeout %s;", s.Timeout)
	}
	return line + " }"
}

var hookNames = map[nftables.ChainHook]string{
	unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input", unix.NF_INET_FORWARD: "forward",
	unix.NF_INET_LOCAL_OUT: "output", unix.NF_INET_POST_ROUTING: "postrouting",
}

func renderChain(c *nftables.Chain) string {
	line := "chain " + c.Name + " {"
	if c.Hooknum != nil {
		hook, ok := hookNames[*c.Hooknum]
		if !ok {
			hook = fmt.Sprintf("hook%d", *c.Hooknum)
		}
		prio := 0
		if c.Priority != nil {
			prio = int(*c.Priority)
		}
		line += fmt.Sprintf(" type %s hook %s priority %d;", c.Type, hook, prio)
	}
	if c.Policy != nil {
		switch *c.Policy {
		case nftables.ChainPolicyAccept:
			line += " policy accept;"
		case nftables.ChainPolicyDrop:
			line += " policy drop;"
		default:
			line += fmt.Sprintf(" policy %d;", *c.Policy)
		}
	}
	return line + " }"
}

// renderRule spells the expressions Wren writes in nft syntax, and any
// other expression by its Go type and fields (which never matches
// Layout).
func renderRule(r *nftables.Rule) string {
	var parts []string
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			field := fmt.Sprintf("payload %d+%d/%d", e.Base, e.Offset, e.Len)
			if e.OperationType == expr.PayloadLoad && e.Base == expr.PayloadBaseNetworkHeader && e.Len == 4 {
				switch e.Offset {
				case 12:
					field = "ip saddr"
				case 16:
					field = "ip daddr"
				}
			}
			if e.OperationType != expr.PayloadLoad || e.DestRegister != 1 {
				field += fmt.Sprintf(" (op %d reg %d)", e.OperationType, e.DestRegister)
			}
			parts = append(parts, field)
		case *expr.Lookup:
			s := "@" + e.SetName
			if e.Invert {
				s = "!= " + s
			}
			if e.SourceRegister != 1 || e.IsDestRegSet {
				s += fmt.Sprintf(" (sreg %d dreg %d)", e.SourceRegister, e.DestRegister)
			}
			parts = append(parts, s)
		case *expr.Counter:
			parts = append(parts, "counter")
		case *expr.Masq:
			s := "masquerade"
			if e.ToPorts {
				s += fmt.Sprintf(" to regs %d-%d", e.RegProtoMin, e.RegProtoMax)
			}
			if e.Random {
				s += " random"
			}
			if e.FullyRandom {
				s += " fully-random"
			}
			if e.Persistent {
				s += " persistent"
			}
			parts = append(parts, s)
		default:
			parts = append(parts, fmt.Sprintf("%T%+v", e, e))
		}
	}
	if len(r.UserData) > 0 {
		parts = append(parts, fmt.Sprintf("userdata %x", r.UserData))
	}
	return strings.Join(parts, " ")
}

// elementRanges reads an IPv4 interval set's elements: a start element
// opens a range that the next end element (whose key is the first address
// after it) or the next start element closes; an open last range runs to
// 255.255.255.255. End elements without a start (nft writes one at
// 0.0.0.0) are skipped.
func elementRanges(els []nftables.SetElement) []Range {
	type el struct {
		a   netip.Addr
		end bool
	}
	var es []el
	for _, e := range els {
		if len(e.Key) != 4 {
			continue
		}
		es = append(es, el{netip.AddrFrom4([4]byte(e.Key)), e.IntervalEnd})
	}
	slices.SortFunc(es, func(x, y el) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		switch { // at one key, the end of one range before the start of the next
		case x.end && !y.end:
			return -1
		case !x.end && y.end:
			return 1
		}
		return 0
	})
	var rs []Range
	var open *netip.Addr
	for i := range es {
		e := es[i]
		switch {
		case !e.end && open != nil:
			rs = append(rs, Range{From: *open, To: e.a.Prev()})
			open = &es[i].a
		case !e.end:
			open = &es[i].a
		case open != nil:
			if e.a.Compare(*open) > 0 {
				rs = append(rs, Range{From: *open, To: e.a.Prev()})
			}
			open = nil
		}
	}
	if open != nil {
		rs = append(rs, Range{From: *open, To: netip.AddrFrom4([4]byte{255, 255, 255, 255})})
	}
	return Merge(rs)
}

// setElements are the elements of an interval set holding rs.
func setElements(rs []Range) []nftables.SetElement {
	var out []nftables.SetElement
	for _, r := range Merge(rs) {
		from := r.From.As4()
		out = append(out, nftables.SetElement{Key: from[:]})
		if next := r.To.Next(); next.IsValid() {
			to := next.As4()
			out = append(out, nftables.SetElement{Key: to[:], IntervalEnd: true})
		}
	}
	return out
}

func poolSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
}

// Create writes Layout with elems in one transaction, after deleting the
// table in the same transaction when replace is set.
func (k *NFTKernel) Create(elems map[string][]Range, replace bool) error {
	c, err := k.open()
	if err != nil {
		return err
	}
	if replace {
		c.DelTable(table)
	}
	c.AddTable(table)
	all, masq := poolSet(SetAllPools), poolSet(SetNATPools)
	for _, s := range []*nftables.Set{all, masq} {
		if err := c.AddSet(s, setElements(elems[s.Name])); err != nil {
			k.reset()
			return fmt.Errorf("encode set %s: %w", s.Name, err)
		}
	}
	ch := c.AddChain(&nftables.Chain{Name: Chain, Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: ref(nftables.ChainPolicyAccept)})
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
		// ip saddr @nat-pools
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: masq.Name, SetID: masq.ID},
		// ip daddr != @all-pools
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: all.Name, SetID: all.ID, Invert: true},
		&expr.Counter{},
		// Fully random source ports, as Calico's --random-fully: no
		// two pods' flows to one server collide on a port and get
		// dropped while the kernel picks another.
		&expr.Masq{FullyRandom: true},
	}})
	if err := c.Flush(); err != nil {
		k.reset()
		return err
	}
	return nil
}

func ref[T any](v T) *T { return &v }

// SetElements replaces the named sets' elements: a flush and the adds of
// each set in one transaction, so the set is never seen half-written.
func (k *NFTKernel) SetElements(elems map[string][]Range) error {
	c, err := k.open()
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(elems)) {
		s := poolSet(name)
		c.FlushSet(s)
		if els := setElements(elems[name]); len(els) > 0 {
			if err := c.SetAddElements(s, els); err != nil {
				k.reset()
				return fmt.Errorf("encode elements of set %s: %w", name, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		k.reset()
		return err
	}
	return nil
}

// Delete deletes table ip wren; a missing table is a success.
func (k *NFTKernel) Delete() error {
	c, err := k.open()
	if err != nil {
		return err
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		k.reset()
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		return err
	}
	return nil
}
