//go:build linux

package nstest_test

// wrenctl against real agents: three wren-agent binaries in a full mesh
// (bgpRestartCluster), each asked over its own unix socket.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// runWrenctl runs the wrenctl binary against an agent's socket; cred, if
// set, runs it as that user.
func runWrenctl(t *testing.T, bin, socket string, cred *syscall.Credential, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--socket", socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestWrenctlStatus: `wrenctl status` on every node of a three-node mesh
// lists the two other nodes as mesh peers, Established, with one accepted
// prefix each (their block) and one advertised (its own); -o json parses
// into the API's message and matches the table; a non-root user is
// refused by the socket's mode.
func TestWrenctlStatus(t *testing.T) {
	ac, procs := bgpRestartCluster(t, 3, nil)
	ctl := buildWrenctl(t)
	ac.pingMatrix(30 * time.Second)

	for _, n := range ac.nodes {
		sock := procs[n.name].socket
		var r debugv1.StatusReply
		nstest.Poll(t, 30*time.Second, n.name+": wrenctl status shows the mesh with its prefixes", func() error {
			out, errOut, err := runWrenctl(t, ctl, sock, nil, "-o", "json", "status")
			if err != nil {
				return fmt.Errorf("%v: %s", err, errOut)
			}
			r.Reset()
			if err := protojson.Unmarshal([]byte(out), &r); err != nil {
				return fmt.Errorf("-o json does not parse: %v\n%s", err, out)
			}
			if r.Node != n.name || r.NodeIp != n.ip.Addr().String() || !r.Ready || r.AsNumber != 64512 {
				return fmt.Errorf("node %q ip %q ready %v AS %d", r.Node, r.NodeIp, r.Ready, r.AsNumber)
			}
			var others []string
			for _, o := range ac.nodes {
				if o != n {
					others = append(others, o.name)
				}
			}
			if len(r.Peers) != len(others) {
				return fmt.Errorf("%d peers, want %d: %v", len(r.Peers), len(others), r.Peers)
			}
			for i, p := range r.Peers {
				if p.Name != others[i] || p.Type != "mesh" || p.State != "established" || p.Since == nil ||
					p.Accepted != 1 || p.Rejected != 0 || p.Advertised != 1 || !p.EndOfRib {
					return fmt.Errorf("peer %d: %v", i, p)
				}
			}
			return nil
		})
		// The table says the same.
		out, errOut, err := runWrenctl(t, ctl, sock, nil, "status")
		if err != nil {
			t.Fatalf("%s: wrenctl status: %v: %s", n.name, err, errOut)
		}
		for _, p := range r.Peers {
			row := fmt.Sprintf("| %-12s | mesh      | %s | up    |", p.Address, p.Name)
			if !strings.Contains(out, row) || !strings.Contains(out, "|        1 |        0 |          1 | Established |") {
				t.Errorf("%s: wrenctl status lacks %q with 1/0/1 prefixes:\n%s", n.name, row, out)
			}
		}
		t.Logf("%s: wrenctl status:\n%s", n.name, out)
		// -o yaml is the same document.
		out, _, err = runWrenctl(t, ctl, sock, nil, "-o", "yaml", "peers")
		if err != nil || !strings.Contains(out, "state: established") {
			t.Errorf("%s: wrenctl -o yaml peers: %v\n%s", n.name, err, out)
		}
	}

	// The socket is root-only: its mode, and a non-root user refused by
	// it (its directory opened up so only the socket's mode can refuse).
	sock := procs["node-1"].socket
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket with 0600", sock, fi.Mode())
	}
	openUp(t, sock)
	openUp(t, ctl)
	_, errOut, err := runWrenctl(t, ctl, sock, &syscall.Credential{Uid: 65534, Gid: 65534}, "status")
	if err == nil || !strings.Contains(errOut, "permission denied on "+sock) || !strings.Contains(errOut, "run wrenctl as root") {
		t.Errorf("wrenctl as nobody: err %v, stderr %q; want a refusal naming the socket", err, errOut)
	}
	// And version names both builds.
	out, _, err := runWrenctl(t, ctl, sock, nil, "version")
	if err != nil || !strings.Contains(out, "wrenctl dev") || !strings.Contains(out, "wren-agent dev") {
		t.Errorf("wrenctl version: %v\n%s", err, out)
	}
}

