package cluster_test

// IPAM check and release against a real kube-apiserver (envtest).
//
// Test addresses: pods 10.244.8.0/24 (pool "pool-8", /26 blocks), one pod
// address outside every pool (10.99.0.5), nodes 198.18.0.0/15 (API
// objects only).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	kubetest "github.com/wren-net/wren/test/kube"
)

// seedPod creates a pod on node with the given status (phase and
// addresses; none: no address yet) through the status subresource, as a
// kubelet would.
func seedPod(t *testing.T, c client.Client, ns, name, node string, hostNetwork bool, phase corev1.PodPhase, ips ...string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork,
			Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}},
	}
	if err := c.Create(ctx, p); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	p.Status.Phase = phase
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	if err := c.Status().Update(ctx, p); err != nil {
		t.Fatalf("pod %s/%s status: %v", ns, name, err)
	}
}

// alloc is a pod allocation in IPAMBlock form ("ns/pod/cid" handle).
func alloc(ip, ns, pod, cid, node string) v1alpha1.IPAllocation {
	return v1alpha1.IPAllocation{IP: ip, Handle: ns + "/" + pod + "/" + cid, Namespace: ns, Pod: pod, ContainerID: cid, Node: node}
}

func nodeAlloc(ip, node string) v1alpha1.IPAllocation {
	return v1alpha1.IPAllocation{IP: ip, Handle: "node/" + node + "/vxlan", Node: node}
}

func seedBlock(t *testing.T, c client.Client, cidr, affinity string, allocs ...v1alpha1.IPAllocation) {
	t.Helper()
	b := &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BlockName(netip.MustParsePrefix(cidr))},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: v1alpha1.CIDR(cidr), Affinity: affinity, State: v1alpha1.BlockConfirmed, Allocations: allocs},
	}
	if err := c.Create(context.Background(), b); err != nil {
		t.Fatalf("create ipamblock %s: %v", cidr, err)
	}
}

func getBlock(t *testing.T, c client.Client, cidr string) *v1alpha1.IPAMBlock {
	t.Helper()
	var b v1alpha1.IPAMBlock
	if err := c.Get(context.Background(), client.ObjectKey{Name: v1alpha1.BlockName(netip.MustParsePrefix(cidr))}, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func blockIPs(b *v1alpha1.IPAMBlock) []string {
	var out []string
	for _, a := range b.Spec.Allocations {
		out = append(out, a.IP)
	}
	return out
}

// seedIPAMProblems writes a cluster with one of every finding and the
// look-alikes that are not findings:
//
//	node-a's block 10.244.8.0/26:
//	  .1  web-1 (live, reports .1)                     fine
//	  .2  gone-1 (no such pod)                         leaked
//	  .3  node-a's VXLAN address                       fine (node exists)
//	  .4  web-2 on node-b (reports .4)                 borrowed
//	  .6  web-3's earlier sandbox (web-3 reports .7)   leaked
//	  .7  web-3 (reports .7)                           fine
//	  .8  web-4 (no address yet)                       fine (being set up)
//	  .9  done-1 (Succeeded)                           leaked
//	node-gone's block 10.244.8.64/26 (no such node):  orphan block
//	  .65 node-gone's VXLAN address                    leaked
//	pods: lost-1 reports 10.244.8.130 (no allocation), dup-1 reports
//	10.244.8.1 (web-1's): both missing; host-1 (hostNetwork, node
//	address) and other-1 (10.99.0.5, outside every pool) are not Wren's.
func seedIPAMProblems(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []string{"node-a", "node-b"} {
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-8"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.8.0/24", BlockSize: 26}}); err != nil {
		t.Fatal(err)
	}
	seedBlock(t, c, "10.244.8.0/26", "node-a",
		alloc("10.244.8.1", "default", "web-1", "c1", "node-a"),
		alloc("10.244.8.2", "default", "gone-1", "c2", "node-a"),
		nodeAlloc("10.244.8.3", "node-a"),
		alloc("10.244.8.4", "default", "web-2", "c4", "node-b"),
		alloc("10.244.8.6", "default", "web-3", "c6", "node-a"),
		alloc("10.244.8.7", "default", "web-3", "c7", "node-a"),
		alloc("10.244.8.8", "default", "web-4", "c8", "node-a"),
		alloc("10.244.8.9", "default", "done-1", "c9", "node-a"),
	)
	seedBlock(t, c, "10.244.8.64/26", "node-gone", nodeAlloc("10.244.8.65", "node-gone"))
	seedPod(t, c, "default", "web-1", "node-a", false, corev1.PodRunning, "10.244.8.1")
	seedPod(t, c, "default", "web-2", "node-b", false, corev1.PodRunning, "10.244.8.4")
	seedPod(t, c, "default", "web-3", "node-a", false, corev1.PodRunning, "10.244.8.7")
	seedPod(t, c, "default", "web-4", "node-a", false, corev1.PodPending)
	seedPod(t, c, "default", "done-1", "node-a", false, corev1.PodSucceeded, "10.244.8.9")
	seedPod(t, c, "default", "lost-1", "node-b", false, corev1.PodRunning, "10.244.8.130")
	seedPod(t, c, "default", "dup-1", "node-b", false, corev1.PodRunning, "10.244.8.1")
	seedPod(t, c, "default", "host-1", "node-a", true, corev1.PodRunning, "198.18.0.11")
	seedPod(t, c, "default", "other-1", "node-a", false, corev1.PodRunning, "10.99.0.5")
}

