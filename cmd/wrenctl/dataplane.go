package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
)

func cmdRoutes(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	req := &debugv1.RoutesRequest{}
	switch len(args) {
	case 0:
	case 1:
		p, err := netip.ParsePrefix(args[0])
		if err != nil {
			if a, aerr := netip.ParseAddr(args[0]); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			return usageError{fmt.Sprintf("%q: want a prefix (10.244.0.0/16) or an address", args[0])}
		}
		req.Prefix = p.String()
	default:
		return usageError{"want at most one prefix"}
	}
	r, err := c.debug.Routes(ctx, req)
	if err != nil {
		return c.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, r)
	}
	if len(r.Routes) == 0 && r.RejectedNotListed == 0 {
		fmt.Fprintln(w, "No routes learned over BGP.")
		return nil
	}
	t := &table{head: []string{"PREFIX", "NEXT HOP", "PEER", "IN KERNEL", "NOTE"}}
	if o.output == "wide" {
		t.head = append(t.head, "AS PATH", "KERNEL ROUTE")
	}
	for _, x := range r.Routes {
		in := "no"
		if x.Programmed {
			in = "yes"
		}
		row := []string{x.Prefix, orDash(x.NextHop), orDash(x.Peer), in, orDash(x.WhyNot)}
		if o.output == "wide" {
			row = append(row, strconv.FormatUint(uint64(x.AsPathLength), 10), orDash(x.Kernel))
		}
		t.add(row...)
	}
	t.write(w)
	if r.RejectedNotListed > 0 {
		fmt.Fprintf(w, "%d more paths rejected by the import policy are not listed (wrenctl routes PREFIX narrows the list).\n", r.RejectedNotListed)
	}
	return nil
}

func cmdKernelRoutes(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	r, err := c.debug.KernelRoutes(ctx, &debugv1.KernelRoutesRequest{})
	if err != nil {
		return c.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, r)
	}
	if len(r.Routes) == 0 {
		fmt.Fprintln(w, "The kernel has no route of Wren's (proto wren).")
		return nil
	}
	if o.output != "wide" {
		// What `ip route show proto wren` prints, device names included.
		for _, k := range r.Routes {
			fmt.Fprintln(w, k.Text)
		}
		return nil
	}
	t := &table{head: []string{"DESTINATION", "TYPE", "GATEWAY", "DEVICE", "ONLINK", "MTU"}, right: map[int]bool{5: true}}
	for _, k := range r.Routes {
		mtu := "-"
		if k.Mtu != 0 {
			mtu = strconv.FormatUint(uint64(k.Mtu), 10)
		}
		t.add(k.Destination, k.Type, orDash(k.Gateway), orDash(k.Device), yesNo(k.Onlink), mtu)
	}
	t.write(w)
	return nil
}

func cmdLinks(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	r, err := c.debug.Links(ctx, &debugv1.LinksRequest{})
	if err != nil {
		return c.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, r)
	}
	if len(r.Tunnels) == 0 {
		fmt.Fprintln(w, "No tunnel devices (no pool uses VXLAN or IPIP here).")
	} else {
		t := &table{head: []string{"TUNNEL", "KIND", "ADDRESS", "MTU", "VTEP MAC", "STATE"}, right: map[int]bool{3: true}}
		for _, x := range r.Tunnels {
			t.add(x.Name, x.Kind, orDash(x.Address), mtu(x.Mtu, x.Missing), orDash(x.VtepMac), linkState(x.Up, x.Missing))
		}
		t.write(w)
	}
	fmt.Fprintln(w)
	if len(r.Veths) == 0 {
		fmt.Fprintln(w, "No pod veths.")
		return nil
	}
	t := &table{head: []string{"VETH", "POD", "IP", "MTU", "STATE"}, right: map[int]bool{3: true}}
	if o.output == "wide" {
		t.head = append(t.head, "CONTAINER")
	}
	for _, x := range r.Veths {
		pod := x.Pod
		if pod == "" {
			pod = "(no pod: to be removed)"
		}
		row := []string{x.Name, pod, orDash(x.Ip), mtu(x.Mtu, x.Missing), linkState(x.Up, x.Missing)}
		if o.output == "wide" {
			row = append(row, orDash(x.ContainerId))
		}
		t.add(row...)
	}
	t.write(w)
	return nil
}

func mtu(v uint32, missing bool) string {
	if missing || v == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func linkState(up, missing bool) string {
	switch {
	case missing:
		return "MISSING"
	case up:
		return "up"
	}
	return "down"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func cmdExplain(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if len(args) != 1 {
		return usageError{"want one IPv4 address: wrenctl explain 10.244.1.5"}
	}
	ip, err := netip.ParseAddr(args[0])
	if err != nil || !ip.Is4() {
		return usageError{fmt.Sprintf("%q: want an IPv4 address", args[0])}
	}
	r, err := c.debug.Explain(ctx, &debugv1.ExplainRequest{Ip: ip.String()})
	if err != nil {
		return c.explain(err)
	}
	if o.output == "json" || o.output == "yaml" {
		if err := printMessage(w, o.output, r); err != nil {
			return err
		}
	} else {
		writeExplain(w, r)
	}
	if !r.Ok {
		return errNotOK
	}
	return nil
}

func writeExplain(w io.Writer, r *debugv1.ExplainReply) {
	fmt.Fprintf(w, "%s\n", r.Ip)
	for _, kv := range [][2]string{{"pool", r.Pool}, {"block", r.Block}, {"block node", r.BlockNode}, {"host node", r.HostNode}, {"pod", r.Pod}} {
		if kv[1] != "" {
			fmt.Fprintf(w, "  %-11s %s\n", kv[0]+":", kv[1])
		}
	}
	for _, f := range r.Findings {
		mark := "ok"
		if !f.Ok {
			mark = "!!"
		}
		fmt.Fprintf(w, "  [%s] %-6s %s\n", mark, f.Source, f.Says)
	}
	fmt.Fprintf(w, "=> %s\n", r.Verdict)
}

// errNotOK makes explain exit 1 when it found an inconsistency (the
// explanation itself is on stdout).
var errNotOK = quietError{}

type quietError struct{}

func (quietError) Error() string { return "" }