// openUp makes every directory above path, up to the temporary
// directory, 0755 (t.TempDir makes them 0700).
func openUp(t *testing.T, path string) {
	t.Helper()
	top := filepath.Clean(os.TempDir())
	for d := filepath.Dir(path); strings.HasPrefix(d, top+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWrenctlDataplane: on a three-node mesh, `wrenctl routes` lists the
// two remote blocks as learned from their nodes and in the kernel;
// `wrenctl kernel-routes` prints what `ip route show proto wren` prints;
// `wrenctl links` names the node's pod on its veth; each -o json parses.
func TestWrenctlDataplane(t *testing.T) {
	ac, procs := bgpRestartCluster(t, 3, nil)
	ctl := buildWrenctl(t)
	ac.pingMatrix(30 * time.Second)
	n := ac.nodes[0]
	sock := procs[n.name].socket
	blocks := ac.blocksByNode(t)

	var rr debugv1.RoutesReply
	nstest.Poll(t, 20*time.Second, "wrenctl routes lists both remote blocks, in the kernel", func() error {
		out, errOut, err := runWrenctl(t, ctl, sock, nil, "-o", "json", "routes")
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		rr.Reset()
		if err := protojson.Unmarshal([]byte(out), &rr); err != nil {
			return fmt.Errorf("-o json does not parse: %v\n%s", err, out)
		}
		var want []string
		for _, o := range ac.nodes[1:] {
			want = append(want, fmt.Sprintf("%s via %s from %s in kernel", blocks[o.name], o.ip.Addr(), o.ip.Addr()))
		}
		var got []string
		for _, r := range rr.Routes {
			s := fmt.Sprintf("%s via %s from %s", r.Prefix, r.NextHop, r.Peer)
			if r.Programmed && r.WhyNot == "" {
				s += " in kernel"
			}
			got = append(got, s)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("routes %q, want %q", got, want)
		}
		return nil
	})
	out, _, _ := runWrenctl(t, ctl, sock, nil, "routes")
	t.Logf("%s: wrenctl routes:\n%s", n.name, out)

	// kernel-routes is what `ip route` prints of Wren's routes, line for
	// line (proto 87 is "wren" where rt_protos.d names it).
	ipOut, err := n.ns.Run(context.Background(), "ip", "route", "show", "table", "main")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) []string {
		var ls []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			l = strings.Join(strings.Fields(strings.ReplaceAll(l, "proto 87", "proto wren")), " ")
			if strings.Contains(l, "proto wren") {
				ls = append(ls, l)
			}
		}
		slices.Sort(ls)
		return ls
	}
	out, errOut, err := runWrenctl(t, ctl, sock, nil, "kernel-routes")
	if err != nil {
		t.Fatalf("kernel-routes: %v: %s", err, errOut)
	}
	if got, want := norm(out), norm(ipOut); !slices.Equal(got, want) {
		t.Errorf("wrenctl kernel-routes:\n%s\nip route show proto wren:\n%s", out, ipOut)
	}
	t.Logf("%s: wrenctl kernel-routes:\n%s", n.name, out)

	out, errOut, err = runWrenctl(t, ctl, sock, nil, "-o", "json", "links")
	if err != nil {
		t.Fatalf("links: %v: %s", err, errOut)
	}
	var lr debugv1.LinksReply
	if err := protojson.Unmarshal([]byte(out), &lr); err != nil {
		t.Fatalf("links -o json: %v\n%s", err, out)
	}
	pod := n.pods[0]
	if len(lr.Veths) != 1 || lr.Veths[0].Pod != "default/"+pod.name || lr.Veths[0].Ip != pod.ip.String() || !lr.Veths[0].Up ||
		!strings.HasPrefix(lr.Veths[0].Name, "cali") || len(lr.Tunnels) != 0 {
		t.Errorf("links: %v", &lr)
	}
	out, _, _ = runWrenctl(t, ctl, sock, nil, "links")
	t.Logf("%s: wrenctl links:\n%s", n.name, out)
}

