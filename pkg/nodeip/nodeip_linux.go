// Package nodeip finds the node's underlay address with Calico's
// autodetection methods (first-found, interface=, skip-interface=,
// can-reach=, cidr=, kubernetes-internal-ip), with the interface's real
// prefix length: CrossSubnet compares subnets with it (Calico #2375).
package nodeip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
)

// AddrSource is what node IP detection reads from the kernel;
// *netlink.Handle satisfies it. RouteGet asks the kernel which source
// address it would use, without sending anything.
type AddrSource interface {
	LinkList() ([]netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	RouteGet(dst net.IP) ([]netlink.Route, error)
}

// skipByDefault are interfaces that never carry the node address, as in
// Calico's first-found (container bridges, our own devices, tunnels).
var skipByDefault = regexp.MustCompile(`^(lo|docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|cali.*|tunl.*|flannel.*|kube-ipvs.*|cni.*|vxlan.*|wg.*|br-.*)$`)

// NodeIP is the detected underlay address and the interface carrying it.
type NodeIP struct {
	Addr  netip.Prefix // with the interface's real prefix length
	Iface string
}

// Detect finds the node's IPv4 address by one of Calico's methods:
//
//	first-found             first global IPv4 on an interface not skipped by default
//	interface=REGEX         first address on an interface matching REGEX
//	skip-interface=REGEX    first-found, also skipping interfaces matching REGEX
//	can-reach=IP            the source address the kernel would use towards IP
//	cidr=CIDR[,CIDR...]     first address inside one of the CIDRs
//	kubernetes-internal-ip  the Node's InternalIP (internalIP supplies it)
//
// The prefix length is the interface's: CrossSubnet decisions compare
// subnets, and a /32 would make every peer look remote (Calico #2375).
func Detect(method string, src AddrSource, internalIP func() (netip.Addr, error)) (NodeIP, error) {
	kind, arg, _ := strings.Cut(method, "=")
	switch kind {
	case "", "first-found":
		return firstMatch(src, func(name string) bool { return !skipByDefault.MatchString(name) }, nil)
	case "interface":
		re, err := regexp.Compile(arg)
		if err != nil {
			return NodeIP{}, fmt.Errorf("node IP method %q: bad regexp: %w", method, err)
		}
		return firstMatch(src, func(name string) bool { return re.MatchString(name) }, nil)
	case "skip-interface":
		re, err := regexp.Compile(arg)
		if err != nil {
			return NodeIP{}, fmt.Errorf("node IP method %q: bad regexp: %w", method, err)
		}
		return firstMatch(src, func(name string) bool { return !skipByDefault.MatchString(name) && !re.MatchString(name) }, nil)
	case "cidr":
		var cidrs []netip.Prefix
		for _, c := range strings.Split(arg, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				return NodeIP{}, fmt.Errorf("node IP method %q: %w", method, err)
			}
			cidrs = append(cidrs, p)
		}
		return firstMatch(src, func(string) bool { return true }, func(a netip.Addr) bool {
			for _, c := range cidrs {
				if c.Contains(a) {
					return true
				}
			}
			return false
		})
	case "can-reach":
		dst, err := netip.ParseAddr(arg)
		if err != nil || !dst.Is4() {
			return NodeIP{}, fmt.Errorf("node IP method %q: want an IPv4 address", method)
		}
		rs, err := src.RouteGet(net.IP(dst.AsSlice()))
		if err != nil || len(rs) == 0 || rs[0].Src == nil {
			return NodeIP{}, fmt.Errorf("node IP method %q: no route to %s: %w", method, dst, err)
		}
		want, _ := netip.AddrFromSlice(rs[0].Src.To4())
		return firstMatch(src, func(string) bool { return true }, func(a netip.Addr) bool { return a == want })
	case "kubernetes-internal-ip":
		if internalIP == nil {
			return NodeIP{}, errors.New("node IP method kubernetes-internal-ip: the Node's addresses are not available")
		}
		want, err := internalIP()
		if err != nil {
			return NodeIP{}, fmt.Errorf("node IP method kubernetes-internal-ip: %w", err)
		}
		return firstMatch(src, func(string) bool { return true }, func(a netip.Addr) bool { return a == want })
	}
	return NodeIP{}, fmt.Errorf("node IP method %q: unknown; use first-found, interface=, skip-interface=, can-reach=, cidr= or kubernetes-internal-ip", method)
}

// firstMatch returns the first global-unicast IPv4 address, in interface
// index order, on an interface accepted by iface and accepted by ok.
func firstMatch(src AddrSource, iface func(string) bool, ok func(netip.Addr) bool) (NodeIP, error) {
	links, err := src.LinkList()
	if err != nil {
		return NodeIP{}, fmt.Errorf("list links: %w", err)
	}
	var seen []string
	for _, l := range links {
		name := l.Attrs().Name
		if !iface(name) {
			continue
		}
		addrs, err := src.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return NodeIP{}, fmt.Errorf("list addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP.To4())
			if !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() {
				continue
			}
			seen = append(seen, name+" "+ip.String())
			if ok != nil && !ok(ip) {
				continue
			}
			bits, _ := a.Mask.Size()
			return NodeIP{Addr: netip.PrefixFrom(ip, bits), Iface: name}, nil
		}
	}
	if len(seen) == 0 {
		return NodeIP{}, errors.New("no interface has a usable IPv4 address")
	}
	return NodeIP{}, fmt.Errorf("no matching IPv4 address among %s", strings.Join(seen, ", "))
}
