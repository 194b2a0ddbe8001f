package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
)

const ipamUsage = "usage: wrenctl [-o table|wide|json|yaml] ipam show [--show-blocks] [--show-borrowed]"

// cmdIPAM is `wrenctl ipam show`: the pools with their usage, like
// `calicoctl ipam show`; --show-blocks adds a row per block with its
// node, --show-borrowed lists the addresses nodes borrowed from other
// nodes' blocks. -o json and yaml print the whole reply (every pool and
// block, with their allocations) whatever the other flags say.
func cmdIPAM(ctx context.Context, c *client, o options, args []string, w io.Writer) error {
	if len(args) == 0 || args[0] != "show" {
		return usageError{ipamUsage}
	}
	fs := flag.NewFlagSet("ipam show", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	showBlocks := fs.Bool("show-blocks", false, "a row per block, with its node")
	showBorrowed := fs.Bool("show-borrowed", false, "list the borrowed addresses")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usageError{ipamUsage}
		}
		// -o, --socket and --timeout are wrenctl's own flags: they go
		// before the command.
		return usageError{fmt.Sprintf("%v (%s)", err, ipamUsage)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q (%s)", fs.Args(), ipamUsage)}
	}
	r, err := c.blocks(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" || o.output == "yaml" {
		return printMessage(w, o.output, r)
	}
	wide := o.output == "wide"
	writePools(w, r, *showBlocks, wide)
	if *showBorrowed {
		fmt.Fprintln(w)
		writeBorrowed(w, r, wide)
	}
	return nil
}

func (c *client) blocks(ctx context.Context) (*debugv1.BlocksReply, error) {
	r, err := c.debug.Blocks(ctx, &debugv1.BlocksRequest{})
	if err != nil {
		return nil, c.explain(err)
	}
	return r, nil
}

// writePools is calicoctl's table: a row per pool and, with showBlocks,
// a row per block under its pool with the block's node. Blocks in no
// pool (their pool was deleted while addresses were allocated) come last.
// wide adds the claim state (enabled or disabled for a pool), the pool's
// mode and the number of borrowed addresses.
func writePools(w io.Writer, r *debugv1.BlocksReply, showBlocks, wide bool) {
	if len(r.Pools) == 0 && (!showBlocks || len(r.Blocks) == 0) {
		fmt.Fprintln(w, "No IP pools found.")
		return
	}
	t := &table{head: []string{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"}, right: map[int]bool{2: true}}
	if showBlocks {
		t.head = append(t.head, "NODE")
	}
	if wide {
		t.head = append(t.head, "STATE", "MODE", "BORROWED")
		t.right[len(t.head)-1] = true
	}
	byPool := map[string][]*debugv1.Block{}
	for _, b := range r.Blocks {
		byPool[b.Pool] = append(byPool[b.Pool], b)
	}
	row := func(grouping, cidr string, total, used uint64, node, state, mode string, borrowed int) {
		cells := []string{grouping, cidr, u(total), share(used, total), share(total-min(used, total), total)}
		if showBlocks {
			cells = append(cells, node)
		}
		if wide {
			cells = append(cells, state, mode, strconv.Itoa(borrowed))
		}
		t.add(cells...)
	}
	blockRows := func(grouping, mode string, bs []*debugv1.Block) {
		for _, b := range bs {
			row(grouping, b.Cidr, uint64(b.Used)+uint64(b.Free), uint64(b.Used), orDash(b.Node), orDash(b.State), mode, borrowedIn(b))
		}
	}
	for _, p := range r.Pools {
		state := "enabled"
		if p.Disabled {
			state = "disabled"
		}
		n := 0
		for _, b := range byPool[p.Name] {
			n += borrowedIn(b)
		}
		row("IP Pool", p.Cidr, p.Size, p.Used, "", state, orDash(p.Mode), n)
		if showBlocks {
			blockRows("Block", orDash(p.Mode), byPool[p.Name])
		}
	}
	if showBlocks {
		blockRows("Block, no pool", "-", byPool[""])
	}
	t.write(w)
}

// writeBorrowed lists the addresses used by a node other than their
// block's: IP, block, the block's node, the pod and the node using the
// address; wide adds the IPAM handle (which names the owner of an
// address that is not a pod's, such as a node's tunnel address).
func writeBorrowed(w io.Writer, r *debugv1.BlocksReply, wide bool) {
	t := &table{head: []string{"IP", "BLOCK", "BLOCK NODE", "POD", "USED BY NODE"}}
	if wide {
		t.head = append(t.head, "HANDLE")
	}
	for _, b := range r.Blocks {
		for _, al := range b.Allocations {
			if !al.Borrowed {
				continue
			}
			cells := []string{al.Ip, b.Cidr, orDash(b.Node), orDash(al.Pod), orDash(al.Node)}
			if wide {
				cells = append(cells, al.Handle)
			}
			t.add(cells...)
		}
	}
	if len(t.rows) == 0 {
		fmt.Fprintln(w, "No borrowed addresses.")
		return
	}
	fmt.Fprintln(w, "Borrowed addresses")
	t.write(w)
}

func borrowedIn(b *debugv1.Block) int {
	n := 0
	for _, al := range b.Allocations {
		if al.Borrowed {
			n++
		}
	}
	return n
}

// share is n and its share of total as calicoctl prints them: "5 (8%)",
// the percentage rounded to the nearest integer.
func share(n, total uint64) string {
	if total == 0 {
		return u(n)
	}
	return fmt.Sprintf("%d (%.0f%%)", n, 100*float64(n)/float64(total))
}