// blocksByNode maps each node to the one IPAM block it holds.
func (ac *agentCluster) blocksByNode(t *testing.T) map[string]string {
	t.Helper()
	var l v1alpha1.IPAMBlockList
	if err := ac.c.List(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, b := range l.Items {
		if _, dup := m[b.Spec.Affinity]; dup {
			t.Fatalf("node %s holds more than one block", b.Spec.Affinity)
		}
		m[b.Spec.Affinity] = string(b.Spec.CIDR)
	}
	return m
}

// TestWrenctlExplain: three nodes with BGP and a pool of two blocks, so
// node-3's pod borrows an address from another node's block. From
// node-1, `wrenctl explain` is right for its own pod, node-2's pod,
// node-3's borrowed address, a free address, an address in no pool, and
// node-2's block while its route is deleted by hand (it says so; after
// the agent's repair it says reachable again).
func TestWrenctlExplain(t *testing.T) {
	ac, procs := binaryCluster(t, 3, "10.244.7.0/25", nil, nil)
	ctl := buildWrenctl(t)
	ac.pingMatrix(30 * time.Second)
	n1, n2, n3 := ac.nodes[0], ac.nodes[1], ac.nodes[2]
	sock := procs[n1.name].socket
	blocks := ac.blocksByNode(t)
	if _, ok := blocks[n3.name]; ok {
		t.Fatalf("node-3 holds a block (%v); the pool should have none left for it", blocks)
	}

	explain := func(ip string) (*debugv1.ExplainReply, string, int) {
		t.Helper()
		out, errOut, err := runWrenctl(t, ctl, sock, nil, "-o", "json", "explain", ip)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("wrenctl explain %s: %v", ip, err)
		}
		r := &debugv1.ExplainReply{}
		if err := protojson.Unmarshal([]byte(out), r); err != nil {
			t.Fatalf("wrenctl -o json explain %s: %v\n%s%s", ip, err, out, errOut)
		}
		text, _, _ := runWrenctl(t, ctl, sock, nil, "explain", ip)
		return r, text, code
	}
	check := func(what, ip string, ok bool, verdict ...string) *debugv1.ExplainReply {
		t.Helper()
		var r *debugv1.ExplainReply
		var text string
		nstest.Poll(t, 10*time.Second, "explain "+what, func() error {
			var code int
			r, text, code = explain(ip)
			if r.Ok != ok || (code == 0) != ok {
				return fmt.Errorf("ok %v (exit %d), want %v: %s", r.Ok, code, ok, r.Verdict)
			}
			for _, v := range verdict {
				if !strings.Contains(r.Verdict, v) {
					return fmt.Errorf("verdict %q lacks %q", r.Verdict, v)
				}
			}
			return nil
		})
		t.Logf("wrenctl explain %s (%s):\n%s", ip, what, text)
		return r
	}

	local := n1.pods[0]
	r := check("node-1's own pod", local.ip.String(), true, "reachable via "+local.ip.String()+" dev cali", "(pod default/node-1-web on this node)")
	if r.HostNode != n1.name || r.Pod != "default/node-1-web" || r.Block != blocks[n1.name] || len(r.Findings) != 3 {
		t.Errorf("local pod: %v", r)
	}
	remote := n2.pods[0]
	check("node-2's pod", remote.ip.String(), true,
		fmt.Sprintf("reachable via %s via %s dev eth0 proto wren (pod default/node-2-web on node node-2)", blocks[n2.name], n2.ip.Addr()))
	guest := n3.pods[0]
	r = check("node-3's borrowed address", guest.ip.String(), true,
		fmt.Sprintf("reachable via %s via %s dev eth0 proto wren (pod default/node-3-web on node node-3)", guest.ip, n3.ip.Addr()))
	if r.HostNode != n3.name || r.BlockNode == n3.name || !strings.Contains(r.Findings[0].Says, "borrowed: the block is node "+r.BlockNode+"'s") {
		t.Errorf("borrowed: %v", r)
	}
	check("an address in no pool", "192.0.2.1", false, "192.0.2.1 is in no IPPool")
	free := netip.MustParsePrefix(blocks[n2.name]).Addr()
	for i := 0; i < 40; i++ {
		free = free.Next()
	}
	check("a free address", free.String(), false, "no pod holds "+free.String()+": it is free in block "+blocks[n2.name])
	reserved := free.Next()
	if err := ac.c.Create(context.Background(), &v1alpha1.IPReservation{ObjectMeta: metav1.ObjectMeta{Name: "keep-out"},
		Spec: v1alpha1.IPReservationSpec{ReservedCIDRs: []string{reserved.String()}}}); err != nil {
		t.Fatal(err)
	}
	check("a reserved address", reserved.String(), false, "no pod holds "+reserved.String()+": IPReservation keep-out reserves it")

	// node-2's block route deleted by hand on node-1. The agent puts it
	// back at once; deleting it again right after that repair lands
	// inside the loop's minimum interval between runs (100 ms), which
	// leaves explain time to see the hole.
	dst := blocks[n2.name]
	hasRoute := func() bool {
		out, _ := n1.ns.Run(context.Background(), "ip", "route", "show", dst, "proto", "87")
		return strings.TrimSpace(out) != ""
	}
	var saw string
	nstest.Poll(t, 30*time.Second, "explain sees node-2's block route deleted by hand", func() error {
		n1.ns.MustRun(t, "ip", "route", "del", dst, "proto", "87")
		nstest.PollEvery(t, 2*time.Millisecond, 5*time.Second, "the agent repairs "+dst, func() error {
			if !hasRoute() {
				return fmt.Errorf("%s not back yet", dst)
			}
			return nil
		})
		n1.ns.MustRun(t, "ip", "route", "del", dst, "proto", "87")
		r, text, code := explain(remote.ip.String())
		if r.Ok || code != 1 || !strings.Contains(r.Verdict, "the kernel has no Wren route for "+remote.ip.String()) {
			return fmt.Errorf("missed the hole: %s", r.Verdict)
		}
		saw = text
		return nil
	})
	t.Logf("wrenctl explain %s with its route deleted by hand:\n%s", remote.ip, saw)
	check("node-2's pod after the repair", remote.ip.String(), true, "reachable via "+dst)
}

