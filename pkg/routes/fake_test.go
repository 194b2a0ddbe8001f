package routes

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"syscall"
)

// fakeKernel is an in-memory routing table with the kernel's key rules:
// (table, dst, tos, priority) is unique, exclusive adds fail with EEXIST,
// deletes must match the protocol.
type fakeKernel struct {
	links     map[string]int
	routes    map[fkey]KRoute
	writes    int
	linkLists int
}

type fkey struct {
	table    uint32
	dst      netip.Prefix
	tos      uint8
	priority uint32
}

func newFake(links ...string) *fakeKernel {
	f := &fakeKernel{links: map[string]int{}, routes: map[fkey]KRoute{}}
	for i, l := range links {
		f.links[l] = i + 2
	}
	return f
}

func keyOf(r KRoute) fkey { return fkey{r.Table, r.Dst, r.Tos, r.Priority} }

func (f *fakeKernel) Links() (map[string]int, error) {
	f.linkLists++
	m := map[string]int{}
	for k, v := range f.links {
		m[k] = v
	}
	return m, nil
}

func (f *fakeKernel) List(table uint32, proto uint8, fn func(KRoute)) error {
	for _, r := range f.sorted() {
		if r.Table == table && r.Protocol == proto {
			fn(r)
		}
	}
	return nil
}

func (f *fakeKernel) Write(ops []Op) []error {
	errs := make([]error, len(ops))
	for i, op := range ops {
		f.writes++
		k := keyOf(op.Route)
		cur, exists := f.routes[k]
		switch {
		case op.Delete:
			if !exists || cur.Protocol != op.Route.Protocol {
				continue // ESRCH counts as success
			}
			delete(f.routes, k)
		case op.Replace:
			f.routes[k] = op.Route
		default:
			if exists {
				errs[i] = syscall.EEXIST
				continue
			}
			f.routes[k] = op.Route
		}
	}
	return errs
}

func (f *fakeKernel) sorted() []KRoute {
	rs := make([]KRoute, 0, len(f.routes))
	for _, r := range f.routes {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Dst != rs[j].Dst {
			return rs[i].Dst.String() < rs[j].Dst.String()
		}
		return rs[i].Priority < rs[j].Priority
	})
	return rs
}

// String renders the table as sorted "ip route add" lines.
func (f *fakeKernel) String() string {
	names := map[int]string{}
	for n, i := range f.links {
		names[i] = n
	}
	var b strings.Builder
	for _, r := range f.sorted() {
		b.WriteString("ip route add ")
		if r.Type == TypeBlackhole {
			b.WriteString("blackhole ")
		}
		b.WriteString(r.Dst.String())
		if r.Gw.IsValid() {
			b.WriteString(" via " + r.Gw.String())
		}
		if r.Oif != 0 {
			b.WriteString(" dev " + names[r.Oif])
		}
		fmt.Fprintf(&b, " proto %d", r.Protocol)
		if r.Scope == ScopeLink {
			b.WriteString(" scope link")
		}
		if r.Priority != 0 {
			fmt.Fprintf(&b, " metric %d", r.Priority)
		}
		if r.Flags&FlagOnLink != 0 {
			b.WriteString(" onlink")
		}
		if r.MTU != 0 {
			fmt.Fprintf(&b, " mtu %d", r.MTU)
		}
		b.WriteString("\n")
	}
	return b.String()
}
