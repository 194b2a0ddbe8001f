// Package proxyarp builds the two ends of Calico-style pod networking: the
// host-side "cali*" veth and the pod-side eth0.
//
// The pod gets its address as a /32 on eth0, a link-scope route to
// 169.254.1.1 and a default route via 169.254.1.1. Nothing in the pod knows
// the node's addresses, and there is no subnet to share: every pod is alone
// on its own point-to-point link, so moving or renumbering pods never
// touches another pod's configuration.
//
// Nobody owns 169.254.1.1. When the pod ARPs for it, the host end of the
// veth answers by proxy ARP (net.ipv4.conf.<cali>.proxy_arp=1) with its own
// MAC, ee:ee:ee:ee:ee:ee; from then on the pod sends everything to the host,
// which routes it like any other packet (the /32 route to each pod,
// "10.244.1.5 dev caliX scope link", is programmed by pkg/routes). The pod
// holds no static ARP entry, so its neighbour table looks like any other
// host's (Calico's "no static ARP" behaviour, which operators rely on).
//
// The kernel answers a proxy ARP request only if all of these hold (see
// arp_process in net/ipv4/arp.c): forwarding is on for the cali link (the
// request is resolved as a forwarded route lookup), the host has a route to
// 169.254.1.1 that leaves through another interface (normally the node's
// default route), and proxy_arp is on for the cali link. proxy_delay=0 makes
// the answer immediate; the kernel default delays answers to broadcast
// requests by up to 0.8 s so that a real owner could answer first, which on
// a point-to-point veth only slows every pod's first packet.
//
// SetupPod and TeardownPod are the CNI plugin's half (ADD and DEL). The
// Reconciler is the agent's half: a level-triggered repair of the host ends
// and the sweep of cali veths whose pod is gone.
package proxyarp

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/sysctl"
)

// HostMAC is the MAC address of every host-side cali veth, and so the
// address every pod resolves 169.254.1.1 to. One fixed value (Calico's)
// means a pod's neighbour entry never goes stale when its veth is
// re-created, and operators recognise it in "ip neigh" inside a pod. It is
// locally administered (bit 1 of the first octet), so it cannot collide with
// a vendor-assigned address, and it is only ever seen on point-to-point
// veths, so sharing it between pods is harmless.
const HostMAC = "ee:ee:ee:ee:ee:ee"

// Gateway is the pod's default gateway. It is a link-local address (RFC
// 3927) that no host or pod ever configures: the host answers ARP for it by
// proxy, so the pod needs no knowledge of node addresses and every pod on
// every node has the same gateway.
const Gateway = "169.254.1.1"

// Prefix starts the name of every host-side pod veth. It is the ownership
// marker: links named otherwise are never touched.
const Prefix = "cali"

// maxIfName is IFNAMSIZ-1, the longest interface name Linux accepts.
const maxIfName = 15

// VethName returns the host-side veth name of a pod: "cali" followed by the
// first 11 hex digits of sha1("<namespace>.<pod>"), 15 characters in all
// (IFNAMSIZ-1). It is Calico's scheme, so names survive a migration and
// operators' scripts keep working.
func VethName(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return Prefix + hex.EncodeToString(sum[:])[:maxIfName-len(Prefix)]
}