// TestGoBGPCLI: with --gobgp-api, the stock gobgp CLI of the embedded
// GoBGP release, run inside node-1's namespace, shows the same sessions
// (gobgp neighbor) and the same best paths (gobgp global rib) as
// wrenctl status and wrenctl routes; the other nodes, without the flag,
// serve no GoBGP API.
func TestGoBGPCLI(t *testing.T) {
	gobgp := nstest.RequireGoBGPCLI(t)
	const api = "127.0.0.1:50051"
	ac, procs := binaryCluster(t, 3, "10.244.0.0/16", nil, func(node string) []string {
		if node == "node-1" {
			return []string{"--gobgp-api", api}
		}
		return nil
	})
	ctl := buildWrenctl(t)
	ac.pingMatrix(30 * time.Second)
	n1 := ac.nodes[0]
	sock := procs[n1.name].socket
	cli := func(ns *nstest.NS, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return ns.Run(ctx, gobgp, append([]string{"-u", "127.0.0.1", "-p", "50051"}, args...)...)
	}

	// Sessions: address and state, from both.
	var st debugv1.StatusReply
	out, errOut, err := runWrenctl(t, ctl, sock, nil, "-o", "json", "peers")
	if err != nil || protojson.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("wrenctl peers: %v %s\n%s", err, errOut, out)
	}
	var want []string
	for _, p := range st.Peers {
		want = append(want, p.Address+" "+p.State)
	}
	if len(want) != 2 {
		t.Fatalf("wrenctl peers: %q, want the two other nodes", want)
	}
	out, err = cli(n1.ns, "neighbor", "-j")
	if err != nil {
		t.Fatalf("gobgp neighbor -j: %v\n%s", err, out)
	}
	var neighbors []struct {
		Conf struct {
			NeighborAddress string `json:"neighbor_address"`
		} `json:"conf"`
		State struct {
			SessionState int `json:"session_state"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &neighbors); err != nil {
		t.Fatalf("gobgp neighbor -j: %v\n%s", err, out)
	}
	var got []string
	for _, n := range neighbors {
		state := fmt.Sprintf("state %d", n.State.SessionState)
		if n.State.SessionState == 6 { // api.PeerState_SESSION_STATE_ESTABLISHED
			state = "established"
		}
		got = append(got, n.Conf.NeighborAddress+" "+state)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("gobgp neighbor: %q; wrenctl peers: %q", got, want)
	}

	// Best paths: the learned ones with next hop and peer, from both; the
	// local one is node-1's own block.
	var rr debugv1.RoutesReply
	out, errOut, err = runWrenctl(t, ctl, sock, nil, "-o", "json", "routes")
	if err != nil || protojson.Unmarshal([]byte(out), &rr) != nil {
		t.Fatalf("wrenctl routes: %v %s\n%s", err, errOut, out)
	}
	want = []string{ac.blocksByNode(t)[n1.name] + " local"}
	for _, r := range rr.Routes {
		want = append(want, fmt.Sprintf("%s via %s from %s", r.Prefix, r.NextHop, r.Peer))
	}
	out, err = cli(n1.ns, "global", "rib", "-j")
	if err != nil {
		t.Fatalf("gobgp global rib -j: %v\n%s", err, out)
	}
	var rib map[string][]struct {
		Best        bool   `json:"best"`
		PeerAddress string `json:"peer-address"`
		Attrs       []struct {
			Type    int    `json:"type"`
			NextHop string `json:"nexthop"`
		} `json:"attrs"`
	}
	if err := json.Unmarshal([]byte(out), &rib); err != nil {
		t.Fatalf("gobgp global rib -j: %v\n%s", err, out)
	}
	got = nil
	for prefix, paths := range rib {
		for _, p := range paths {
			if !p.Best {
				continue
			}
			if p.PeerAddress == "" {
				got = append(got, prefix+" local")
				continue
			}
			nh := ""
			for _, a := range p.Attrs {
				if a.Type == 3 { // NEXT_HOP
					nh = a.NextHop
				}
			}
			got = append(got, fmt.Sprintf("%s via %s from %s", prefix, nh, p.PeerAddress))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("gobgp global rib: %q; wrenctl routes and node-1's block: %q", got, want)
	}
	for _, args := range [][]string{{"neighbor"}, {"global", "rib"}} {
		out, _ := cli(n1.ns, args...)
		t.Logf("gobgp %s:\n%s", strings.Join(args, " "), out)
	}

	// Node-2 has no GoBGP API.
	if out, err := cli(ac.nodes[1].ns, "neighbor"); err == nil {
		t.Errorf("node-2 answers gobgp without --gobgp-api:\n%s", out)
	}
}
