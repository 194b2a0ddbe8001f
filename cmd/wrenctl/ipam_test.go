package main

// Test addresses: pools 10.244.7.0/25 and 10.244.9.0/24 (pods), nodes
// node-a, node-b and node-c by name only.

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/agent"
)

// borrowingCluster is TestAgentBorrow's layout: a /25 pool whose two /26
// blocks node-a and node-b claimed, so node-c borrowed its tunnel address
// and its pod's address from node-a's block. A second pool, disabled,
// has one pending block, and a block is left from a deleted pool. The
// agent's lists are deliberately out of order: the server sorts them.
func borrowingCluster() agent.BlocksView {
	ip := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	return agent.BlocksView{
		Pools: []agent.PoolView{
			{Name: "old", CIDR: pfx("10.244.9.0/24"), Mode: "bgp", Disabled: true, BlockSize: 26, Size: 256, Blocks: 1, Used: 0, Free: 256},
			{Name: "default", CIDR: pfx("10.244.7.0/25"), Mode: "vxlan", NATOutgoing: true, BlockSize: 26, Size: 128, Blocks: 2, Used: 6, Free: 122},
		},
		Blocks: []agent.BlockView{
			{CIDR: pfx("10.244.7.64/26"), Pool: "default", Node: "node-b", State: "confirmed", Used: 2, Free: 62, Allocations: []agent.AllocationView{
				{IP: ip("10.244.7.65"), Handle: "default/node-b-web/ctr-node-b-web", Pod: "default/node-b-web", Node: "node-b"},
				{IP: ip("10.244.7.64"), Handle: "node/node-b/vxlan", Node: "node-b"},
			}},
			{CIDR: pfx("10.244.7.0/26"), Pool: "default", Node: "node-a", State: "confirmed", Used: 4, Free: 60, Allocations: []agent.AllocationView{
				{IP: ip("10.244.7.0"), Handle: "node/node-a/vxlan", Node: "node-a"},
				{IP: ip("10.244.7.1"), Handle: "node/node-c/vxlan", Node: "node-c", Borrowed: true},
				{IP: ip("10.244.7.2"), Handle: "default/node-a-web/ctr-node-a-web", Pod: "default/node-a-web", Node: "node-a"},
				{IP: ip("10.244.7.3"), Handle: "default/node-c-web/ctr-node-c-web", Pod: "default/node-c-web", Node: "node-c", Borrowed: true},
			}},
			{CIDR: pfx("10.244.9.0/26"), Pool: "old", Node: "node-c", State: "pending", Used: 0, Free: 64},
			{CIDR: pfx("10.244.8.0/26"), Node: "node-b", State: "confirmed", Used: 1, Free: 63, Allocations: []agent.AllocationView{
				{IP: ip("10.244.8.5"), Handle: "default/legacy/ctr-legacy", Pod: "default/legacy", Node: "node-b"},
			}},
		},
	}
}

