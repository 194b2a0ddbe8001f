package tunnel

// A small in-memory kernel for the fake tier: links, IPv4 addresses,
// neighbours and VXLAN FDB entries, with the errno behaviour the
// reconciler relies on (EEXIST, ENOENT, ENODEV, EADDRNOTAVAIL, EOPNOTSUPP
// for an unknown link kind). Its state renders as sorted "ip ..." and
// "bridge ..." lines for golden comparison.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type fakeNeigh struct {
	mac   string
	state int
}

type fakeRemote struct {
	dst   netip.Addr
	state int
}

type fakeNL struct {
	nextIndex int
	links     map[int]netlink.Link
	addrs     map[int][]netip.Prefix
	neighs    map[int]map[netip.Addr]fakeNeigh
	fdb       map[int]map[string][]fakeRemote // mac -> remotes, first is "the" remote
	noIPIP    bool                            // the kernel has no ipip link kind
	writes    []string                        // every successful or failed write, in order
	fail      func(op string) error           // injected write failures, by op string
	reads     int                             // number of read calls
}

// newFake returns a node with an up eth0 (MTU 1500). With ipip it also has
// the fallback tunl0 the ipip module creates in every namespace (down, MTU
// 1480, no address); without ipip, creating an ipip link fails like the
// kernel here does.
func newFake(ipip bool) *fakeNL {
	f := &fakeNL{
		nextIndex: 1,
		links:     map[int]netlink.Link{},
		addrs:     map[int][]netip.Prefix{},
		neighs:    map[int]map[netip.Addr]fakeNeigh{},
		fdb:       map[int]map[string][]fakeRemote{},
		noIPIP:    !ipip,
	}
	f.addLink(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500, Flags: net.FlagUp}})
	if ipip {
		f.addLink(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPName, MTU: 1480}})
	}
	f.writes = nil
	return f
}

func (f *fakeNL) addLink(l netlink.Link) int {
	if err := f.LinkAdd(l); err != nil {
		panic(err)
	}
	return f.byName(l.Attrs().Name).Attrs().Index
}

func cloneLink(l netlink.Link) netlink.Link {
	switch v := l.(type) {
	case *netlink.Vxlan:
		c := *v
		c.HardwareAddr = slices.Clone(v.HardwareAddr)
		c.SrcAddr = slices.Clone(v.SrcAddr)
		return &c
	case *netlink.Iptun:
		c := *v
		return &c
	case *netlink.Veth:
		c := *v
		return &c
	case *netlink.Bridge:
		c := *v
		return &c
	case *netlink.Dummy:
		c := *v
		return &c
	}
	panic(fmt.Sprintf("fake: link type %T", l))
}

func (f *fakeNL) byName(name string) netlink.Link {
	for _, l := range f.links {
		if l.Attrs().Name == name {
			return l
		}
	}
	return nil
}

func (f *fakeNL) write(op string) error {
	f.writes = append(f.writes, op)
	if f.fail != nil {
		return f.fail(op)
	}
	return nil
}

func (f *fakeNL) link(l netlink.Link) (netlink.Link, error) {
	cur, ok := f.links[l.Attrs().Index]
	if !ok {
		return nil, fmt.Errorf("link index %d: %w", l.Attrs().Index, unix.ENODEV)
	}
	return cur, nil
}

func (f *fakeNL) LinkByName(name string) (netlink.Link, error) {
	f.reads++
	if l := f.byName(name); l != nil {
		return cloneLink(l), nil
	}
	return nil, fmt.Errorf("link %s: %w", name, unix.ENODEV)
}

func (f *fakeNL) LinkList() ([]netlink.Link, error) {
	f.reads++
	var out []netlink.Link
	for _, l := range f.links {
		out = append(out, cloneLink(l))
	}
	return out, nil
}

func (f *fakeNL) LinkAdd(l netlink.Link) error {
	if err := f.write("link add " + l.Attrs().Name); err != nil {
		return err
	}
	if f.byName(l.Attrs().Name) != nil {
		return unix.EEXIST
	}
	c := cloneLink(l)
	a := c.Attrs()
	switch v := c.(type) {
	case *netlink.Iptun:
		if f.noIPIP {
			// What v1.3.1 gets here: the bare errno; the kernel's
			// "Unknown device type" extack text is not requested.
			return unix.EOPNOTSUPP
		}
		if a.MTU == 0 {
			a.MTU = 1480
		}
	case *netlink.Vxlan:
		parent, ok := f.links[v.VtepDevIndex]
		if !ok {
			return unix.ENODEV
		}
		if v.Port == 0 {
			v.Port = 8472 // the kernel's pre-IANA default
		}
		if a.MTU == 0 {
			a.MTU = parent.Attrs().MTU - VXLANOverhead
		}
	default:
		if a.MTU == 0 {
			a.MTU = 1500
		}
	}
	a.Index = f.nextIndex
	f.nextIndex++
	if a.HardwareAddr == nil && c.Type() != "ipip" {
		a.HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, byte(a.Index)}
	}
	a.Flags &= net.FlagUp
	f.links[a.Index] = c
	return nil
}

