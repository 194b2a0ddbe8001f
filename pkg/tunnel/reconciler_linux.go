package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

// Reconciler owns vxlan.calico, tunl0's address and state, and the
// permanent neighbour and FDB entries on vxlan.calico.
type Reconciler struct {
	log *slog.Logger
	nl  Netlink

	mu   sync.Mutex
	want desired
}

// New returns a reconciler that writes through nl; cfg is defaulted. Until
// the first Set, Apply wants neither device.
func New(cfg Config, nl Netlink) *Reconciler {
	cfg.Defaults()
	return &Reconciler{
		log:  cfg.Logger,
		nl:   nl,
		want: normalize(model.Tunnels{}),
	}
}

// Set replaces the desired tunnel state. It does no I/O and keeps its own
// copy of t. Invalid parts are reported by the next Apply, naming the
// device or node, and the rest is applied.
func (r *Reconciler) Set(t model.Tunnels) {
	d := normalize(t)
	r.mu.Lock()
	r.want = d
	r.mu.Unlock()
}

// Apply makes the kernel match the last Set: vxlan.calico with its
// address and VTEP entries, then tunl0. It returns the joined per-object
// errors; a failing object does not stop the others.
func (r *Reconciler) Apply(ctx context.Context) error {
	r.mu.Lock()
	d := r.want
	r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	errs = append(errs, r.applyVXLAN(d)...)
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, r.applyIPIP(d)...)
	return errors.Join(errs...)
}

// applyVXLAN reconciles vxlan.calico and, when it exists, its entries.
func (r *Reconciler) applyVXLAN(d desired) []error {
	errs := slices.Clone(d.vtepErrs)
	if d.vxlanErr != nil {
		return append(errs, d.vxlanErr)
	}
	cur, err := r.nl.LinkByName(VXLANName)
	if err != nil && !notFound(err) {
		return append(errs, fmt.Errorf("get link %s: %w", VXLANName, err))
	}
	if err != nil {
		cur = nil
	}
	if cur != nil && cur.Type() != "vxlan" {
		// Not ours: somebody else's device holds the name. Deleting it
		// could cut whatever it carries, so say so and leave it.
		if d.vxlan == nil {
			r.log.Debug("leaving foreign link alone", "link", VXLANName, "type", cur.Type())
			return errs
		}
		return append(errs, fmt.Errorf("link %s exists with type %s, not vxlan; delete it or rename it", VXLANName, cur.Type()))
	}

	if d.vxlan == nil {
		if cur == nil {
			return errs
		}
		if err := r.nl.LinkDel(cur); !ignore(err, unix.ENODEV) {
			return append(errs, fmt.Errorf("delete link %s: %w", VXLANName, err))
		}
		r.log.Info("vxlan device deleted", "link", VXLANName)
		return errs
	}

	parent, err := r.nl.LinkByName(d.vxlan.Parent)
	if err != nil {
		return append(errs, fmt.Errorf("%s: get parent device %s: %w", VXLANName, d.vxlan.Parent, err))
	}
	want := vxlanLink(*d.vxlan, parent.Attrs().Index)

	if cur != nil {
		why := "attributes unreadable"
		if v, ok := cur.(*netlink.Vxlan); ok {
			why = vxlanIncompat(v, want)
		}
		if why != "" {
			r.log.Info("recreating vxlan device", "link", VXLANName, "reason", why)
			if err := r.nl.LinkDel(cur); !ignore(err, unix.ENODEV) {
				return append(errs, fmt.Errorf("delete incompatible link %s (%s): %w", VXLANName, why, err))
			}
			cur = nil
		}
	}
	if cur == nil {
		if err := r.nl.LinkAdd(want); err != nil {
			return append(errs, fmt.Errorf("add link %s type vxlan id %d local %s dev %s dstport %d: %w",
				VXLANName, want.VxlanId, want.SrcAddr, d.vxlan.Parent, want.Port, err))
		}
		if cur, err = r.nl.LinkByName(VXLANName); err != nil {
			return append(errs, fmt.Errorf("get link %s after adding it: %w", VXLANName, err))
		}
		r.log.Info("vxlan device created", "link", VXLANName, "vni", want.VxlanId,
			"local", want.SrcAddr.String(), "parent", d.vxlan.Parent)
	}

	errs = append(errs, r.linkState(cur, VXLANName, d.vxlan.MTU, d.vxlan.MAC, true)...)
	errs = append(errs, r.onlyAddr(cur, VXLANName, d.vxlan.Address)...)
	return append(errs, r.applyVTEPs(cur, d)...)
}