// TestIPAMCheckAPI: CheckIPAM over the seeded cluster reports exactly
// the leaks, missing allocations, orphan block and borrowed address of
// seedIPAMProblems, none of the look-alikes, and the counts.
func TestIPAMCheckAPI(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	seedIPAMProblems(t, c)
	r, err := cluster.CheckIPAM(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	b0, b64 := netip.MustParsePrefix("10.244.8.0/26"), netip.MustParsePrefix("10.244.8.64/26")
	want := cluster.IPAMReport{
		Leaked: []cluster.LeakedAllocation{
			{IP: a("10.244.8.2"), Block: b0, BlockNode: "node-a", Handle: "default/gone-1/c2", Owner: "default/gone-1", Node: "node-a",
				Reason: "pod default/gone-1 does not exist"},
			{IP: a("10.244.8.6"), Block: b0, BlockNode: "node-a", Handle: "default/web-3/c6", Owner: "default/web-3", Node: "node-a",
				Reason: "pod default/web-3 uses 10.244.8.7 (this address is an earlier sandbox's)"},
			{IP: a("10.244.8.9"), Block: b0, BlockNode: "node-a", Handle: "default/done-1/c9", Owner: "default/done-1", Node: "node-a",
				Reason: "pod default/done-1 has finished (Succeeded)"},
			{IP: a("10.244.8.65"), Block: b64, BlockNode: "node-gone", Handle: "node/node-gone/vxlan", Owner: "node/node-gone", Node: "node-gone",
				Reason: "node node-gone does not exist"},
		},
		Missing: []cluster.MissingAllocation{
			{IP: a("10.244.8.1"), Pod: "default/dup-1", Node: "node-b", Pool: "pool-8", Reason: "allocated to default/web-1 (handle default/web-1/c1)"},
			{IP: a("10.244.8.130"), Pod: "default/lost-1", Node: "node-b", Pool: "pool-8", Reason: "no allocation"},
		},
		OrphanBlocks: []cluster.OrphanBlock{{Block: b64, Node: "node-gone", Allocations: 1}},
		Borrowed: []cluster.BorrowedAllocation{
			{IP: a("10.244.8.4"), Block: b0, BlockNode: "node-a", Pod: "default/web-2", Node: "node-b", Handle: "default/web-2/c4"},
		},
		Summary: cluster.IPAMSummary{Blocks: 2, Allocations: 9, Pods: 5, Leaked: 4, Missing: 2, OrphanBlocks: 1, Borrowed: 1, Problems: 7},
	}
	if d := cmp.Diff(want, r, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); d != "" {
		t.Errorf("CheckIPAM (-want +got):\n%s", d)
	}
}

// TestIPAMCheckAPIClean: a consistent cluster (a pod with its
// allocation, a node's tunnel address, a borrowed address) has no
// problem.
func TestIPAMCheckAPIClean(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"node-a", "node-b"} {
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-8"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.8.0/24", BlockSize: 26}}); err != nil {
		t.Fatal(err)
	}
	seedBlock(t, c, "10.244.8.0/26", "node-a",
		alloc("10.244.8.1", "default", "web-1", "c1", "node-a"),
		nodeAlloc("10.244.8.3", "node-a"),
		alloc("10.244.8.4", "default", "web-2", "c4", "node-b"))
	seedPod(t, c, "default", "web-1", "node-a", false, corev1.PodRunning, "10.244.8.1")
	seedPod(t, c, "default", "web-2", "node-b", false, corev1.PodRunning, "10.244.8.4")
	r, err := cluster.CheckIPAM(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	want := cluster.IPAMSummary{Blocks: 1, Allocations: 3, Pods: 2, Borrowed: 1}
	if d := cmp.Diff(want, r.Summary); d != "" || len(r.Leaked)+len(r.Missing)+len(r.OrphanBlocks) > 0 {
		t.Errorf("CheckIPAM summary (-want +got):\n%s\nreport: %+v", d, r)
	}
}

