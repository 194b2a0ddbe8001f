package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/wren-net/wren/pkg/cluster"
)

// `wrenctl ipam check` and `wrenctl ipam release` read and write the
// Kubernetes API, not the agent's socket: the agent caches only its own
// node's pods, and a check is cluster-wide (like calicoctl's).

const (
	ipamCheckUsage   = "usage: wrenctl [-o table|wide|json|yaml] [--timeout D] ipam check [--kubeconfig PATH]"
	ipamReleaseUsage = "usage: wrenctl [-o table|wide|json|yaml] [--timeout D] ipam release --ip IP [--kubeconfig PATH]"
)

// isIPAMAPICommand reports whether `wrenctl ipam <args>` is one of the
// commands that talk to the API server (runIPAMAPI) instead of the agent.
func isIPAMAPICommand(args []string) bool {
	return len(args) > 0 && (args[0] == "check" || args[0] == "release")
}

// runIPAMAPI runs `ipam check` or `ipam release` and returns the exit
// status: 0 ok (check: no problem found), 1 failed (check: problems
// found), 2 bad usage.
func runIPAMAPI(o options, args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	f := cmdIPAMCheck
	if args[0] == "release" {
		f = cmdIPAMRelease
	}
	err := f(ctx, o, args[1:], stdout)
	var u usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotOK):
		return 1
	case errors.As(err, &u):
		fmt.Fprintf(stderr, "wrenctl ipam %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stderr, "wrenctl ipam %s: %v\n", args[0], err)
	return 1
}

// apiFlags parses a command's flags, --kubeconfig among them.
func apiFlags(name, usage string, args []string, more func(*flag.FlagSet)) (kubeconfig string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig; default $KUBECONFIG, else the pod's service account inside a pod, else ~/.kube/config")
	if more != nil {
		more(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", usageError{usage}
		}
		return "", usageError{fmt.Sprintf("%v (%s)", err, usage)}
	}
	if fs.NArg() > 0 {
		return "", usageError{fmt.Sprintf("unexpected arguments %q (%s)", fs.Args(), usage)}
	}
	return kubeconfig, nil
}

// cmdIPAMCheck is `wrenctl ipam check`: leaked allocations, pods without
// an allocation, blocks of deleted nodes and borrowed addresses, then a
// summary. It exits 1 when it found a problem (borrowed addresses are
// not problems).
func cmdIPAMCheck(ctx context.Context, o options, args []string, w io.Writer) error {
	kubeconfig, err := apiFlags("ipam check", ipamCheckUsage, args, nil)
	if err != nil {
		return err
	}
	c, err := cluster.CLIClient(kubeconfig)
	if err != nil {
		return err
	}
	r, err := cluster.CheckIPAM(ctx, c)
	if err != nil {
		return err
	}
	if o.output == "json" || o.output == "yaml" {
		if err := printJSON(w, o.output, r); err != nil {
			return err
		}
	} else {
		writeIPAMCheck(w, r, o.output == "wide")
	}
	if r.Summary.Problems > 0 {
		return errNotOK
	}
	return nil
}

// cmdIPAMRelease is `wrenctl ipam release --ip X`: frees X if no pod or
// node holds it.
func cmdIPAMRelease(ctx context.Context, o options, args []string, w io.Writer) error {
	var ipFlag string
	kubeconfig, err := apiFlags("ipam release", ipamReleaseUsage, args, func(fs *flag.FlagSet) {
		fs.StringVar(&ipFlag, "ip", "", "the address to release")
	})
	if err != nil {
		return err
	}
	ip, perr := netip.ParseAddr(ipFlag)
	if ipFlag == "" || perr != nil || !ip.Is4() {
		return usageError{fmt.Sprintf("--ip %q: want an IPv4 address (%s)", ipFlag, ipamReleaseUsage)}
	}
	c, err := cluster.CLIClient(kubeconfig)
	if err != nil {
		return err
	}
	rel, err := cluster.ReleaseIP(ctx, c, ip)
	if err != nil {
		return err
	}
	if o.output == "json" || o.output == "yaml" {
		return printJSON(w, o.output, rel)
	}
	fmt.Fprintf(w, "Released %s from block %s (node %s): handle %s, %s.\n", rel.IP, rel.Block, orDash(rel.BlockNode), rel.Handle, rel.Reason)
	return nil
}

// printJSON writes v as indented JSON, or as the same document in YAML
// (printMessage's layout, for values that are not protobuf messages).
func printJSON(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeDoc(w, format, b)
}

// writeIPAMCheck prints a section per kind of finding (a table, or one
// line saying there is none), then the summary. wide adds the handles.
func writeIPAMCheck(w io.Writer, r cluster.IPAMReport, wide bool) {
	section := func(title, none string, t *table) {
		if len(t.rows) == 0 {
			fmt.Fprintln(w, none)
		} else {
			fmt.Fprintln(w, title)
			t.write(w)
		}
		fmt.Fprintln(w)
	}

	t := &table{head: []string{"IP", "BLOCK", "BLOCK NODE", "OWNER", "NODE", "REASON"}}
	if wide {
		t.head = append(t.head, "HANDLE")
	}
	for _, l := range r.Leaked {
		cells := []string{l.IP.String(), l.Block.String(), orDash(l.BlockNode), orDash(l.Owner), orDash(l.Node), l.Reason}
		if wide {
			cells = append(cells, l.Handle)
		}
		t.add(cells...)
	}
	section("Leaked allocations (no pod or node holds them; wrenctl ipam release --ip IP frees one)", "No leaked allocations.", t)

	t = &table{head: []string{"IP", "POD", "NODE", "POOL", "REASON"}}
	for _, m := range r.Missing {
		t.add(m.IP.String(), m.Pod, orDash(m.Node), m.Pool, m.Reason)
	}
	section("Pod addresses without an allocation (IPAM may hand them out again)", "No pod address without an allocation.", t)

	t = &table{head: []string{"BLOCK", "NODE", "ALLOCATIONS"}, right: map[int]bool{2: true}}
	for _, b := range r.OrphanBlocks {
		t.add(b.Block.String(), b.Node, strconv.Itoa(b.Allocations))
	}
	section("Blocks of nodes that do not exist", "No block of a deleted node.", t)

	t = &table{head: []string{"IP", "BLOCK", "BLOCK NODE", "POD", "USED BY NODE"}}
	if wide {
		t.head = append(t.head, "HANDLE")
	}
	for _, b := range r.Borrowed {
		cells := []string{b.IP.String(), b.Block.String(), b.BlockNode, orDash(b.Pod), b.Node}
		if wide {
			cells = append(cells, b.Handle)
		}
		t.add(cells...)
	}
	section("Borrowed addresses (not a problem)", "No borrowed addresses.", t)

	s := r.Summary
	t = &table{head: []string{"BLOCKS", "ALLOCATIONS", "PODS", "LEAKED", "MISSING", "ORPHAN BLOCKS", "BORROWED"},
		right: map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true}}
	t.add(strconv.Itoa(s.Blocks), strconv.Itoa(s.Allocations), strconv.Itoa(s.Pods), strconv.Itoa(s.Leaked),
		strconv.Itoa(s.Missing), strconv.Itoa(s.OrphanBlocks), strconv.Itoa(s.Borrowed))
	fmt.Fprintln(w, "Summary")
	t.write(w)
	if s.Problems == 0 {
		fmt.Fprintln(w, "IPAM is consistent.")
	} else {
		fmt.Fprintf(w, "Found %d problem(s).\n", s.Problems)
	}
}
