// Command wrenctl shows what the wren-agent on this node is doing. It
// talks to the agent's unix socket (the debug API, wren.debug.v1) and is
// shipped in the agent's image, so
//
//	kubectl exec -n wren-system <wren-agent pod> -- wrenctl status
//
// works on any node. See docs/operations.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
)

// version is set at build time (-X main.version=...; internal/image).
var version = "dev"

const usage = `wrenctl shows what the wren-agent on this node is doing.

Usage:
  wrenctl [flags] <command>

Commands:
  status     the node and its BGP sessions (like calicoctl node status)
  peers      the BGP sessions only
  routes [PREFIX]
             the routes learned over BGP, and whether the kernel has each
  kernel-routes
             the kernel's routes of Wren (proto wren)
  links      the tunnel devices and the pod veths
  explain IP what IPAM, BGP, the kernel and the veth say about one
             address, ending in "reachable via …" or what is wrong
             (exit status 1 then)
  ipam show  the IP pools and their usage (like calicoctl ipam show);
             --show-blocks adds the blocks and their nodes,
             --show-borrowed the addresses borrowed from other nodes' blocks
  ipam check [--kubeconfig PATH]
             cluster-wide, from the Kubernetes API: leaked allocations,
             pods without one, blocks of deleted nodes, borrowed addresses
             (like calicoctl ipam check; exit status 1 on a problem)
  ipam release --ip IP [--kubeconfig PATH]
             free a leaked address, refused while a pod or node holds it
  version    wrenctl's version and the agent's
  convert [FILE|-]
             Calico YAML (projectcalico.org/v3) from FILE or stdin to
             Wren YAML on stdout, what it could not carry over on stderr;
             needs no agent (docs/migrating.md)

Flags:
`

type options struct {
	socket  string
	output  string
	timeout time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: 0 ok, 1 the command failed, 2
// bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("wrenctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", cniv1.DefaultSocket, "the agent's unix socket")
	fs.StringVar(&o.output, "o", "table", "output format: table, wide, json or yaml")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "give up on the agent after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	switch o.output {
	case "table", "wide", "json", "yaml":
	default:
		fmt.Fprintf(stderr, "wrenctl: -o %q: want table, wide, json or yaml\n", o.output)
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if cmd == "convert" { // offline: no agent to dial
		return runConvert(rest, os.Stdin, stdout, stderr)
	}
	var f func(context.Context, *client, options, []string, io.Writer) error
	switch cmd {
	case "status":
		f = cmdStatus
	case "peers":
		f = cmdPeers
	case "routes":
		f = cmdRoutes
	case "kernel-routes":
		f = cmdKernelRoutes
	case "links":
		f = cmdLinks
	case "explain":
		f = cmdExplain
	case "ipam":
		if isIPAMAPICommand(rest) {
			return runIPAMAPI(o, rest, stdout, stderr) // the API server, not the agent
		}
		f = cmdIPAM
	case "version":
		f = cmdVersion
	case "help":
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	default:
		fmt.Fprintf(stderr, "wrenctl: unknown command %q (wrenctl help lists them)\n", cmd)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c, err := dial(o.socket)
	if err != nil {
		if cmd == "version" {
			// wrenctl's own version is worth printing without an agent.
			fmt.Fprintf(stdout, "wrenctl %s\n", version)
		}
		fmt.Fprintf(stderr, "wrenctl: %v\n", err)
		return 1
	}
	defer c.close()
	if err := f(ctx, c, o, rest, stdout); err != nil {
		if errors.Is(err, errNotOK) {
			return 1
		}
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "wrenctl %s: %v\n", cmd, err)
			return 2
		}
		fmt.Fprintf(stderr, "wrenctl %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// usageError is a bad argument to a command.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", args)}
	}
	return nil
}