// TestIPAMShowTable: pools like calicoctl ipam show, sorted by name, with
// percentages; --show-blocks adds each block under its pool with its
// node (a block in no pool last); --show-borrowed lists the two borrowed
// addresses with their block, its node, the pod and the node using them.
func TestIPAMShowTable(t *testing.T) {
	sock := serve(t, fakeAgent{b: borrowingCluster()})
	out, errOut, code := wrenctl(t, "--socket", sock, "ipam", "show")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `+----------+---------------+-----------+------------+------------+
| GROUPING |     CIDR      | IPS TOTAL | IPS IN USE |  IPS FREE  |
+----------+---------------+-----------+------------+------------+
| IP Pool  | 10.244.7.0/25 |       128 | 6 (5%)     | 122 (95%)  |
| IP Pool  | 10.244.9.0/24 |       256 | 0 (0%)     | 256 (100%) |
+----------+---------------+-----------+------------+------------+
`
	if out != want {
		t.Errorf("ipam show:\n%s\nwant:\n%s", out, want)
	}

	out, errOut, code = wrenctl(t, "--socket", sock, "ipam", "show", "--show-blocks", "--show-borrowed")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want = `+----------------+----------------+-----------+------------+------------+--------+
|    GROUPING    |      CIDR      | IPS TOTAL | IPS IN USE |  IPS FREE  |  NODE  |
+----------------+----------------+-----------+------------+------------+--------+
| IP Pool        | 10.244.7.0/25  |       128 | 6 (5%)     | 122 (95%)  |        |
| Block          | 10.244.7.0/26  |        64 | 4 (6%)     | 60 (94%)   | node-a |
| Block          | 10.244.7.64/26 |        64 | 2 (3%)     | 62 (97%)   | node-b |
| IP Pool        | 10.244.9.0/24  |       256 | 0 (0%)     | 256 (100%) |        |
| Block          | 10.244.9.0/26  |        64 | 0 (0%)     | 64 (100%)  | node-c |
| Block, no pool | 10.244.8.0/26  |        64 | 1 (2%)     | 63 (98%)   | node-b |
+----------------+----------------+-----------+------------+------------+--------+

Borrowed addresses
+------------+---------------+------------+--------------------+--------------+
|     IP     |     BLOCK     | BLOCK NODE |        POD         | USED BY NODE |
+------------+---------------+------------+--------------------+--------------+
| 10.244.7.1 | 10.244.7.0/26 | node-a     | -                  | node-c       |
| 10.244.7.3 | 10.244.7.0/26 | node-a     | default/node-c-web | node-c       |
+------------+---------------+------------+--------------------+--------------+
`
	if out != want {
		t.Errorf("ipam show --show-blocks --show-borrowed:\n%s\nwant:\n%s", out, want)
	}

	// Wide: the pool's state and mode, the block's claim state, borrowed
	// counts, and the handle of each borrowed address.
	out, _, _ = wrenctl(t, "--socket", sock, "-o", "wide", "ipam", "show", "--show-blocks", "--show-borrowed")
	for _, want := range []string{
		"|  NODE  |   STATE   | MODE  | BORROWED |",
		"| IP Pool        | 10.244.7.0/25  |       128 | 6 (5%)     | 122 (95%)  |        | enabled   | vxlan |        2 |",
		"| Block          | 10.244.7.0/26  |        64 | 4 (6%)     | 60 (94%)   | node-a | confirmed | vxlan |        2 |",
		"| IP Pool        | 10.244.9.0/24  |       256 | 0 (0%)     | 256 (100%) |        | disabled  | bgp   |        0 |",
		"| Block          | 10.244.9.0/26  |        64 | 0 (0%)     | 64 (100%)  | node-c | pending   | bgp   |        0 |",
		"| Block, no pool | 10.244.8.0/26  |        64 | 1 (2%)     | 63 (98%)   | node-b | confirmed | -     |        0 |",
		"| 10.244.7.1 | 10.244.7.0/26 | node-a     | -                  | node-c       | node/node-c/vxlan                 |",
		"| 10.244.7.3 | 10.244.7.0/26 | node-a     | default/node-c-web | node-c       | default/node-c-web/ctr-node-c-web |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("-o wide ipam show lacks %q:\n%s", want, out)
		}
	}
}

// TestIPAMShowEmpty: no pools, nothing borrowed.
func TestIPAMShowEmpty(t *testing.T) {
	sock := serve(t, fakeAgent{})
	out, errOut, code := wrenctl(t, "--socket", sock, "ipam", "show", "--show-blocks", "--show-borrowed")
	if code != 0 || out != "No IP pools found.\n\nNo borrowed addresses.\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestIPAMShowUsage: a missing or unknown subcommand, an unknown flag or
// a global flag after the command is a usage error (exit 2).
func TestIPAMShowUsage(t *testing.T) {
	sock := serve(t, fakeAgent{})
	for _, args := range [][]string{{"ipam"}, {"ipam", "list"}, {"ipam", "show", "--blocks"}, {"ipam", "show", "-o", "json"}, {"ipam", "show", "extra"}} {
		_, errOut, code := wrenctl(t, append([]string{"--socket", sock}, args...)...)
		if code != 2 || !strings.Contains(errOut, "usage: wrenctl [-o table|wide|json|yaml] ipam show [--show-blocks] [--show-borrowed]") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and the usage", args, code, errOut)
		}
	}
}

