package proxyarp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/internal/nsexec"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/sysctl"
)

var (
	gatewayIP   = net.ParseIP(Gateway).To4()
	gatewayNet  = &net.IPNet{IP: gatewayIP, Mask: net.CIDRMask(32, 32)}
	defaultDst4 = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
)

// SetupPod is the CNI ADD of one pod: it creates the veth pair between the
// node and the pod's network namespace and configures both ends. It is
// SetupPodWith with the host-side sysctls written in the caller's own
// network namespace, which is right for the CNI plugin: it runs in the
// node's namespace and host is bound to that same namespace. A caller whose
// host handle is bound elsewhere (a test driving a node namespace) must use
// SetupPodWith.
func SetupPod(ctx context.Context, host *netlink.Handle, podNS netns.NsHandle, w model.Workload, ifName string) error {
	return SetupPodWith(ctx, host, sysctl.FS{}, podNS, w, ifName)
}

// SetupPodWith creates the veth pair w.HostIface <-> ifName with host, a
// handle in the node's namespace, placing the peer directly in podNS (the
// calling goroutine never changes namespace), and configures:
//
//	node: w.HostIface  link/ether ee:ee:ee:ee:ee:ee, mtu w.MTU, up, no address,
//	      proxy_arp=1 forwarding=1 route_localnet=1 proxy_delay=0 accept_ra=0 (through hostSysctl)
//	pod:  ifName       mtu w.MTU, w.IP/32, up
//	      169.254.1.1 dev ifName scope link
//	      default via 169.254.1.1 dev ifName
//
// hostSysctl must address the /proc/sys of host's namespace.
//
// It is idempotent: when the pair already exists and joins this host link
// to ifName in podNS, it is re-configured in place, so a repeated ADD
// succeeds without change. A host link with the name that is not that pair
// (any non-veth, or a veth whose peer lives elsewhere), or an existing
// ifName in the pod, is an error naming the pod and the link. If setup
// fails after the pair was created, the pair is removed again (deleting
// either end of a veth deletes both), so no half-made host link stays
// behind.
func SetupPodWith(ctx context.Context, host *netlink.Handle, hostSysctl sysctl.FS, podNS netns.NsHandle, w model.Workload, ifName string) error {
	if err := validateWorkload(w); err != nil {
		return err
	}
	if err := validIfName(ifName); err != nil {
		return podError(w, fmt.Errorf("pod interface: %w", err))
	}
	if host == nil {
		return podError(w, errors.New("no netlink handle for the node namespace"))
	}
	if err := checkNetNS(podNS); err != nil {
		return podError(w, err)
	}
	if err := ctx.Err(); err != nil {
		return podError(w, err)
	}
	// The pod's netlink socket is opened on a helper thread that joins
	// podNS (a socket stays in the namespace it was created in), so the
	// calling goroutine's thread never changes namespace. podNS must be
	// open: for a closed handle both nsexec and netlink.NewHandleAt would
	// quietly stay in the caller's namespace; checkNetNS rules that out.
	var pod *netlink.Handle
	err := nsexec.Do(podNS, func() error {
		var err error
		pod, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return podError(w, fmt.Errorf("open netlink in the pod netns: %w", err))
	}
	defer pod.Close()

	hostLink, created, err := ensurePair(host, pod, podNS, w, ifName)
	if err != nil {
		return podError(w, err)
	}
	err = configurePair(ctx, host, hostSysctl, pod, hostLink, w, ifName)
	if err != nil && created {
		if derr := host.LinkDel(hostLink); derr != nil && !isNotFound(derr) {
			err = fmt.Errorf("%w; remove half-made %s: %w", err, w.HostIface, derr)
		}
	}
	if err != nil {
		return podError(w, err)
	}
	return nil
}

// checkNetNS makes sure ns is an open network namespace handle. The kernel
// is asked (NS_GET_NSTYPE), so a closed handle, a descriptor number that
// was closed (or reused by a file of another kind) and a namespace of
// another type are all caught before anything is created.
func checkNetNS(ns netns.NsHandle) error {
	if ns <= 0 {
		return fmt.Errorf("network namespace handle %d is closed (pod namespace gone?)", int(ns))
	}
	t, err := unix.IoctlRetInt(int(ns), unix.NS_GET_NSTYPE)
	switch {
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("network namespace handle %d is not open (pod namespace gone?): %w", int(ns), err)
	case err != nil:
		return fmt.Errorf("descriptor %d is not a namespace: %w", int(ns), err)
	case t != unix.CLONE_NEWNET:
		return fmt.Errorf("descriptor %d is a namespace but not a network namespace (type %#x)", int(ns), t)
	}
	return nil
}

// ensurePair finds the pod's existing veth pair or creates it. created
// reports whether this call made it.
func ensurePair(host, pod *netlink.Handle, podNS netns.NsHandle, w model.Workload, ifName string) (hostLink netlink.Link, created bool, err error) {
	hl, err := host.LinkByName(w.HostIface)
	if err != nil && !isNotFound(err) {
		return nil, false, fmt.Errorf("look up %s: %w", w.HostIface, err)
	}
	pl, err := pod.LinkByName(ifName)
	if err != nil && !isNotFound(err) {
		return nil, false, fmt.Errorf("look up %s in the pod netns: %w", ifName, err)
	}
	if hl != nil {
		if err := samePair(host, podNS, hl, pl, ifName); err != nil {
			return nil, false, fmt.Errorf("link %s already exists and is not this pod's veth: %w", w.HostIface, err)
		}
		return hl, false, nil
	}
	if pl != nil {
		return nil, false, fmt.Errorf("interface %s already exists in the pod netns (a %s)", ifName, pl.Type())
	}

	la := netlink.NewLinkAttrs()
	la.Name = w.HostIface
	la.MTU = w.MTU
	la.HardwareAddr = hostMAC
	v := &netlink.Veth{
		LinkAttrs:     la,
		PeerName:      ifName,
		PeerMTU:       uint32(w.MTU),
		PeerNamespace: netlink.NsFd(int(podNS)),
	}
	if err := host.LinkAdd(v); err != nil {
		return nil, false, fmt.Errorf("create veth %s <-> %s in the pod netns: %w", w.HostIface, ifName, err)
	}
	hl, err = host.LinkByName(w.HostIface)
	if err != nil {
		// Not expected: remove what was made, before giving up.
		if derr := host.LinkDel(v); derr != nil && !isNotFound(derr) {
			err = fmt.Errorf("%w; remove half-made %s: %w", err, w.HostIface, derr)
		}
		return nil, false, fmt.Errorf("look up new veth %s: %w", w.HostIface, err)
	}
	return hl, true, nil
}

// samePair reports (as an error saying why not) whether hl, in host's
// namespace, and pl, in podNS, are the two ends of one veth. Interface
// indexes are per namespace, so the indexes alone could match by chance;
// the peer's namespace id, as host's namespace knows it, settles it.
func samePair(host *netlink.Handle, podNS netns.NsHandle, hl, pl netlink.Link, ifName string) error {
	if t := hl.Type(); t != "veth" {
		return fmt.Errorf("it is a %s, not a veth", t)
	}
	if pl == nil {
		return fmt.Errorf("its peer is not %s in the pod netns (no %s there)", ifName, ifName)
	}
	ha, pa := hl.Attrs(), pl.Attrs()
	if pl.Type() != "veth" || ha.ParentIndex != pa.Index || pa.ParentIndex != ha.Index {
		return fmt.Errorf("its peer is ifindex %d in netnsid %d, not %s (ifindex %d) in the pod netns", ha.ParentIndex, ha.NetNsID, ifName, pa.Index)
	}
	nsid, err := host.GetNetNsIdByFd(int(podNS))
	if err != nil {
		return fmt.Errorf("look up the pod netns id: %w", err)
	}
	if ha.NetNsID < 0 || ha.NetNsID != nsid {
		return fmt.Errorf("its peer is in netnsid %d, the pod netns is %d", ha.NetNsID, nsid)
	}
	return nil
}

// configurePair configures the host end, then the pod end. The host end
// is made ready (MAC, sysctls, up) before the pod end comes up, so the
// pod's very first ARP for 169.254.1.1 is answered.
func configurePair(ctx context.Context, host *netlink.Handle, fs sysctl.FS, pod *netlink.Handle, hl netlink.Link, w model.Workload, ifName string) error {
	ha := hl.Attrs()
	if ha.MTU != w.MTU {
		if err := host.LinkSetMTU(hl, w.MTU); err != nil {
			return fmt.Errorf("set %s mtu %d: %w", ha.Name, w.MTU, err)
		}
	}
	if !bytes.Equal(ha.HardwareAddr, hostMAC) {
		if err := host.LinkSetHardwareAddr(hl, hostMAC); err != nil {
			return fmt.Errorf("set %s address %s: %w", ha.Name, HostMAC, err)
		}
	}
	if errs := setHostSysctls(fs, ha.Name); len(errs) > 0 {
		// The link is about to be removed again; the first failure says why.
		err := errs[0]
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%w (is the sysctl tree that of the node handle's namespace?)", err)
		}
		return err
	}
	if ha.Flags&net.FlagUp == 0 {
		if err := host.LinkSetUp(hl); err != nil {
			return fmt.Errorf("set %s up: %w", ha.Name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	pl, err := pod.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s in the pod netns: %w", ifName, err)
	}
	pa := pl.Attrs()
	if pa.MTU != w.MTU {
		if err := pod.LinkSetMTU(pl, w.MTU); err != nil {
			return fmt.Errorf("set pod %s mtu %d: %w", ifName, w.MTU, err)
		}
	}
	// A /32: the pod shares no subnet with anybody, so every destination
	// is off-link and goes to the gateway.
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: w.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := pod.AddrReplace(pl, addr); err != nil {
		return fmt.Errorf("add %s/32 to pod %s: %w", w.IP, ifName, err)
	}
	if pa.Flags&net.FlagUp == 0 {
		if err := pod.LinkSetUp(pl); err != nil {
			return fmt.Errorf("set pod %s up: %w", ifName, err)
		}
	}
	// 169.254.1.1 is in no subnet of the pod, so the kernel needs a link
	// route to accept it as a gateway: "169.254.1.1 dev eth0 scope link".
	gw := &netlink.Route{LinkIndex: pa.Index, Dst: gatewayNet, Scope: netlink.SCOPE_LINK}
	if err := pod.RouteReplace(gw); err != nil {
		return fmt.Errorf("add route %s dev %s scope link in the pod: %w", Gateway, ifName, err)
	}
	def := &netlink.Route{LinkIndex: pa.Index, Dst: defaultDst4, Gw: gatewayIP}
	if err := pod.RouteReplace(def); err != nil {
		return fmt.Errorf("add route default via %s dev %s in the pod: %w", Gateway, ifName, err)
	}
	return nil
}

// TeardownPod is the CNI DEL of one pod: it deletes the host-side veth
// (which deletes the pod's end with it). A missing link is success, so a
// repeated DEL, or a DEL after the pod's namespace (and with it the pair)
// is gone, succeeds. A link with the name that is not a veth is left alone
// and reported.
func TeardownPod(host *netlink.Handle, w model.Workload) error {
	if !isCaliName(w.HostIface) {
		return podError(w, fmt.Errorf("host interface %q is not a %s* name", w.HostIface, Prefix))
	}
	l, err := host.LinkByName(w.HostIface)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return podError(w, fmt.Errorf("look up %s: %w", w.HostIface, err))
	}
	if t := l.Type(); t != "veth" {
		return podError(w, fmt.Errorf("link %s is a %s, not a veth; not deleting it", w.HostIface, t))
	}
	if err := host.LinkDel(l); err != nil && !isNotFound(err) {
		return podError(w, fmt.Errorf("delete %s: %w", w.HostIface, err))
	}
	return nil
}

// isCaliName reports whether name is a valid interface name in our
// namespace of names.
func isCaliName(name string) bool {
	return len(name) > len(Prefix) && name[:len(Prefix)] == Prefix && validIfName(name) == nil
}
