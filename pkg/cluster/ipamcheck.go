package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
)

// This file is `wrenctl ipam check` and `wrenctl ipam release`: a
// cluster-wide comparison of the IPAM blocks with the pods and nodes, read
// from the API server (an agent caches only its own node's pods), and the
// release of one leaked address. Like `calicoctl ipam check`, it compares
// addresses with what the pods report; it cannot compare the container ID
// of a pod handle, since a pod's sandbox ID is not in the Pod object.

// IPAMReport is what CheckIPAM found. Borrowed addresses are listed for
// information: borrowing is how IPAM works when a node has no free block,
// not a fault (Problems leaves them out).
type IPAMReport struct {
	// Leaked are allocations no pod or node holds any more.
	Leaked []LeakedAllocation `json:"leaked"`
	// Missing are pod addresses inside an IP pool that no allocation
	// records for that pod.
	Missing []MissingAllocation `json:"missing"`
	// OrphanBlocks are blocks whose affinity names a node that does not
	// exist.
	OrphanBlocks []OrphanBlock `json:"orphanBlocks"`
	// Borrowed are addresses allocated for a node other than their
	// block's.
	Borrowed []BorrowedAllocation `json:"borrowed"`
	// Summary counts the above and what was checked.
	Summary IPAMSummary `json:"summary"`
}

// LeakedAllocation is an allocation whose owner is gone.
type LeakedAllocation struct {
	IP        netip.Addr   `json:"ip"`
	Block     netip.Prefix `json:"block"`
	BlockNode string       `json:"blockNode"` // the block's affinity
	Handle    string       `json:"handle"`
	// Owner is the pod ("namespace/name") or node ("node/<name>") the
	// handle names, "" if it names neither.
	Owner string `json:"owner"`
	// Node is the node the address was allocated for.
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// MissingAllocation is a pod's address that IPAM does not record as the
// pod's: nothing stops IPAM from handing it out again.
type MissingAllocation struct {
	IP     netip.Addr `json:"ip"`
	Pod    string     `json:"pod"` // namespace/name
	Node   string     `json:"node"`
	Pool   string     `json:"pool"`
	Reason string     `json:"reason"`
}

// OrphanBlock is a block claimed by a node that no longer exists. The
// agents release such blocks themselves (ipam.ReleaseOrphanBlocks) unless
// a live node borrowed from them.
type OrphanBlock struct {
	Block       netip.Prefix `json:"block"`
	Node        string       `json:"node"`
	Allocations int          `json:"allocations"`
}

// BorrowedAllocation is an address in one node's block allocated for
// another node (routed there as a /32).
type BorrowedAllocation struct {
	IP        netip.Addr   `json:"ip"`
	Block     netip.Prefix `json:"block"`
	BlockNode string       `json:"blockNode"`
	Pod       string       `json:"pod"` // namespace/name, "" for a node's address
	Node      string       `json:"node"`
	Handle    string       `json:"handle"`
}

// IPAMSummary counts what CheckIPAM checked and found.
type IPAMSummary struct {
	Blocks       int `json:"blocks"`
	Allocations  int `json:"allocations"`
	Pods         int `json:"pods"` // pods with an address inside an IP pool
	Leaked       int `json:"leaked"`
	Missing      int `json:"missing"`
	OrphanBlocks int `json:"orphanBlocks"`
	Borrowed     int `json:"borrowed"`
	// Problems is Leaked + Missing + OrphanBlocks.
	Problems int `json:"problems"`
}

// podFact is what the check needs of a Pod.
type podFact struct {
	key         string // namespace/name
	node        string
	ips         []netip.Addr
	hostNetwork bool
	phase       corev1.PodPhase // Succeeded or Failed: the sandbox is gone
}

func (p podFact) finished() bool {
	return p.phase == corev1.PodSucceeded || p.phase == corev1.PodFailed
}

// podFromObject translates a Pod; addresses that do not parse are left
// out.
func podFromObject(o *corev1.Pod) podFact {
	p := podFact{key: o.Namespace + "/" + o.Name, node: o.Spec.NodeName, hostNetwork: o.Spec.HostNetwork, phase: o.Status.Phase}
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(p.ips, a) {
			p.ips = append(p.ips, a)
		}
	}
	for _, ip := range o.Status.PodIPs {
		add(ip.IP)
	}
	add(o.Status.PodIP)
	return p
}