// Config configures the host-side Reconciler.
type Config struct {
	// Sysctl is the /proc/sys of the node's network namespace, where the
	// per-interface settings of the cali links live.
	Sysctl sysctl.FS
	// SysctlRecheck is how often Apply re-reads the sysctls of a link
	// it already found (or made) right; a new link (a new ifindex) is
	// always checked at once. Reading five files per pod on every sync
	// would make each sync cost more with every pod. Default 1 minute.
	SysctlRecheck time.Duration
	// Logger receives repairs and orphan deletions at Info, per-link
	// lines at Debug.
	Logger *slog.Logger
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SysctlRecheck == 0 {
		c.SysctlRecheck = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration the reconciler cannot work with.
func (c Config) Validate() error {
	if c.Logger == nil {
		return fmt.Errorf("proxyarp: logger is nil (call Defaults)")
	}
	if r := c.Sysctl.Root; r != "" && (!filepath.IsAbs(r) || filepath.Clean(r) != r) {
		return fmt.Errorf("proxyarp: sysctl root %q must be a clean absolute path", r)
	}
	if c.SysctlRecheck < 0 {
		return fmt.Errorf("proxyarp: sysctl recheck interval %s is negative", c.SysctlRecheck)
	}
	if c.Sysctl.NS < -1 {
		return fmt.Errorf("proxyarp: sysctl namespace handle %d is not a file descriptor", int(c.Sysctl.NS))
	}
	return nil
}

// podError names the workload and its host link in err, the form every
// per-pod error of this package takes.
func podError(w model.Workload, err error) error {
	return fmt.Errorf("pod %s (%s): %w", w.Key(), w.HostIface, err)
}

// validateWorkload checks what this package needs from a workload.
func validateWorkload(w model.Workload) error {
	var err error
	switch {
	case w.Namespace == "" || w.Name == "":
		err = fmt.Errorf("namespace and name are required")
	case !strings.HasPrefix(w.HostIface, Prefix):
		err = fmt.Errorf("host interface %q does not start with %q", w.HostIface, Prefix)
	case validIfName(w.HostIface) != nil:
		err = fmt.Errorf("host interface: %w", validIfName(w.HostIface))
	case !w.IP.IsValid() || !w.IP.Is4() || w.IP.IsUnspecified():
		err = fmt.Errorf("IP %q is not a usable IPv4 address", w.IP)
	case w.MTU < 68 || w.MTU > 65535:
		err = fmt.Errorf("MTU %d is outside 68-65535", w.MTU)
	}
	if err != nil {
		return podError(w, err)
	}
	return nil
}

// validIfName applies the kernel's rules for interface names
// (dev_valid_name): 1-15 bytes, no '/', ':' or white space, not "." or "..".
func validIfName(name string) error {
	switch {
	case name == "" || len(name) > maxIfName:
		return fmt.Errorf("interface name %q must be 1-%d bytes", name, maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	case strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}

// linkSysctl is one per-interface kernel setting of a host-side cali link.
type linkSysctl struct {
	format string // key with %s for the interface name
	value  string
	ipv6   bool // absent when IPv6 is disabled on the node; tolerated then
}

// hostSysctls make a cali link the pod's gateway.
var hostSysctls = []linkSysctl{
	// Answer the pod's ARP for 169.254.1.1 (and any other off-link
	// address it might ARP for) with the cali link's own MAC.
	{format: "net/ipv4/conf/%s/proxy_arp", value: "1"},
	// Per-interface IPv4 forwarding controls whether packets received on
	// the link may be forwarded. It is also what lets the kernel answer
	// proxy ARP at all: the ARP target is resolved as a forwarded route,
	// which fails with EHOSTUNREACH when forwarding is off on the link.
	{format: "net/ipv4/conf/%s/forwarding", value: "1"},
	// Let pod traffic be DNATed to 127.0.0.0/8 on the node (hostPort and
	// node-local services implemented with DNAT to localhost); without it
	// the kernel drops such packets as martians.
	{format: "net/ipv4/conf/%s/route_localnet", value: "1"},
	// Answer proxy ARP immediately instead of after a random delay of up
	// to proxy_delay (80 jiffies by default); nobody else is on the link.
	{format: "net/ipv4/neigh/%s/proxy_delay", value: "0"},
	// Never let a pod configure the node's IPv6 routing by sending router
	// advertisements into its veth.
	{format: "net/ipv6/conf/%s/accept_ra", value: "0", ipv6: true},
}

// setHostSysctls writes hostSysctls for the named link through fs. A
// missing IPv6 key (IPv6 disabled on the node) is tolerated; every other
// failure is returned, one error per key.
func setHostSysctls(fs sysctl.FS, name string) []error {
	kvs := make([]sysctl.KV, len(hostSysctls))
	for i, s := range hostSysctls {
		kvs[i] = sysctl.KV{Key: fmt.Sprintf(s.format, name), Value: s.value}
	}
	var errs []error
	for i, err := range fs.SetMany(kvs) {
		if err == nil || (hostSysctls[i].ipv6 && errors.Is(err, os.ErrNotExist)) {
			continue
		}
		errs = append(errs, err)
	}
	return errs
}

// EnableForwarding turns on IPv4 forwarding for the whole node
// (net/ipv4/ip_forward=1): the node routes between pods, tunnels and the
// underlay. Writing it also sets forwarding on every existing interface
// (the kernel propagates "all" to each device), which the per-link
// forwarding setting of cali links then keeps on.
func EnableForwarding(fs sysctl.FS) error {
	if err := fs.Set("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}
