//go:build linux

package nstest_test

// wrenctl ipam show against real agents: TestAgentBorrow's layout (a /25
// pool whose two /26 blocks two nodes claim, so a third node borrows)
// with the wren-agent binary inside each node's namespace, in BGP mode
// (no encapsulation, so no tunnel addresses take a share of the blocks),
// each agent asked over its own unix socket.
//
// Test addresses: nodes 198.18.0.11-13/24 on one switch (router
// 198.18.0.1), pods from the pool 10.244.7.0/25 in /26 blocks. Nothing is
// routed in the root namespace; every process is stopped by its PID.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestWrenctlIPAMShow: node-1's and node-2's pods claim the pool's two
// blocks, so node-3's pod borrows an address from node-1's block. On
// every node, `wrenctl -o json ipam show` lists the pool (bgp mode, 2
// blocks, 3 used of 128) and both blocks with their node and used counts,
// as the API has them, and exactly one borrowed address: node-3's pod's,
// in node-1's block, used by node-3. The tables of --show-blocks and
// --show-borrowed say the same. The borrowed pod is reachable from the
// others although node-1 blackholes the block it lies in: node-1 routes
// it to node-3.
func TestWrenctlIPAMShow(t *testing.T) {
	const poolCIDR = "10.244.7.0/25"
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	ctl := buildWrenctl(t)
	ac.poolCIDR(v1alpha1.EncapNever, poolCIDR)
	procs := map[string]*agentProc{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node-%d", i)
		_, procs[name] = ac.addBinaryNodeInNS(name, ac.sw1, fmt.Sprintf("198.18.0.%d/24", 10+i), bin)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ac.dumpBGPState()
		}
	})
	pods := map[string]*agentPod{} // by node
	for _, n := range ac.nodes {
		pods[n.name], _ = ac.addBinaryPod(n, procs[n.name], n.name+"-web")
	}

	// The API's view: node-1 and node-2 own a block each, node-3 none,
	// and node-3's pod lies in node-1's block.
	facts, _ := ac.clusterFacts()
	if len(facts["node-1"]) != 1 || len(facts["node-2"]) != 1 || len(facts["node-3"]) != 0 {
		t.Fatalf("blocks by node %v; want one each for node-1 and node-2, none for node-3", facts)
	}
	blockOf := map[string]netip.Prefix{"node-1": facts["node-1"][0], "node-2": facts["node-2"][0]}
	if !blockOf["node-1"].Contains(pods["node-3"].ip) {
		t.Fatalf("node-3's pod %s is not in node-1's block %s", pods["node-3"].ip, blockOf["node-1"])
	}
	ac.pingMatrix(30 * time.Second)
	// What docs/operations.md tells operators to check: on the block's
	// node, the borrowed address goes to the borrower, not into the
	// block's blackhole.
	owner, borrower := bgpRestartNode(t, ac, "node-1"), bgpRestartNode(t, ac, "node-3")
	out := owner.ns.MustRun(t, "ip", "route", "get", pods["node-3"].ip.String())
	if !strings.Contains(out, "via "+borrower.ip.Addr().String()) {
		t.Errorf("node-1 routes the borrowed %s as: %s; want via node-3 (%s)", pods["node-3"].ip, out, borrower.ip.Addr())
	}

	type wantAlloc struct {
		pod, node string
		borrowed  bool
	}
	wantBlocks := []struct {
		node   string
		allocs map[string]wantAlloc // by IP
	}{
		{"node-1", map[string]wantAlloc{
			pods["node-1"].ip.String(): {"default/node-1-web", "node-1", false},
			pods["node-3"].ip.String(): {"default/node-3-web", "node-3", true},
		}},
		{"node-2", map[string]wantAlloc{
			pods["node-2"].ip.String(): {"default/node-2-web", "node-2", false},
		}},
	}
	if blockOf["node-2"].Addr().Less(blockOf["node-1"].Addr()) {
		wantBlocks[0], wantBlocks[1] = wantBlocks[1], wantBlocks[0] // the reply is sorted by CIDR
	}
	check := func(r *debugv1.BlocksReply) error {
		if len(r.Pools) != 1 {
			return fmt.Errorf("%d pools, want 1: %v", len(r.Pools), r.Pools)
		}
		if p := r.Pools[0]; p.Name != "default" || p.Cidr != poolCIDR || p.Mode != "bgp" || p.BlockSize != 26 ||
			p.Size != 128 || p.Blocks != 2 || p.Used != 3 || p.Free != 125 || p.Disabled {
			return fmt.Errorf("pool %v; want default %s bgp /26, 2 blocks, 3 of 128 used", p, poolCIDR)
		}
		if len(r.Blocks) != len(wantBlocks) {
			return fmt.Errorf("%d blocks, want %d: %v", len(r.Blocks), len(wantBlocks), r.Blocks)
		}
		borrowed := 0
		for i, b := range r.Blocks {
			w := wantBlocks[i]
			if b.Cidr != blockOf[w.node].String() || b.Node != w.node || b.Pool != "default" || b.State != "confirmed" ||
				int(b.Used) != len(w.allocs) || int(b.Free) != 64-len(w.allocs) || len(b.Allocations) != len(w.allocs) {
				return fmt.Errorf("block %d: %v; want %s of %s, confirmed, %d used", i, b, blockOf[w.node], w.node, len(w.allocs))
			}
			for _, al := range b.Allocations {
				wa, ok := w.allocs[al.Ip]
				if !ok || al.Pod != wa.pod || al.Node != wa.node || al.Borrowed != wa.borrowed ||
					!strings.HasPrefix(al.Handle, wa.pod+"/") {
					return fmt.Errorf("block %s: allocation %v; want %v", b.Cidr, al, wa)
				}
				if al.Borrowed {
					borrowed++
				}
			}
		}
		if borrowed != 1 {
			return fmt.Errorf("%d borrowed addresses, want 1", borrowed)
		}
		return nil
	}

	for _, n := range ac.nodes {
		sock := procs[n.name].socket
		// Each agent reads its own informer cache: poll until it has
		// seen every allocation.
		nstest.Poll(t, 30*time.Second, n.name+": wrenctl -o json ipam show lists the blocks and the borrowed address", func() error {
			out, errOut, err := runWrenctl(t, ctl, sock, nil, "-o", "json", "ipam", "show")
			if err != nil {
				return fmt.Errorf("%v: %s", err, errOut)
			}
			var r debugv1.BlocksReply
			if err := protojson.Unmarshal([]byte(out), &r); err != nil {
				return fmt.Errorf("-o json does not parse: %v\n%s", err, out)
			}
			return check(&r)
		})

		// The tables say the same.
		out, errOut, err := runWrenctl(t, ctl, sock, nil, "ipam", "show", "--show-blocks", "--show-borrowed")
		if err != nil {
			t.Fatalf("%s: wrenctl ipam show: %v: %s", n.name, err, errOut)
		}
		rows := tableRows(out)
		for _, want := range [][]string{
			{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE", "NODE"},
			{"IP Pool", poolCIDR, "128", "3 (2%)", "125 (98%)", ""},
			{"Block", blockOf["node-1"].String(), "64", "2 (3%)", "62 (97%)", "node-1"},
			{"Block", blockOf["node-2"].String(), "64", "1 (2%)", "63 (98%)", "node-2"},
			{"IP", "BLOCK", "BLOCK NODE", "POD", "USED BY NODE"},
			{pods["node-3"].ip.String(), blockOf["node-1"].String(), "node-1", "default/node-3-web", "node-3"},
		} {
			if !slices.ContainsFunc(rows, func(r []string) bool { return slices.Equal(r, want) }) {
				t.Errorf("%s: wrenctl ipam show --show-blocks --show-borrowed lacks the row %q:\n%s", n.name, want, out)
			}
		}
		if len(rows) != 6 {
			t.Errorf("%s: %d table rows, want 6 (two headings, the pool, two blocks, one borrowed address):\n%s", n.name, len(rows), out)
		}
		t.Logf("%s: wrenctl ipam show --show-blocks --show-borrowed:\n%s", n.name, out)
		if n.name == "node-1" {
			out, _, err := runWrenctl(t, ctl, sock, nil, "ipam", "show")
			if err != nil {
				t.Fatalf("wrenctl ipam show: %v", err)
			}
			t.Logf("%s: wrenctl ipam show:\n%s", n.name, out)
			out, _, err = runWrenctl(t, ctl, sock, nil, "-o", "wide", "ipam", "show", "--show-blocks", "--show-borrowed")
			if err != nil {
				t.Fatalf("wrenctl -o wide ipam show: %v", err)
			}
			t.Logf("%s: wrenctl -o wide ipam show --show-blocks --show-borrowed:\n%s", n.name, out)
			out, _, err = runWrenctl(t, ctl, sock, nil, "-o", "json", "ipam", "show")
			if err != nil {
				t.Fatalf("wrenctl -o json ipam show: %v", err)
			}
			t.Logf("%s: wrenctl -o json ipam show:\n%s", n.name, out)
		}
	}
}

// tableRows returns the cells of every row of the bordered tables in
// out, headings included, trimmed.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}