func (f *fakeNL) LinkDel(l netlink.Link) error {
	if err := f.write("link del " + l.Attrs().Name); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	idx := cur.Attrs().Index
	delete(f.links, idx)
	delete(f.addrs, idx)
	delete(f.neighs, idx)
	delete(f.fdb, idx)
	return nil
}

func (f *fakeNL) LinkSetUp(l netlink.Link) error {
	if err := f.write("link set up " + l.Attrs().Name); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	cur.Attrs().Flags |= net.FlagUp
	return nil
}

func (f *fakeNL) LinkSetDown(l netlink.Link) error {
	if err := f.write("link set down " + l.Attrs().Name); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	cur.Attrs().Flags &^= net.FlagUp
	return nil
}

func (f *fakeNL) LinkSetMTU(l netlink.Link, mtu int) error {
	if err := f.write(fmt.Sprintf("link set mtu %s %d", l.Attrs().Name, mtu)); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	cur.Attrs().MTU = mtu
	return nil
}

func (f *fakeNL) LinkSetHardwareAddr(l netlink.Link, mac net.HardwareAddr) error {
	if err := f.write(fmt.Sprintf("link set address %s %s", l.Attrs().Name, mac)); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	cur.Attrs().HardwareAddr = slices.Clone(mac)
	return nil
}

func prefixOf(a *netlink.Addr) netip.Prefix {
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(addrOf(a.IP), ones)
}

func (f *fakeNL) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.reads++
	if family != netlink.FAMILY_V4 {
		return nil, fmt.Errorf("fake: address family %d", family)
	}
	cur, err := f.link(l)
	if err != nil {
		return nil, err
	}
	var out []netlink.Addr
	for _, p := range f.addrs[cur.Attrs().Index] {
		out = append(out, netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}})
	}
	return out, nil
}

func (f *fakeNL) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	p := prefixOf(a)
	if err := f.write(fmt.Sprintf("addr add %s dev %s", p, l.Attrs().Name)); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	idx := cur.Attrs().Index
	if slices.Contains(f.addrs[idx], p) {
		return unix.EEXIST
	}
	f.addrs[idx] = append(f.addrs[idx], p)
	return nil
}

func (f *fakeNL) AddrDel(l netlink.Link, a *netlink.Addr) error {
	p := prefixOf(a)
	if err := f.write(fmt.Sprintf("addr del %s dev %s", p, l.Attrs().Name)); err != nil {
		return err
	}
	cur, err := f.link(l)
	if err != nil {
		return err
	}
	idx := cur.Attrs().Index
	i := slices.Index(f.addrs[idx], p)
	if i < 0 {
		return unix.EADDRNOTAVAIL
	}
	f.addrs[idx] = slices.Delete(f.addrs[idx], i, i+1)
	return nil
}

func (f *fakeNL) NeighList(idx, family int) ([]netlink.Neigh, error) {
	f.reads++
	var out []netlink.Neigh
	for li := range f.links {
		if idx != 0 && li != idx {
			continue
		}
		switch family {
		case netlink.FAMILY_V4:
			for ip, n := range f.neighs[li] {
				mac, _ := net.ParseMAC(n.mac)
				out = append(out, netlink.Neigh{LinkIndex: li, Family: netlink.FAMILY_V4, State: n.state,
					Type: unix.RTN_UNICAST, IP: ip.AsSlice(), HardwareAddr: mac})
			}
		case unix.AF_BRIDGE:
			for m, rs := range f.fdb[li] {
				mac, _ := net.ParseMAC(m)
				for _, r := range rs {
					out = append(out, netlink.Neigh{LinkIndex: li, Family: unix.AF_BRIDGE, State: r.state,
						Type: unix.RTN_UNICAST, Flags: netlink.NTF_SELF, IP: r.dst.AsSlice(), HardwareAddr: mac})
				}
			}
		default:
			return nil, fmt.Errorf("fake: neighbour family %d", family)
		}
	}
	return out, nil
}

func (f *fakeNL) neighOp(verb string, n *netlink.Neigh) (string, error) {
	l, ok := f.links[n.LinkIndex]
	if !ok {
		return "", fmt.Errorf("fake: neigh on index %d: %w", n.LinkIndex, unix.ENODEV)
	}
	name := l.Attrs().Name
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("fdb %s %s dst %s dev %s", verb, n.HardwareAddr, ipString(n.IP), name), nil
	}
	return fmt.Sprintf("neigh %s %s lladdr %s dev %s", verb, ipString(n.IP), n.HardwareAddr, name), nil
}