// TestIPAMReleaseAPI: ReleaseIP frees leaked addresses (a deleted pod's,
// an earlier sandbox's, a finished pod's, a deleted node's) and nothing
// else in their block; it refuses, leaving the block's resourceVersion
// unchanged, an address held by a live pod (reporting it, borrowed, or
// still without an address), a live node's tunnel address, and a leaked
// allocation whose address another pod reports; and it says why for
// addresses that are not allocated.
func TestIPAMReleaseAPI(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seedIPAMProblems(t, c)
	const b0 = "10.244.8.0/26"

	for _, tc := range []struct {
		ip      string
		wantErr error
		msg     string // in the error
	}{
		{"10.244.8.1", cluster.ErrInUse, "held by pod default/web-1"},
		{"10.244.8.4", cluster.ErrInUse, "held by pod default/web-2"},
		{"10.244.8.8", cluster.ErrInUse, "held by pod default/web-4 (it has no address yet"},
		{"10.244.8.3", cluster.ErrInUse, "held by node node-a"},
		{"10.244.8.10", cluster.ErrNotAllocated, "10.244.8.10 is free in block 10.244.8.0/26 (node node-a)"},
		{"10.244.8.200", cluster.ErrNotAllocated, "10.244.8.200 is in IP pool pool-8 (10.244.8.0/24) but in no block"},
		{"10.99.0.1", cluster.ErrNotAllocated, "10.99.0.1 is outside every IP pool and block"},
	} {
		before := getBlock(t, c, b0).ResourceVersion
		_, err := cluster.ReleaseIP(ctx, c, netip.MustParseAddr(tc.ip))
		if !errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("ReleaseIP(%s) = %v, want %v containing %q", tc.ip, err, tc.wantErr, tc.msg)
		}
		if after := getBlock(t, c, b0).ResourceVersion; after != before {
			t.Errorf("ReleaseIP(%s) refused but block %s changed: resourceVersion %s -> %s", tc.ip, b0, before, after)
		}
	}

	// A pod that reports a leaked address blocks its release.
	seedPod(t, c, "default", "squatter", "node-b", false, corev1.PodRunning, "10.244.8.2")
	_, err = cluster.ReleaseIP(ctx, c, netip.MustParseAddr("10.244.8.2"))
	if !errors.Is(err, cluster.ErrInUse) || !strings.Contains(err.Error(), "pod default/squatter (node node-b) reports this address") {
		t.Errorf("ReleaseIP(10.244.8.2) with other/squatter reporting it = %v, want ErrInUse naming the pod", err)
	}
	if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "squatter"}}, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		ip, reason string
	}{
		{"10.244.8.2", "pod default/gone-1 does not exist"},
		{"10.244.8.6", "pod default/web-3 uses 10.244.8.7 (this address is an earlier sandbox's)"},
		{"10.244.8.9", "pod default/done-1 has finished (Succeeded)"},
	} {
		rel, err := cluster.ReleaseIP(ctx, c, netip.MustParseAddr(tc.ip))
		if err != nil || rel.Reason != tc.reason || rel.IP.String() != tc.ip || rel.Block.String() != b0 {
			t.Errorf("ReleaseIP(%s) = %+v, %v; want released from %s because %q", tc.ip, rel, err, b0, tc.reason)
		}
	}
	if got, want := blockIPs(getBlock(t, c, b0)), []string{"10.244.8.1", "10.244.8.3", "10.244.8.4", "10.244.8.7", "10.244.8.8"}; !cmp.Equal(got, want) {
		t.Errorf("block %s after the releases: %v, want %v", b0, got, want)
	}
	rel, err := cluster.ReleaseIP(ctx, c, netip.MustParseAddr("10.244.8.65"))
	if err != nil || rel.Owner != "node/node-gone" {
		t.Errorf("ReleaseIP(10.244.8.65) = %+v, %v; want node-gone's address released", rel, err)
	}
	if got := blockIPs(getBlock(t, c, "10.244.8.64/26")); len(got) != 0 {
		t.Errorf("block 10.244.8.64/26 after the release: %v, want empty", got)
	}
	// Released twice: now free.
	if _, err := cluster.ReleaseIP(ctx, c, netip.MustParseAddr("10.244.8.2")); !errors.Is(err, cluster.ErrNotAllocated) {
		t.Errorf("second ReleaseIP(10.244.8.2) = %v, want ErrNotAllocated", err)
	}
	r, err := cluster.CheckIPAM(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Leaked) != 0 || r.Summary.Allocations != 5 {
		t.Errorf("CheckIPAM after the releases: leaked %+v, %d allocations; want none leaked, 5 allocations", r.Leaked, r.Summary.Allocations)
	}
}