// linkState sets MTU, MAC (if mac is non-nil) and up/down in place, each
// only when it differs, so a converged Apply writes nothing.
func (r *Reconciler) linkState(l netlink.Link, name string, mtu int, mac net.HardwareAddr, up bool) []error {
	var errs []error
	a := l.Attrs()
	if mtu != 0 && a.MTU != mtu {
		if err := r.nl.LinkSetMTU(l, mtu); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d on %s: %w", mtu, name, err))
		} else {
			r.log.Info("tunnel MTU changed", "link", name, "from", a.MTU, "to", mtu)
		}
	}
	if mac != nil && !bytes.Equal(a.HardwareAddr, mac) {
		if err := r.nl.LinkSetHardwareAddr(l, mac); err != nil {
			errs = append(errs, fmt.Errorf("set address %s on %s: %w", mac, name, err))
		} else {
			r.log.Info("tunnel MAC changed", "link", name, "from", a.HardwareAddr.String(), "to", mac.String())
		}
	}
	isUp := a.Flags&net.FlagUp != 0
	switch {
	case up && !isUp:
		if err := r.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", name, err))
		}
	case !up && isUp:
		if err := r.nl.LinkSetDown(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s down: %w", name, err))
		} else {
			r.log.Info("tunnel device set down", "link", name)
		}
	}
	return errs
}

// onlyAddr leaves exactly one IPv4 address on l: want/32, or none if want
// is the zero Addr. The new address goes on before the old ones come off.
// IPv6 link-local addresses the kernel adds are not touched.
func (r *Reconciler) onlyAddr(l netlink.Link, name string, want netip.Addr) []error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return r.nl.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return []error{fmt.Errorf("list addresses of %s: %w", name, err)}
	}
	var errs []error
	wantP := netip.PrefixFrom(want, 32)
	have := false
	var stale []netlink.Addr
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		if want.IsValid() && netip.PrefixFrom(addrOf(a.IP), ones) == wantP {
			have = true
			continue
		}
		stale = append(stale, a)
	}
	if want.IsValid() && !have {
		if err := r.nl.AddrAdd(l, hostAddr(want)); !ignore(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", wantP, name, err))
		} else {
			r.log.Info("tunnel address added", "link", name, "addr", wantP.String())
		}
	}
	for _, a := range stale {
		// EADDRNOTAVAIL: already gone (e.g. removed with its primary).
		if err := r.nl.AddrDel(l, &a); !ignore(err, unix.EADDRNOTAVAIL, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", a.IPNet, name, err))
		} else {
			r.log.Info("tunnel address removed", "link", name, "addr", a.IPNet.String())
		}
	}
	return errs
}

// fdbKey identifies one remote of a VXLAN FDB entry.
type fdbKey struct {
	mac string
	dst netip.Addr
}

// applyVTEPs makes the permanent neighbour and FDB entries on vxlan.calico
// equal to the desired VTEPs. Non-permanent entries are the kernel's (ARP
// attempts, for instance) and are left to it.
func (r *Reconciler) applyVTEPs(l netlink.Link, d desired) []error {
	idx := l.Attrs().Index
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return r.nl.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return []error{fmt.Errorf("list neighbours of %s: %w", VXLANName, err)}
	}
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return r.nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return []error{fmt.Errorf("list fdb of %s: %w", VXLANName, err)}
	}

	haveNeigh := map[netip.Addr]netlink.Neigh{}
	for _, n := range neighs {
		if ip := addrOf(n.IP); n.LinkIndex == idx && ip.Is4() {
			haveNeigh[ip] = n
		}
	}
	haveFDB := map[fdbKey]netlink.Neigh{}
	for _, n := range fdb {
		// Entries without a dst are not VXLAN remotes (nothing Wren
		// writes looks like that); netlink v1.3.1 would also send an
		// empty NDA_DST when deleting them, which vxlan rejects.
		if dst := addrOf(n.IP); n.LinkIndex == idx && n.Flags&netlink.NTF_SELF != 0 && dst.IsValid() {
			haveFDB[fdbKey{n.HardwareAddr.String(), dst}] = n
		}
	}

	var errs []error
	wantNeigh := map[netip.Addr]bool{}
	wantFDB := map[fdbKey]bool{}
	// Adds and replacements first: a VTEP that moves never loses its
	// entries in between.
	for _, v := range d.vteps {
		wantNeigh[v.TunnelIP] = true
		if n, ok := haveNeigh[v.TunnelIP]; !ok || !permanent(n) || !bytes.Equal(n.HardwareAddr, v.MAC) {
			if err := r.nl.NeighSet(vtepNeigh(idx, v)); err != nil {
				errs = append(errs, fmt.Errorf("set neighbour %s lladdr %s on %s for node %s: %w", v.TunnelIP, v.MAC, VXLANName, v.Node, err))
			} else {
				r.log.Debug("neighbour set", "node", v.Node, "ip", v.TunnelIP.String(), "mac", v.MAC.String())
			}
		}
		k := fdbKey{v.MAC.String(), v.NodeIP}
		wantFDB[k] = true
		if n, ok := haveFDB[k]; !ok || !permanent(n) {
			// NLM_F_REPLACE on an existing MAC rewrites its (first)
			// remote, so a node whose IP changed moves in one step.
			if err := r.nl.NeighSet(vtepFDB(idx, v)); err != nil {
				errs = append(errs, fmt.Errorf("add fdb %s dst %s on %s for node %s: %w", v.MAC, v.NodeIP, VXLANName, v.Node, err))
			} else {
				r.log.Debug("fdb entry set", "node", v.Node, "mac", v.MAC.String(), "dst", v.NodeIP.String())
			}
		}
	}

	for _, ip := range sortedKeys(haveNeigh, netip.Addr.Compare) {
		n := haveNeigh[ip]
		if wantNeigh[ip] || d.holdNeigh[ip] || !permanent(n) {
			continue
		}
		if err := r.nl.NeighDel(&n); !ignore(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %s lladdr %s on %s: %w", ip, n.HardwareAddr, VXLANName, err))
		} else {
			r.log.Debug("stale neighbour deleted", "ip", ip.String(), "mac", n.HardwareAddr.String())
		}
	}
	for _, k := range sortedKeys(haveFDB, compareFDB) {
		n := haveFDB[k]
		if wantFDB[k] || d.holdFDB[k.dst] || !permanent(n) {
			continue
		}
		del := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        n.State,
			IP:           net.IP(k.dst.AsSlice()),
			HardwareAddr: n.HardwareAddr,
		}
		// ENOENT: the remote was rewritten by a replace above.
		if err := r.nl.NeighDel(del); !ignore(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete fdb %s dst %s on %s: %w", k.mac, k.dst, VXLANName, err))
		} else {
			r.log.Debug("stale fdb entry deleted", "mac", k.mac, "dst", k.dst.String())
		}
	}
	return errs
}