func (f *fakeNL) NeighSet(n *netlink.Neigh) error {
	op, err := f.neighOp("set", n)
	if err != nil {
		return err
	}
	if err := f.write(op); err != nil {
		return err
	}
	ip := addrOf(n.IP)
	switch n.Family {
	case netlink.FAMILY_V4:
		if f.neighs[n.LinkIndex] == nil {
			f.neighs[n.LinkIndex] = map[netip.Addr]fakeNeigh{}
		}
		f.neighs[n.LinkIndex][ip] = fakeNeigh{mac: n.HardwareAddr.String(), state: n.State}
	case unix.AF_BRIDGE:
		if n.Flags&netlink.NTF_SELF == 0 {
			return unix.EINVAL // not a bridge port: only "self" entries
		}
		if !ip.IsValid() {
			return unix.EAFNOSUPPORT
		}
		if f.fdb[n.LinkIndex] == nil {
			f.fdb[n.LinkIndex] = map[string][]fakeRemote{}
		}
		m := n.HardwareAddr.String()
		rs := f.fdb[n.LinkIndex][m]
		if i := slices.IndexFunc(rs, func(r fakeRemote) bool { return r.dst == ip }); i >= 0 {
			rs[i].state = n.State
		} else if len(rs) > 0 {
			rs[0] = fakeRemote{dst: ip, state: n.State} // NLM_F_REPLACE rewrites the first remote
		} else {
			rs = []fakeRemote{{dst: ip, state: n.State}}
		}
		f.fdb[n.LinkIndex][m] = rs
	default:
		return unix.EAFNOSUPPORT
	}
	return nil
}

func (f *fakeNL) NeighDel(n *netlink.Neigh) error {
	op, err := f.neighOp("del", n)
	if err != nil {
		return err
	}
	if err := f.write(op); err != nil {
		return err
	}
	ip := addrOf(n.IP)
	switch n.Family {
	case netlink.FAMILY_V4:
		if _, ok := f.neighs[n.LinkIndex][ip]; !ok {
			return unix.ENOENT
		}
		delete(f.neighs[n.LinkIndex], ip)
	case unix.AF_BRIDGE:
		if !ip.IsValid() {
			return unix.EAFNOSUPPORT // what an empty NDA_DST gets from vxlan
		}
		m := n.HardwareAddr.String()
		rs := f.fdb[n.LinkIndex][m]
		i := slices.IndexFunc(rs, func(r fakeRemote) bool { return r.dst == ip })
		if i < 0 {
			return unix.ENOENT
		}
		rs = slices.Delete(rs, i, i+1)
		if len(rs) == 0 {
			delete(f.fdb[n.LinkIndex], m)
		} else {
			f.fdb[n.LinkIndex][m] = rs
		}
	default:
		return unix.EAFNOSUPPORT
	}
	return nil
}

func stateName(s int) string {
	switch s {
	case netlink.NUD_PERMANENT:
		return "permanent"
	case netlink.NUD_PERMANENT | netlink.NUD_NOARP:
		return "permanent+noarp" // what "bridge fdb add ... permanent" writes
	case netlink.NUD_REACHABLE:
		return "reachable"
	case netlink.NUD_STALE:
		return "stale"
	case netlink.NUD_FAILED:
		return "failed"
	}
	return fmt.Sprintf("0x%x", s)
}

// String renders the fake kernel as sorted command lines.
func (f *fakeNL) String() string {
	var lines []string
	name := func(idx int) string { return f.links[idx].Attrs().Name }
	for _, l := range f.links {
		a := l.Attrs()
		updown := "down"
		if a.Flags&net.FlagUp != 0 {
			updown = "up"
		}
		switch v := l.(type) {
		case *netlink.Vxlan:
			learning := "nolearning"
			if v.Learning {
				learning = "learning"
			}
			lines = append(lines, fmt.Sprintf("ip link add %s type vxlan id %d local %s dev %s dstport %d %s address %s mtu %d %s",
				a.Name, v.VxlanId, ipString(v.SrcAddr), name(v.VtepDevIndex), v.Port, learning, a.HardwareAddr, a.MTU, updown))
		case *netlink.Iptun:
			if updown == "down" {
				// A disabled tunl0 is only kept down and without an
				// address; its MTU is whatever it last was, so it is
				// not part of the state.
				lines = append(lines, fmt.Sprintf("ip link add %s type ipip down", a.Name))
				continue
			}
			lines = append(lines, fmt.Sprintf("ip link add %s type ipip mtu %d up", a.Name, a.MTU))
		default:
			lines = append(lines, fmt.Sprintf("ip link add %s type %s mtu %d %s", a.Name, l.Type(), a.MTU, updown))
		}
	}
	for idx, ps := range f.addrs {
		for _, p := range ps {
			lines = append(lines, fmt.Sprintf("ip addr add %s dev %s", p, name(idx)))
		}
	}
	for idx, ns := range f.neighs {
		for ip, n := range ns {
			ll := ""
			if n.mac != "" {
				ll = " lladdr " + n.mac
			}
			lines = append(lines, fmt.Sprintf("ip neigh add %s%s dev %s nud %s", ip, ll, name(idx), stateName(n.state)))
		}
	}
	for idx, macs := range f.fdb {
		for m, rs := range macs {
			for _, r := range rs {
				lines = append(lines, fmt.Sprintf("bridge fdb add %s dev %s dst %s self %s", m, name(idx), r.dst, stateName(r.state)))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