type poolFact struct {
	name string
	cidr netip.Prefix
}

// ipamFacts is one reading of the API: blocks, pools, nodes and pods.
// podsBefore were listed before the blocks, pods and nodes after them (the
// same lists when the first pass found nothing): an allocation made for a
// pod is in the blocks only if the pod existed before, so a missing
// allocation is judged on podsBefore (and the pod must still be there in
// pods), a leak and an orphan block on the lists read after the blocks.
type ipamFacts struct {
	blocks     []ipam.Block
	pools      []poolFact
	nodes      map[string]bool
	pods       map[string]podFact
	podsBefore map[string]podFact
}

// owner is who an allocation's handle names: a pod (namespace/name) or a
// node.
func allocOwner(al ipam.Allocation) (pod, node string) {
	if n, _, ok := ipam.ParseNodeHandle(al.Handle); ok {
		return "", n
	}
	if al.Namespace != "" && al.Pod != "" {
		return al.Namespace + "/" + al.Pod, ""
	}
	if ns, name, _, ok := ipam.ParsePodHandle(al.Handle); ok {
		return ns + "/" + name, ""
	}
	return "", ""
}

// allocIndex is every allocation by address, with its block.
type allocIndex map[netip.Addr]located

type located struct {
	al ipam.Allocation
	b  ipam.Block
}

func indexAllocations(blocks []ipam.Block) allocIndex {
	idx := allocIndex{}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			idx[al.IP] = located{al, b}
		}
	}
	return idx
}

// leakReason says why nobody holds al ("" if someone does), given the
// live pods and nodes and every allocation (idx). A pod holds its
// allocation while it exists, has not finished and either reports the
// address, reports none yet (its sandbox is being set up), or reports
// addresses none of which IPAM records as the pod's (its status predates
// a new sandbox). A pod that reports another address that IPAM records
// as its own does not hold this one: it is an earlier sandbox's.
func leakReason(al ipam.Allocation, pods map[string]podFact, nodes map[string]bool, idx allocIndex) string {
	pod, node := allocOwner(al)
	switch {
	case node != "":
		if nodes[node] {
			return ""
		}
		return fmt.Sprintf("node %s does not exist", node)
	case pod == "":
		return fmt.Sprintf("handle %q names no pod or node", al.Handle)
	}
	p, ok := pods[pod]
	switch {
	case !ok:
		return fmt.Sprintf("pod %s does not exist", pod)
	case p.finished():
		return fmt.Sprintf("pod %s has finished (%s)", pod, p.phase)
	case p.hostNetwork:
		return fmt.Sprintf("pod %s uses the host network", pod)
	case len(p.ips) == 0 || slices.Contains(p.ips, al.IP):
		return ""
	}
	for _, ip := range p.ips {
		if e, ok := idx[ip]; ok {
			if owner, _ := allocOwner(e.al); owner == pod {
				return fmt.Sprintf("pod %s uses %s (this address is an earlier sandbox's)", pod, ip)
			}
		}
	}
	return ""
}

