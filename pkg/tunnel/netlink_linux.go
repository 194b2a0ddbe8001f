package tunnel

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

// Netlink is the part of *netlink.Handle the reconciler uses. Pass a
// handle made with netlink.NewHandleAt for the node's namespace.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetDown(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error
}

// LinkLister lists the links of a namespace; *netlink.Handle is one.
type LinkLister interface {
	LinkList() ([]netlink.Link, error)
}

var (
	_ Netlink    = (*netlink.Handle)(nil)
	_ LinkLister = (*netlink.Handle)(nil)
)

// vxlanLink is the desired vxlan.calico device.
//
// Learning is off because every remote VTEP is programmed from the
// cluster's state: a learning device would add FDB entries from the outer
// source of any packet that arrives, letting a stale or spoofed packet
// redirect a MAC. With no group and no default (all-zeros) FDB entry,
// unknown destinations are dropped instead of flooded.
//
// The device is bound to the node IP (local) and to its uplink (dev), so
// the outer packets leave from the address the other nodes have in their
// FDB entries, whatever the routing table would pick.
func vxlanLink(d model.VXLAN, parentIndex int) *netlink.Vxlan {
	la := netlink.NewLinkAttrs()
	la.Name = VXLANName
	la.MTU = d.MTU
	la.HardwareAddr = slices.Clone(d.MAC)
	la.Flags = net.FlagUp
	return &netlink.Vxlan{
		LinkAttrs:    la,
		VxlanId:      cmp.Or(d.VNI, VXLANVNI),
		VtepDevIndex: parentIndex,
		SrcAddr:      net.IP(d.LocalIP.AsSlice()),
		Port:         cmp.Or(d.Port, VXLANPort),
		Learning:     false,
	}
}

// vxlanIncompat says why an existing vxlan device cannot be turned into
// want in place ("" if it can). The kernel refuses to change most VXLAN
// attributes of an existing device (changelink rejects a new VNI, local
// address or port on a running device), so these mean delete and
// recreate; MTU, MAC and up/down are changed in place.
func vxlanIncompat(cur, want *netlink.Vxlan) string {
	var why []string
	if cur.VxlanId != want.VxlanId {
		why = append(why, fmt.Sprintf("vni %d, want %d", cur.VxlanId, want.VxlanId))
	}
	if cur.Port != want.Port {
		why = append(why, fmt.Sprintf("dstport %d, want %d", cur.Port, want.Port))
	}
	if !cur.SrcAddr.Equal(want.SrcAddr) {
		why = append(why, fmt.Sprintf("local %s, want %s", ipString(cur.SrcAddr), want.SrcAddr))
	}
	if cur.VtepDevIndex != want.VtepDevIndex {
		why = append(why, fmt.Sprintf("dev index %d, want %d", cur.VtepDevIndex, want.VtepDevIndex))
	}
	if cur.Learning {
		why = append(why, "learning on, want nolearning")
	}
	if len(cur.Group) > 0 && !cur.Group.IsUnspecified() {
		why = append(why, fmt.Sprintf("group/remote %s, want none", cur.Group))
	}
	if cur.FlowBased {
		why = append(why, "external (flow-based), want a fixed VNI")
	}
	return strings.Join(why, "; ")
}

func ipString(ip net.IP) string {
	if len(ip) == 0 {
		return "none"
	}
	return ip.String()
}

// ipipLink is the tunl0 device to create where the ipip module has not
// already made it. ttl 0 ("inherit") with path-MTU discovery on is how the
// module's own fallback tunl0 is set up.
func ipipLink(d model.IPIP) *netlink.Iptun {
	la := netlink.NewLinkAttrs()
	la.Name = IPIPName
	la.MTU = d.MTU
	la.Flags = net.FlagUp
	return &netlink.Iptun{LinkAttrs: la, PMtuDisc: 1}
}

// hostAddr is a tunnel device's address: a /32, so the device gets no
// connected subnet route (see the package comment).
func hostAddr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}}
}

// vtepNeigh is the ARP entry "TunnelIP lladdr MAC nud permanent" on
// vxlan.calico. Routes to a remote node's blocks go "via <its tunnel IP>
// dev vxlan.calico onlink"; this entry resolves that gateway to the remote
// VTEP MAC without ARP over the overlay. Permanent, because the kernel
// never expires or re-probes permanent entries, so the data path keeps
// working while the agent restarts.
func vtepNeigh(linkIndex int, v model.VTEP) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    linkIndex,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		Type:         unix.RTN_UNICAST,
		IP:           net.IP(v.TunnelIP.AsSlice()),
		HardwareAddr: slices.Clone(v.MAC),
	}
}

// vtepFDB is the VXLAN forwarding entry "MAC dst NodeIP self permanent":
// frames for the remote VTEP MAC are encapsulated to the remote node's IP.
// NTF_SELF puts it in the vxlan device's own table (not a bridge's); it is
// permanent for the same reason as vtepNeigh, and with learning off it is
// the only way the device knows where a MAC lives.
func vtepFDB(linkIndex int, v model.VTEP) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    linkIndex,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(v.NodeIP.AsSlice()),
		HardwareAddr: slices.Clone(v.MAC),
	}
}

// addrOf converts a netlink IP to netip, IPv4-mapped forms unmapped.
func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// retryDump repeats a netlink dump the kernel interrupted because the
// table changed under it; v1.3.1 returns ErrDumpInterrupted (with partial
// results) instead of retrying.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// notFound reports a missing link. netlink's LinkByName turns ENODEV into
// a LinkNotFoundError that does not wrap the errno, so check both.
func notFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

// ignore reports whether err is nil or one of the errnos that mean the
// kernel already has the state we asked for.
func ignore(err error, ok ...unix.Errno) bool {
	if err == nil {
		return true
	}
	for _, e := range ok {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