// racingClient makes the first block update of ReleaseIP lose a race:
// just before it, another writer adds an allocation to the block.
type racingClient struct {
	client.Client
	t     *testing.T
	raced bool
}

func (r *racingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if b, ok := obj.(*v1alpha1.IPAMBlock); ok && !r.raced {
		r.raced = true
		var cur v1alpha1.IPAMBlock
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(b), &cur); err != nil {
			r.t.Fatal(err)
		}
		cur.Spec.Allocations = append(cur.Spec.Allocations, alloc("10.244.8.20", "default", "new-1", "c20", "node-a"))
		if err := r.Client.Update(ctx, &cur); err != nil {
			r.t.Fatal(err)
		}
	}
	return r.Client.Update(ctx, obj, opts...)
}

// TestIPAMReleaseAPIConflict: the release's write is conditional on the
// block's resourceVersion: when another writer changed the block in
// between, the release reads again and retries, and the other writer's
// allocation survives.
func TestIPAMReleaseAPIConflict(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seedIPAMProblems(t, c)
	seedPod(t, c, "default", "new-1", "node-a", false, corev1.PodPending)
	rc := &racingClient{Client: c, t: t}
	if _, err := cluster.ReleaseIP(ctx, rc, netip.MustParseAddr("10.244.8.2")); err != nil || !rc.raced {
		t.Fatalf("ReleaseIP(10.244.8.2) = %v (raced: %v)", err, rc.raced)
	}
	want := []string{"10.244.8.1", "10.244.8.3", "10.244.8.4", "10.244.8.6", "10.244.8.7", "10.244.8.8", "10.244.8.9", "10.244.8.20"}
	if got := blockIPs(getBlock(t, c, "10.244.8.0/26")); !cmp.Equal(got, want) {
		t.Errorf("block after a release that raced with an allocation: %v, want %v", got, want)
	}
}

// lateClient creates a pod and its allocation just after CheckIPAM's
// first pod list, as a CNI ADD racing with the check would.
type lateClient struct {
	client.Client
	t    *testing.T
	done bool
}

func (l *lateClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := l.Client.List(ctx, list, opts...); err != nil {
		return err
	}
	if _, ok := list.(*corev1.PodList); ok && !l.done {
		l.done = true
		seedPod(l.t, l.Client, "default", "late-1", "node-a", false, corev1.PodPending)
		b := getBlock(l.t, l.Client, "10.244.8.0/26")
		b.Spec.Allocations = append(b.Spec.Allocations, alloc("10.244.8.30", "default", "late-1", "c30", "node-a"))
		if err := l.Client.Update(ctx, b); err != nil {
			l.t.Fatal(err)
		}
	}
	return nil
}

// TestIPAMCheckAPIRace: a pod created (and its address allocated) after
// CheckIPAM listed the pods is not reported as a leak: having found
// problems, the check lists pods again after the blocks.
func TestIPAMCheckAPIRace(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	seedIPAMProblems(t, c)
	lc := &lateClient{Client: c, t: t}
	r, err := cluster.CheckIPAM(context.Background(), lc)
	if err != nil || !lc.done {
		t.Fatalf("CheckIPAM = %v (pod created: %v)", err, lc.done)
	}
	var leaked []string
	for _, l := range r.Leaked {
		leaked = append(leaked, l.IP.String())
	}
	if want := []string{"10.244.8.2", "10.244.8.6", "10.244.8.9", "10.244.8.65"}; !cmp.Equal(leaked, want) || r.Summary.Allocations != 10 {
		t.Errorf("leaked %v of %d allocations, want %v of 10 (10.244.8.30 is late-1's, created during the check)", leaked, r.Summary.Allocations, want)
	}
}