// checkIPAM compares the facts; pure.
func checkIPAM(f ipamFacts) IPAMReport {
	r := IPAMReport{Leaked: []LeakedAllocation{}, Missing: []MissingAllocation{}, OrphanBlocks: []OrphanBlock{}, Borrowed: []BorrowedAllocation{}}
	idx := indexAllocations(f.blocks)
	for _, b := range f.blocks {
		r.Summary.Blocks++
		if b.Affinity != "" && !f.nodes[b.Affinity] {
			r.OrphanBlocks = append(r.OrphanBlocks, OrphanBlock{Block: b.CIDR, Node: b.Affinity, Allocations: len(b.Allocations)})
		}
		for _, al := range b.Allocations {
			r.Summary.Allocations++
			pod, node := allocOwner(al)
			if why := leakReason(al, f.pods, f.nodes, idx); why != "" {
				owner := pod
				if node != "" {
					owner = "node/" + node
				}
				r.Leaked = append(r.Leaked, LeakedAllocation{IP: al.IP, Block: b.CIDR, BlockNode: b.Affinity, Handle: al.Handle,
					Owner: owner, Node: al.Node, Reason: why})
			}
			if al.Node != "" && b.Affinity != "" && al.Node != b.Affinity {
				r.Borrowed = append(r.Borrowed, BorrowedAllocation{IP: al.IP, Block: b.CIDR, BlockNode: b.Affinity, Pod: pod,
					Node: al.Node, Handle: al.Handle})
			}
		}
	}
	for _, p := range f.podsBefore {
		if p.hostNetwork || p.finished() {
			continue
		}
		for _, ip := range p.ips {
			i := slices.IndexFunc(f.pools, func(pl poolFact) bool { return pl.cidr.Contains(ip) })
			if i < 0 {
				continue // not Wren's address (another CNI, or a pool deleted since)
			}
			r.Summary.Pods++
			var why string
			e, ok := idx[ip]
			if !ok {
				why = "no allocation"
			} else if owner, node := allocOwner(e.al); owner != p.key {
				if node != "" {
					owner = "node " + node
				}
				why = fmt.Sprintf("allocated to %s (handle %s)", cmp.Or(owner, "nobody"), e.al.Handle)
			}
			if why == "" {
				continue
			}
			// Confirm on the later list: the pod was deleted, or its
			// address changed, while the blocks were read.
			if later, ok := f.pods[p.key]; !ok || later.finished() || !slices.Contains(later.ips, ip) {
				continue
			}
			r.Missing = append(r.Missing, MissingAllocation{IP: ip, Pod: p.key, Node: p.node, Pool: f.pools[i].name, Reason: why})
		}
	}
	slices.SortFunc(r.Leaked, func(a, b LeakedAllocation) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(r.Missing, func(a, b MissingAllocation) int { return cmp.Or(a.IP.Compare(b.IP), strings.Compare(a.Pod, b.Pod)) })
	slices.SortFunc(r.OrphanBlocks, func(a, b OrphanBlock) int { return a.Block.Addr().Compare(b.Block.Addr()) })
	slices.SortFunc(r.Borrowed, func(a, b BorrowedAllocation) int { return a.IP.Compare(b.IP) })
	r.Summary.Leaked, r.Summary.Missing = len(r.Leaked), len(r.Missing)
	r.Summary.OrphanBlocks, r.Summary.Borrowed = len(r.OrphanBlocks), len(r.Borrowed)
	r.Summary.Problems = r.Summary.Leaked + r.Summary.Missing + r.Summary.OrphanBlocks
	return r
}

// CheckIPAM compares every IPAMBlock with the pods and nodes of the
// cluster, read from the API server through c (uncached: NewClient). It
// lists pods and nodes, then pools and blocks; if that finds a problem it
// lists pods and nodes again, so that an object created or deleted while
// it read is not reported (see ipamFacts).
func CheckIPAM(ctx context.Context, c client.Client) (IPAMReport, error) {
	var f ipamFacts
	var err error
	if f.podsBefore, err = listPodFacts(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	if f.nodes, err = listNodeNames(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	if f.pools, err = listPoolFacts(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	if f.blocks, err = listBlockFacts(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	f.pods = f.podsBefore
	r := checkIPAM(f)
	if r.Summary.Problems == 0 {
		return r, nil
	}
	if f.pods, err = listPodFacts(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	if f.nodes, err = listNodeNames(ctx, c); err != nil {
		return IPAMReport{}, err
	}
	return checkIPAM(f), nil
}

func listPodFacts(ctx context.Context, c client.Reader) (map[string]podFact, error) {
	var l corev1.PodList
	if err := c.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := make(map[string]podFact, len(l.Items))
	for i := range l.Items {
		p := podFromObject(&l.Items[i])
		out[p.key] = p
	}
	return out, nil
}

func listNodeNames(ctx context.Context, c client.Reader) (map[string]bool, error) {
	var l corev1.NodeList
	if err := c.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make(map[string]bool, len(l.Items))
	for _, n := range l.Items {
		out[n.Name] = true
	}
	return out, nil
}

// listPoolFacts returns every IPPool with a valid cidr, disabled ones
// included (their addresses are still in use).
func listPoolFacts(ctx context.Context, c client.Reader) ([]poolFact, error) {
	var l v1alpha1.IPPoolList
	if err := c.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list ippools: %w", err)
	}
	var out []poolFact
	for _, o := range l.Items {
		if p, err := o.Spec.CIDR.Prefix(); err == nil {
			out = append(out, poolFact{name: o.Name, cidr: p})
		}
	}
	return out, nil
}

func listBlockFacts(ctx context.Context, c client.Reader) ([]ipam.Block, error) {
	var l v1alpha1.IPAMBlockList
	if err := c.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list ipamblocks: %w", err)
	}
	out := make([]ipam.Block, 0, len(l.Items))
	var errs []error
	for i := range l.Items {
		b, err := BlockFromObject(&l.Items[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, b)
	}
	if err := errors.Join(errs...); err != nil {
		// A check that skipped a block would call its pods' addresses
		// missing.
		return nil, fmt.Errorf("read ipamblocks: %w", err)
	}
	return out, nil
}

// Errors of ReleaseIP, wrapped with the details.
var (
	// ErrNotAllocated: no block holds an allocation of the address.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrInUse: a pod or node holds the address.
	ErrInUse = errors.New("address in use")
)

// ReleasedAllocation is the allocation ReleaseIP removed.
type ReleasedAllocation struct {
	IP        netip.Addr   `json:"ip"`
	Block     netip.Prefix `json:"block"`
	BlockNode string       `json:"blockNode"`
	Handle    string       `json:"handle"`
	Owner     string       `json:"owner"`
	Node      string       `json:"node"`
	Reason    string       `json:"reason"` // why nobody holds it
}

// errBlockChanged marks a conditional update of ReleaseIP that lost a
// race: it tries again.
var errBlockChanged = errors.New("block changed since it was read")

// releaseRetries bounds the attempts of ReleaseIP when the block changes
// under it.
const releaseRetries = 10

// ReleaseIP removes the allocation of ip from its block if no pod or node
// holds it, judged as CheckIPAM judges a leak but on fresh reads made just
// before the write: the pod named by the allocation (GET), every pod that
// reports ip (a list with field selector status.podIP), and for a node's
// address its Node (GET). The write is an update conditional on the
// block's resourceVersion; on a conflict it reads everything again.
// Errors: ErrNotAllocated (the message says whether ip lies in a block, a
// pool or neither), ErrInUse naming the holder.
func ReleaseIP(ctx context.Context, c client.Client, ip netip.Addr) (ReleasedAllocation, error) {
	var lastErr error
	for range releaseRetries {
		rel, err := releaseOnce(ctx, c, ip)
		if err == nil || !errors.Is(err, errBlockChanged) {
			return rel, err
		}
		lastErr = err
	}
	return ReleasedAllocation{}, fmt.Errorf("release %s: gave up after %d conflicting attempts: %w", ip, releaseRetries, lastErr)
}

func releaseOnce(ctx context.Context, c client.Client, ip netip.Addr) (ReleasedAllocation, error) {
	blocks, err := listBlockFacts(ctx, c)
	if err != nil {
		return ReleasedAllocation{}, err
	}
	bi := slices.IndexFunc(blocks, func(b ipam.Block) bool { return b.CIDR.Contains(ip) })
	if bi < 0 {
		pools, err := listPoolFacts(ctx, c)
		if err != nil {
			return ReleasedAllocation{}, err
		}
		if i := slices.IndexFunc(pools, func(p poolFact) bool { return p.cidr.Contains(ip) }); i >= 0 {
			return ReleasedAllocation{}, fmt.Errorf("%s is in IP pool %s (%s) but in no block: %w", ip, pools[i].name, pools[i].cidr, ErrNotAllocated)
		}
		return ReleasedAllocation{}, fmt.Errorf("%s is outside every IP pool and block: %w", ip, ErrNotAllocated)
	}
	b := blocks[bi]
	ai := slices.IndexFunc(b.Allocations, func(al ipam.Allocation) bool { return al.IP == ip })
	if ai < 0 {
		return ReleasedAllocation{}, fmt.Errorf("%s is free in block %s (node %s): %w", ip, b.CIDR, cmp.Or(b.Affinity, "none"), ErrNotAllocated)
	}
	al := b.Allocations[ai]
	pod, node := allocOwner(al)

	// Fresh reads of whoever could hold ip.
	pods := map[string]podFact{}
	nodes := map[string]bool{}
	if pod != "" {
		ns, name, _ := strings.Cut(pod, "/")
		var o corev1.Pod
		switch err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &o); {
		case err == nil:
			pods[pod] = podFromObject(&o)
		case !apierrors.IsNotFound(err):
			return ReleasedAllocation{}, fmt.Errorf("get pod %s: %w", pod, err)
		}
	}
	if node != "" {
		var o corev1.Node
		switch err := c.Get(ctx, client.ObjectKey{Name: node}, &o); {
		case err == nil:
			nodes[node] = true
		case !apierrors.IsNotFound(err):
			return ReleasedAllocation{}, fmt.Errorf("get node %s: %w", node, err)
		}
	}
	why := leakReason(al, pods, nodes, indexAllocations(blocks))
	if why == "" {
		holder := "pod " + pod
		if node != "" {
			holder = "node " + node
		} else if p := pods[pod]; len(p.ips) == 0 {
			holder += " (it has no address yet: its sandbox is being set up)"
		} else if !slices.Contains(p.ips, ip) {
			holder += fmt.Sprintf(" (it reports %s, which IPAM does not record as its own: its status predates a new sandbox)", p.ips[0])
		}
		return ReleasedAllocation{}, fmt.Errorf("%s is held by %s: %w", ip, holder, ErrInUse)
	}
	// Any other pod that reports ip uses it, whatever IPAM says (check
	// lists it as missing its allocation).
	var reporting corev1.PodList
	if err := c.List(ctx, &reporting, client.MatchingFields{"status.podIP": ip.String()}); err != nil {
		return ReleasedAllocation{}, fmt.Errorf("list pods with address %s: %w", ip, err)
	}
	for i := range reporting.Items {
		p := podFromObject(&reporting.Items[i])
		if !p.finished() && !p.hostNetwork && p.key != pod {
			return ReleasedAllocation{}, fmt.Errorf("%s: pod %s (node %s) reports this address although it is allocated to %s: %w",
				ip, p.key, cmp.Or(p.node, "none"), cmp.Or(pod, al.Handle), ErrInUse)
		}
	}

	b.Allocations = slices.Delete(slices.Clone(b.Allocations), ai, ai+1)
	if err := c.Update(ctx, BlockObject(b)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Changed or deleted since it was read: read everything
			// again (the next attempt may find ip allocated anew, or
			// free).
			err = fmt.Errorf("%w: %w", errBlockChanged, err)
		}
		return ReleasedAllocation{}, fmt.Errorf("update ipamblock %s: %w", v1alpha1.BlockName(b.CIDR), err)
	}
	owner := pod
	if node != "" {
		owner = "node/" + node
	}
	return ReleasedAllocation{IP: ip, Block: b.CIDR, BlockNode: b.Affinity, Handle: al.Handle, Owner: owner, Node: al.Node, Reason: why}, nil
}

// CLIClient is an uncached client (NewClient) over CLIConfig(path).
func CLIClient(path string) (client.Client, error) {
	cfg, source, err := CLIConfig(path)
	if err != nil {
		return nil, err
	}
	c, err := NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (configuration from %s)", err, source)
	}
	return c, nil
}

// CLIConfig is the client configuration of a command-line tool
// (wrenctl's API commands): the kubeconfig at path if given, else
// $KUBECONFIG (a list of files, merged as kubectl does), else the pod's
// service account when run inside a pod (KUBERNETES_SERVICE_HOST set,
// as in the wren-agent container), else ~/.kube/config. source says which,
// for error messages. The rate limit is the agent's (ClientQPS).
func CLIConfig(path string) (cfg *rest.Config, source string, err error) {
	switch {
	case path != "":
		source = path
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	case os.Getenv("KUBECONFIG") != "":
		source = "$KUBECONFIG=" + os.Getenv("KUBECONFIG")
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		source = "the pod's service account"
		cfg, err = rest.InClusterConfig()
	default:
		home, herr := os.UserHomeDir()
		if herr != nil {
			return nil, "", fmt.Errorf("no kubeconfig: pass --kubeconfig or set KUBECONFIG (%w)", herr)
		}
		source = filepath.Join(home, ".kube", "config")
		if _, serr := os.Stat(source); serr != nil {
			return nil, source, fmt.Errorf("no kubeconfig at %s: pass --kubeconfig, set KUBECONFIG, or run wrenctl in the wren-agent pod", source)
		}
		cfg, err = clientcmd.BuildConfigFromFlags("", source)
	}
	if err != nil {
		return nil, source, fmt.Errorf("client configuration from %s: %w", source, err)
	}
	return withRate(cfg), source, nil
}
