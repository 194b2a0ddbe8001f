// Package tunnel reconciles the node's two encapsulation devices, the way
// Calico lays them out so operators' "ip -d link" checks keep working:
//
//   - vxlan.calico: a VXLAN (RFC 7348) device, VNI 4096, UDP port 4789,
//     bound to the node IP on its uplink, with learning off. Remote VTEPs
//     are programmed statically: per remote node a permanent neighbour
//     (its tunnel IP -> its VTEP MAC) and a permanent FDB entry (its VTEP
//     MAC -> its node IP). The kernel then neither ARPs across the overlay
//     nor floods unknown unicast, and nothing expires while the agent is
//     down.
//   - tunl0: the IP-in-IP (RFC 2003) fallback device the ipip module puts
//     in every network namespace. It is shared by nature, so it is never
//     deleted: without IPIP it only loses its address and goes down.
//
// Each device carries exactly one IPv4 address, the node's tunnel address
// as a /32. The address is the source the node uses for traffic it sends
// to remote pods itself (so replies come back through the tunnel); a /32
// adds no connected subnet route to the device, so every remote block is
// reached only through its own "via ... onlink" route from pkg/routes.
//
// Set stores the desired state and does no I/O; Apply reads the devices
// and entries Wren owns (by name: vxlan.calico and tunl0; by state:
// permanent entries on vxlan.calico), writes additions and changes before
// removals, and returns the joined per-object errors.
package tunnel

import (
	"cmp"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/wren-net/wren/pkg/model"
)

// Device names, as in Calico.
const (
	// VXLANName is the VXLAN device.
	VXLANName = "vxlan.calico"
	// IPIPName is the IPIP device; the ipip module creates it in every
	// network namespace as the fallback tunnel (no local, no remote), which
	// receives all IPIP packets not claimed by a more specific tunnel.
	IPIPName = "tunl0"
)

// VXLAN parameters, as in Calico.
const (
	// VXLANVNI is the VXLAN network identifier all nodes share.
	VXLANVNI = 4096
	// VXLANPort is the IANA VXLAN UDP port (RFC 7348). Linux defaults to
	// the pre-standard 8472, so it is always set explicitly.
	VXLANPort = 4789
)

// Encapsulation overheads subtracted from the host MTU for the pod MTU.
const (
	// VXLANOverhead is outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
	// Ethernet (14) header bytes.
	VXLANOverhead = 50
	// IPIPOverhead is the outer IPv4 header.
	IPIPOverhead = 20
)

// DefaultIfacePattern is Calico's default MTU interface pattern: the names
// that physical uplinks get from udev (en*, wl*, ww*, sl*, ib* with a
// type letter) and from older naming (eth*, wlan*, wwan*).
const DefaultIfacePattern = `^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan).*)`

// ErrNoIPIP is wrapped by Apply's error when IPIP is wanted but the kernel
// cannot create an ipip device.
var ErrNoIPIP = errors.New("kernel lacks ipip support (CONFIG_NET_IPIP / ipip module); use vxlanMode or no encapsulation")