// TestIPAMShowJSONRoundTrip: -o json is the whole reply, sorted (pools by
// name, blocks by CIDR, allocations by address), with every allocation's
// pod, node and borrowed flag; -o yaml is the same message.
func TestIPAMShowJSONRoundTrip(t *testing.T) {
	sock := serve(t, fakeAgent{b: borrowingCluster()})
	out, errOut, code := wrenctl(t, "--socket", sock, "-o", "json", "ipam", "show")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var fromJSON, fromYAML debugv1.BlocksReply
	if err := protojson.Unmarshal([]byte(out), &fromJSON); err != nil {
		t.Fatalf("-o json does not parse: %v\n%s", err, out)
	}
	want := &debugv1.BlocksReply{
		Pools: []*debugv1.Pool{
			{Name: "default", Cidr: "10.244.7.0/25", Mode: "vxlan", NatOutgoing: true, BlockSize: 26, Size: 128, Blocks: 2, Used: 6, Free: 122},
			{Name: "old", Cidr: "10.244.9.0/24", Mode: "bgp", Disabled: true, BlockSize: 26, Size: 256, Blocks: 1, Free: 256},
		},
		Blocks: []*debugv1.Block{
			{Cidr: "10.244.7.0/26", Pool: "default", Node: "node-a", State: "confirmed", Used: 4, Free: 60, Allocations: []*debugv1.Allocation{
				{Ip: "10.244.7.0", Handle: "node/node-a/vxlan", Node: "node-a"},
				{Ip: "10.244.7.1", Handle: "node/node-c/vxlan", Node: "node-c", Borrowed: true},
				{Ip: "10.244.7.2", Handle: "default/node-a-web/ctr-node-a-web", Pod: "default/node-a-web", Node: "node-a"},
				{Ip: "10.244.7.3", Handle: "default/node-c-web/ctr-node-c-web", Pod: "default/node-c-web", Node: "node-c", Borrowed: true},
			}},
			{Cidr: "10.244.7.64/26", Pool: "default", Node: "node-b", State: "confirmed", Used: 2, Free: 62, Allocations: []*debugv1.Allocation{
				{Ip: "10.244.7.64", Handle: "node/node-b/vxlan", Node: "node-b"},
				{Ip: "10.244.7.65", Handle: "default/node-b-web/ctr-node-b-web", Pod: "default/node-b-web", Node: "node-b"},
			}},
			{Cidr: "10.244.8.0/26", Node: "node-b", State: "confirmed", Used: 1, Free: 63, Allocations: []*debugv1.Allocation{
				{Ip: "10.244.8.5", Handle: "default/legacy/ctr-legacy", Pod: "default/legacy", Node: "node-b"},
			}},
			{Cidr: "10.244.9.0/26", Pool: "old", Node: "node-c", State: "pending", Free: 64},
		},
	}
	if !proto.Equal(&fromJSON, want) {
		t.Errorf("-o json:\n%v\nwant:\n%v", &fromJSON, want)
	}
	out, _, _ = wrenctl(t, "--socket", sock, "-o", "yaml", "ipam", "show", "--show-blocks")
	j, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatalf("-o yaml does not parse: %v\n%s", err, out)
	}
	if err := protojson.Unmarshal(j, &fromYAML); err != nil {
		t.Fatalf("-o yaml is not the message: %v\n%s", err, out)
	}
	if !proto.Equal(&fromJSON, &fromYAML) {
		t.Errorf("json and yaml differ:\n%v\n%v", &fromJSON, &fromYAML)
	}
}
