package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
)

func cmdStatus(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	r, err := c.status(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, r)
	}
	now := time.Now()
	state := "ready"
	if !r.Ready {
		state = "not ready: " + r.NotReady
	}
	fmt.Fprintf(w, "wren-agent %s on node %s is running: %s\n", r.Version, r.Node, state)
	fmt.Fprintf(w, "Started %s ago", ago(now, r.Started.AsTime()))
	if r.LastSync != nil {
		fmt.Fprintf(w, ", last full sync %s ago", ago(now, r.LastSync.AsTime()))
		if r.LastSyncError != "" {
			fmt.Fprintf(w, " (with errors: %s)", r.LastSyncError)
		}
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintf(w, "Node address %s", orDash(r.NodeCidr))
	if r.Bgp {
		fmt.Fprintf(w, ", AS %d, router ID %s", r.AsNumber, orDash(r.RouterId))
		if r.RouteReflector {
			fmt.Fprintf(w, ", route reflector (cluster ID %s)", r.ClusterId)
		}
	}
	fmt.Fprint(w, ".\n\n")
	if !r.Bgp {
		fmt.Fprintln(w, "BGP is off on this node.")
		return nil
	}
	fmt.Fprintln(w, "IPv4 BGP status")
	writePeers(w, o, r.Peers, now)
	return nil
}

func cmdPeers(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	r, err := c.status(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, &debugv1.StatusReply{Peers: r.Peers})
	}
	if !r.Bgp {
		fmt.Fprintln(w, "BGP is off on this node.")
		return nil
	}
	writePeers(w, o, r.Peers, time.Now())
	return nil
}

func writePeers(w io.Writer, o options, peers []*debugv1.Peer, now time.Time) {
	if len(peers) == 0 {
		fmt.Fprintln(w, "No IPv4 peers found.")
		return
	}
	t := &table{head: []string{"PEER ADDRESS", "PEER TYPE", "NAME", "STATE", "SINCE", "ACCEPTED", "REJECTED", "ADVERTISED", "INFO"},
		right: map[int]bool{5: true, 6: true, 7: true}}
	wide := o.output == "wide"
	if wide {
		t.head = append(t.head, "AS", "RECEIVED", "END-OF-RIB", "UPTIME", "FLAPS", "LAST DOWN")
		t.right[9], t.right[10], t.right[13] = true, true, true
	}
	for _, p := range peers {
		info := "Established"
		if p.State != "established" {
			info = p.State
			if p.LastDown != "" {
				info += ": last down: " + p.LastDown
			}
		}
		since := "-"
		if p.Since != nil {
			since = clock(now, p.Since.AsTime())
		}
		row := []string{p.Address, orDash(p.Type), orDash(p.Name), upOrDown(p.State), since,
			u(p.Accepted), u(p.Rejected), u(p.Advertised), info}
		if wide {
			uptime := "-"
			if p.Since != nil {
				uptime = (time.Duration(p.UptimeSeconds) * time.Second).String()
			}
			eor := "no"
			if p.EndOfRib {
				eor = "yes"
			}
			row = append(row, strconv.FormatUint(uint64(p.AsNumber), 10), u(p.Received), eor, uptime,
				strconv.FormatUint(uint64(p.Flaps), 10), orDash(p.LastDown))
		}
		t.add(row...)
	}
	t.write(w)
}

func cmdVersion(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if err := noArgs(args); err != nil {
		return err
	}
	agentVersion := "unknown"
	if r, err := c.status(ctx); err == nil {
		agentVersion = r.Version
	} else {
		agentVersion = "unreachable: " + err.Error()
	}
	fmt.Fprintf(w, "wrenctl %s\nwren-agent %s\n", version, agentVersion)
	return nil
}

// upOrDown is calicoctl's STATE column: up when established.
func upOrDown(state string) string {
	if state == "established" {
		return "up"
	}
	return "down"
}

func sortPeers(ps []*debugv1.Peer) {
	slices.SortFunc(ps, func(a, b *debugv1.Peer) int {
		x, errx := netip.ParseAddr(a.Address)
		y, erry := netip.ParseAddr(b.Address)
		if errx != nil || erry != nil {
			return compareStrings(a.Address, b.Address)
		}
		return x.Compare(y)
	})
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clock is t as calicoctl shows SINCE: the time of day when it is today,
// else the date.
func clock(now, t time.Time) string {
	t = t.Local()
	if y, m, d := now.Local().Date(); t.Year() == y && t.Month() == m && t.Day() == d {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02")
}

// ago is now - t rounded for a person.
func ago(now, t time.Time) string {
	d := max(now.Sub(t), 0)
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}