// VTEPMAC returns the VXLAN device MAC Calico derives from a node name:
// 0x66 followed by the first five bytes of sha1(name). 0x66 has the
// locally-administered bit set and the multicast bit clear, and every node
// can compute every other node's MAC without coordination.
func VTEPMAC(nodeName string) net.HardwareAddr {
	sum := sha1.Sum([]byte(nodeName))
	return net.HardwareAddr{0x66, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// Config configures a Reconciler.
type Config struct {
	// Logger receives device transitions at Info and per-entry lines at
	// Debug. Nil means slog.Default().
	Logger *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration the reconciler cannot run with.
func (c Config) Validate() error {
	if c.Logger == nil {
		return errors.New("tunnel config: logger is nil (call Defaults)")
	}
	return nil
}

// desired is Set's validated copy of model.Tunnels.
type desired struct {
	vxlan    *model.VXLAN // nil: vxlan.calico must not exist
	vxlanErr error        // invalid VXLAN: the device is left as it is
	ipip     *model.IPIP  // nil: tunl0 carries no address and is down
	ipipErr  error        // invalid IPIP: tunl0 is left as it is
	vteps    []model.VTEP // valid VTEPs, sorted by node
	vtepErrs []error
	// holdNeigh / holdFDB name the tunnel IPs and node IPs of invalid
	// VTEPs: their existing entries are kept rather than swept, so a bad
	// input degrades to "not updated" instead of "node unreachable".
	holdNeigh map[netip.Addr]bool
	holdFDB   map[netip.Addr]bool
}

// normalize validates t and copies it, so the caller may reuse its slices.
func normalize(t model.Tunnels) desired {
	d := desired{holdNeigh: map[netip.Addr]bool{}, holdFDB: map[netip.Addr]bool{}}
	if t.VXLAN != nil {
		v := *t.VXLAN
		v.VNI = cmp.Or(v.VNI, VXLANVNI)
		v.Port = cmp.Or(v.Port, VXLANPort)
		v.MAC = slices.Clone(v.MAC)
		if err := validateVXLAN(v); err != nil {
			d.vxlanErr = err
		} else {
			d.vxlan = &v
		}
	}
	if t.IPIP != nil {
		v := *t.IPIP
		if err := validateIPIP(v); err != nil {
			d.ipipErr = err
		} else {
			d.ipip = &v
		}
	}
	if t.VXLAN == nil {
		// No device, no entries: VTEPs only mean something on
		// vxlan.calico, and the agent sends none in other modes.
		return d
	}

	vteps := make([]model.VTEP, 0, len(t.VTEPs))
	for _, v := range t.VTEPs {
		v.MAC = slices.Clone(v.MAC)
		vteps = append(vteps, v)
	}
	slices.SortStableFunc(vteps, func(a, b model.VTEP) int { return strings.Compare(a.Node, b.Node) })
	byTunnel := map[netip.Addr]string{}
	byMAC := map[string]string{}
	for _, v := range vteps {
		err := validateVTEP(v)
		if err == nil && d.vxlan != nil && v.TunnelIP == d.vxlan.Address {
			err = fmt.Errorf("vtep of node %q: tunnel IP %s is this node's own VXLAN address", v.Node, v.TunnelIP)
		}
		if err == nil {
			if other, dup := byTunnel[v.TunnelIP]; dup {
				err = fmt.Errorf("vtep of node %q: tunnel IP %s is already the VTEP of node %q", v.Node, v.TunnelIP, other)
			} else if other, dup := byMAC[v.MAC.String()]; dup {
				err = fmt.Errorf("vtep of node %q: MAC %s is already the VTEP of node %q", v.Node, v.MAC, other)
			}
		}
		if err != nil {
			d.vtepErrs = append(d.vtepErrs, err)
			if v.TunnelIP.Is4() {
				d.holdNeigh[v.TunnelIP] = true
			}
			if v.NodeIP.Is4() {
				d.holdFDB[v.NodeIP] = true
			}
			continue
		}
		byTunnel[v.TunnelIP] = v.Node
		byMAC[v.MAC.String()] = v.Node
		d.vteps = append(d.vteps, v)
	}
	return d
}

func validateVXLAN(v model.VXLAN) error {
	switch {
	case v.VNI < 1 || v.VNI > 1<<24-1:
		return fmt.Errorf("%s: VNI %d is outside 1-16777215", VXLANName, v.VNI)
	case v.Port < 1 || v.Port > 65535:
		return fmt.Errorf("%s: port %d is outside 1-65535", VXLANName, v.Port)
	case !v.LocalIP.Is4():
		return fmt.Errorf("%s: local (node) IP %q is not an IPv4 address", VXLANName, v.LocalIP)
	case v.Parent == "":
		return fmt.Errorf("%s: no parent device for local IP %s", VXLANName, v.LocalIP)
	case !v.Address.Is4():
		return fmt.Errorf("%s: tunnel address %q is not an IPv4 address", VXLANName, v.Address)
	case v.MTU != 0 && (v.MTU < 68 || v.MTU > 65535):
		return fmt.Errorf("%s: MTU %d is outside 68-65535", VXLANName, v.MTU)
	}
	if err := unicastMAC(v.MAC); err != nil {
		return fmt.Errorf("%s: %w", VXLANName, err)
	}
	return nil
}

func validateIPIP(v model.IPIP) error {
	switch {
	case !v.Address.Is4():
		return fmt.Errorf("%s: tunnel address %q is not an IPv4 address", IPIPName, v.Address)
	case v.MTU != 0 && (v.MTU < 68 || v.MTU > 65535):
		return fmt.Errorf("%s: MTU %d is outside 68-65535", IPIPName, v.MTU)
	}
	return nil
}

func validateVTEP(v model.VTEP) error {
	switch {
	case v.Node == "":
		return fmt.Errorf("vtep with tunnel IP %s: node name is empty", v.TunnelIP)
	case !v.NodeIP.Is4():
		return fmt.Errorf("vtep of node %q: node IP %q is not an IPv4 address", v.Node, v.NodeIP)
	case !v.TunnelIP.Is4():
		return fmt.Errorf("vtep of node %q: tunnel IP %q is not an IPv4 address", v.Node, v.TunnelIP)
	}
	if err := unicastMAC(v.MAC); err != nil {
		return fmt.Errorf("vtep of node %q: %w", v.Node, err)
	}
	return nil
}

// unicastMAC rejects what cannot be a VTEP's address: a multicast (or
// broadcast) MAC would make the FDB entry a flooding rule.
func unicastMAC(m net.HardwareAddr) error {
	switch {
	case len(m) != 6:
		return fmt.Errorf("MAC %q is not a 6-byte Ethernet address", m.String())
	case m[0]&1 != 0:
		return fmt.Errorf("MAC %s is a multicast address", m)
	case slices.Equal(m, net.HardwareAddr{0, 0, 0, 0, 0, 0}):
		return fmt.Errorf("MAC %s is all zeros", m)
	}
	return nil
}