func compareFDB(a, b fdbKey) int {
	if a.mac != b.mac {
		if a.mac < b.mac {
			return -1
		}
		return 1
	}
	return a.dst.Compare(b.dst)
}

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp)
	return keys
}

// applyIPIP reconciles tunl0.
func (r *Reconciler) applyIPIP(d desired) []error {
	if d.ipipErr != nil {
		return []error{d.ipipErr}
	}
	cur, err := r.nl.LinkByName(IPIPName)
	if err != nil && !notFound(err) {
		return []error{fmt.Errorf("get link %s: %w", IPIPName, err)}
	}
	if err != nil {
		cur = nil
	}
	if cur != nil && cur.Type() != "ipip" {
		if d.ipip == nil {
			r.log.Debug("leaving foreign link alone", "link", IPIPName, "type", cur.Type())
			return nil
		}
		return []error{fmt.Errorf("link %s exists with type %s, not ipip; delete it or rename it", IPIPName, cur.Type())}
	}

	if d.ipip == nil {
		if cur == nil {
			return nil
		}
		// tunl0 is the ipip module's per-namespace fallback device and
		// cannot be deleted; without an address and down it carries
		// nothing.
		errs := r.onlyAddr(cur, IPIPName, netip.Addr{})
		return append(errs, r.linkState(cur, IPIPName, 0, nil, false)...)
	}

	if cur == nil {
		// Creating "tunl0" loads the ipip module where it is a module;
		// the module then makes tunl0 itself, hence EEXIST is fine.
		err := r.nl.LinkAdd(ipipLink(*d.ipip))
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			// rtnetlink's answer to an unknown link kind
			// ("Unknown device type").
			return []error{fmt.Errorf("add link %s type ipip: %w (%w)", IPIPName, ErrNoIPIP, err)}
		case !ignore(err, unix.EEXIST):
			return []error{fmt.Errorf("add link %s type ipip: %w", IPIPName, err)}
		}
		if cur, err = r.nl.LinkByName(IPIPName); err != nil {
			return []error{fmt.Errorf("get link %s after adding it: %w", IPIPName, err)}
		}
		if cur.Type() != "ipip" {
			return []error{fmt.Errorf("link %s exists with type %s, not ipip; delete it or rename it", IPIPName, cur.Type())}
		}
		r.log.Info("ipip device created", "link", IPIPName)
	}
	errs := r.linkState(cur, IPIPName, d.ipip.MTU, nil, true)
	return append(errs, r.onlyAddr(cur, IPIPName, d.ipip.Address)...)
}

// permanent reports an entry that only an administrator (or Wren) makes.
// It tests the bit, not the value: iproute2's "bridge fdb add ...
// permanent" writes NUD_NOARP|NUD_PERMANENT (0xc0), Wren and "ip neigh
// ... nud permanent" write NUD_PERMANENT (0x80).
func permanent(n netlink.Neigh) bool { return n.State&netlink.NUD_PERMANENT != 0 }
