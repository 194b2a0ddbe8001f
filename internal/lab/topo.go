//go:build linux

package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// nodeName is node n's Node name.
func nodeName(n int) string { return fmt.Sprintf("node-%d", n) }

// NodeNS is node n's network namespace.
func (l *Lab) NodeNS(n int) string { return l.cfg.Prefix + nodeName(n) }

// APINS is the control plane's network namespace.
func (l *Lab) APINS() string { return l.cfg.Prefix + "api" }

// RouterNS is the router's network namespace.
func (l *Lab) RouterNS() string { return l.cfg.Prefix + "router" }

// remote reports whether node n sits on the second subnet, behind the
// router: node 3 in vxlan and tor modes.
func (l *Lab) remote(n int) bool { return n == 3 && l.cfg.Mode != ModeBGP }

// NodeIP is node n's underlay address (no prefix length).
func (l *Lab) NodeIP(n int) string {
	if l.remote(n) {
		return fmt.Sprintf("198.18.1.%d", 10+n)
	}
	return fmt.Sprintf("198.18.0.%d", 10+n)
}

func (l *Lab) nodeGW(n int) string {
	if l.remote(n) {
		return "198.18.1.1"
	}
	return "198.18.0.1"
}

func (l *Lab) nodeSwitch(n int) string {
	if l.remote(n) {
		return l.cfg.Prefix + "sw2"
	}
	return l.cfg.Prefix + "sw1"
}

// nodeAS is node n's AS: in tor mode each node has its own (64512+n), as
// in Calico's AS-per-node top-of-rack design, so a route the TOR passes
// from one node to another does not carry the receiver's AS.
func (l *Lab) nodeAS(n int) int {
	if l.cfg.Mode == ModeTOR {
		return 64512 + n
	}
	return 64512
}

// nodeRack is the value of node n's "rack" label (the BGPPeers of tor
// mode select nodes by it).
func (l *Lab) nodeRack(n int) string {
	if l.remote(n) {
		return "r2"
	}
	return "r1"
}

// namespaces lists the existing network namespaces with the lab's prefix.
func (l *Lab) namespaces() []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.cfg.Prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// topology makes the namespaces: two switches (bridges), a router
// between their subnets, the control plane's namespace and the nodes'.
// Every veth is created with both ends already in lab namespaces, so no
// interface ever exists in the root namespace.
func (l *Lab) topology(ctx context.Context) error {
	for _, d := range []string{"logs", "pids", "nodes", "ns"} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			return err
		}
	}
	for name, v := range map[string]string{"mode": l.cfg.Mode, "assets": l.cfg.Assets, "prefix": l.cfg.Prefix} {
		if err := os.WriteFile(l.path(name), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	p := l.cfg.Prefix
	for _, ns := range []string{"sw1", "sw2", "router", "api"} {
		if err := l.addNS(ctx, p+ns); err != nil {
			return err
		}
	}
	for _, sw := range []string{p + "sw1", p + "sw2"} {
		if err := ipCmds(ctx, [][]string{
			{"-n", sw, "link", "add", "br0", "type", "bridge"},
			{"-n", sw, "link", "set", "br0", "up"},
		}); err != nil {
			return err
		}
	}
	if err := l.plug(ctx, l.RouterNS(), "eth0", p+"sw1", "router", "198.18.0.1/24"); err != nil {
		return err
	}
	if err := l.plug(ctx, l.RouterNS(), "eth1", p+"sw2", "router", "198.18.1.1/24"); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "netns", "exec", l.RouterNS(), "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := l.plug(ctx, l.APINS(), "eth0", p+"sw1", "api", APIServerIP+"/24"); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "-n", l.APINS(), "route", "add", "default", "via", "198.18.0.1"); err != nil {
		return err
	}
	for n := 1; n <= l.cfg.Nodes; n++ {
		if err := l.nodeNetwork(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// nodeNetwork makes node n's network namespace on its switch.
func (l *Lab) nodeNetwork(ctx context.Context, n int) error {
	if err := l.addNS(ctx, l.NodeNS(n)); err != nil {
		return err
	}
	if err := l.plug(ctx, l.NodeNS(n), "eth0", l.nodeSwitch(n), nodeName(n), l.NodeIP(n)+"/24"); err != nil {
		return err
	}
	// The default route also makes the node answer proxy ARP for the
	// pods' gateway 169.254.1.1 (docs/dataplane.md).
	_, err := run(ctx, "ip", "-n", l.NodeNS(n), "route", "add", "default", "via", l.nodeGW(n))
	return err
}

func (l *Lab) addNS(ctx context.Context, ns string) error {
	return ipCmds(ctx, [][]string{{"netns", "add", ns}, {"-n", ns, "link", "set", "lo", "up"}})
}

// plug connects namespace ns to a switch: a veth whose ends are created
// directly in the switch (port, enslaved to br0) and in ns (ifname).
func (l *Lab) plug(ctx context.Context, ns, ifname, sw, port, addr string) error {
	return ipCmds(ctx, [][]string{
		{"-n", sw, "link", "add", port, "mtu", "1500", "type", "veth", "peer", "name", ifname, "netns", ns},
		{"-n", sw, "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "link", "set", ifname, "mtu", "1500", "up"},
		{"-n", ns, "addr", "add", addr, "dev", ifname},
	})
}

func ipCmds(ctx context.Context, cmds [][]string) error {
	for _, c := range cmds {
		if _, err := run(ctx, "ip", c...); err != nil {
			return err
		}
	}
	return nil
}
