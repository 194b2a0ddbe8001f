package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
)

// Pod and namespace annotations a pod chooses its address or pools with
// (Calico's, under Wren's prefix). These are the only definitions of the
// keys; parseChoice is the only reader.
const (
	// AnnotationIPAddrs asks for one address: a JSON list holding one IPv4
	// address, ["10.244.1.7"]. Pods only.
	AnnotationIPAddrs = "wren.network/ipAddrs"
	// AnnotationIPv4Pools confines the pod's address to IPPools named by
	// name or CIDR: a JSON list, ["blue", "10.245.0.0/16"]. On a pod or
	// on its namespace (the pod's wins).
	AnnotationIPv4Pools = "wren.network/ipv4pools"
	// CalicoAnnotationIPAddrs is AnnotationIPAddrs under Calico's prefix,
	// accepted for ported manifests (Wren's key wins if both are set).
	CalicoAnnotationIPAddrs = "cni.projectcalico.org/ipAddrs"
	// CalicoAnnotationIPv4Pools is AnnotationIPv4Pools under Calico's
	// prefix.
	CalicoAnnotationIPv4Pools = "cni.projectcalico.org/ipv4pools"
	// calicoAnnotationNoIPAM is Calico's ipAddrsNoIpam, which bypasses
	// IPAM; Wren refuses it rather than ignore it.
	calicoAnnotationNoIPAM = "cni.projectcalico.org/ipAddrsNoIpam"
	// calicoAnnotationFloatingIPs is Calico's floatingIPs (DNAT of extra
	// addresses to the pod), which Calico itself refuses unless enabled
	// in its CNI configuration; Wren has no such feature and refuses it.
	calicoAnnotationFloatingIPs = "cni.projectcalico.org/floatingIPs"
)

// parseChoice translates a pod's annotations, and its namespace's (ns may
// be nil), into its IPAM choice. Precedence: the pod's ipAddrs (which
// makes ipv4pools moot), then ipv4pools of the pod, then of the
// namespace; at each level the wren.network/ key before the
// cni.projectcalico.org/ one. A malformed annotation is an error naming
// the key, the object and the form it needs (wrapping ipam.ErrRefused:
// the request cannot be met as written).
func parseChoice(pod *corev1.Pod, ns *corev1.Namespace) (ipam.Choice, error) {
	var c ipam.Choice
	podName := "pod " + pod.Namespace + "/" + pod.Name
	if _, ok := pod.Annotations[calicoAnnotationNoIPAM]; ok {
		return c, fmt.Errorf("%w: annotation %s of %s: Wren has no IPAM bypass; use %s to choose the address",
			ipam.ErrRefused, calicoAnnotationNoIPAM, podName, AnnotationIPAddrs)
	}
	if _, ok := pod.Annotations[calicoAnnotationFloatingIPs]; ok {
		return c, fmt.Errorf("%w: annotation %s of %s: Wren has no floating IPs; remove the annotation",
			ipam.ErrRefused, calicoAnnotationFloatingIPs, podName)
	}
	if key, val, ok := first(pod.Annotations, AnnotationIPAddrs, CalicoAnnotationIPAddrs); ok {
		from := "annotation " + key + " of " + podName
		ip, err := parseIPAddrs(val)
		if err != nil {
			return c, fmt.Errorf("%w: %s: %w", ipam.ErrRefused, from, err)
		}
		c.IP, c.IPFrom = ip, from
		return c, nil
	}
	levels := []struct {
		what  string
		annot map[string]string
	}{{podName, pod.Annotations}}
	if ns != nil {
		levels = append(levels, struct {
			what  string
			annot map[string]string
		}{"namespace " + ns.Name, ns.Annotations})
	}
	for _, l := range levels {
		key, val, ok := first(l.annot, AnnotationIPv4Pools, CalicoAnnotationIPv4Pools)
		if !ok {
			continue
		}
		from := "annotation " + key + " of " + l.what
		refs, err := parsePoolRefs(val)
		if err != nil {
			return c, fmt.Errorf("%w: %s: %w", ipam.ErrRefused, from, err)
		}
		if len(refs) > 0 {
			c.Pools, c.PoolsFrom = refs, from
			return c, nil
		}
	}
	return c, nil
}

// first returns the first of keys set in annot.
func first(annot map[string]string, keys ...string) (key, val string, ok bool) {
	for _, k := range keys {
		if v, ok := annot[k]; ok {
			return k, v, true
		}
	}
	return "", "", false
}

// parseIPAddrs reads ipAddrs: a JSON list of addresses, of which Wren
// takes the one IPv4 address.
func parseIPAddrs(val string) (netip.Addr, error) {
	var list []string
	if err := json.Unmarshal([]byte(val), &list); err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not a JSON list of addresses; write it as [\"10.244.1.7\"]", val)
	}
	var v4 []netip.Addr
	for _, s := range list {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		switch {
		case err != nil:
			return netip.Addr{}, fmt.Errorf("%q is not an IP address (a CIDR is not accepted: write the address alone)", s)
		case !a.Is4():
			return netip.Addr{}, fmt.Errorf("%s is not an IPv4 address: Wren hands out IPv4 only", a)
		}
		v4 = append(v4, a)
	}
	switch len(v4) {
	case 0:
		return netip.Addr{}, fmt.Errorf("%q lists no address; write it as [\"10.244.1.7\"]", val)
	case 1:
		return v4[0], nil
	}
	return netip.Addr{}, fmt.Errorf("%q lists %d IPv4 addresses; a pod gets one", val, len(v4))
}

// parsePoolRefs reads ipv4pools: a JSON list of IPPool names or IPv4 CIDRs.
func parsePoolRefs(val string) ([]ipam.PoolRef, error) {
	var list []string
	if err := json.Unmarshal([]byte(val), &list); err != nil {
		return nil, fmt.Errorf("%q is not a JSON list of IPPool names or CIDRs; write it as [\"default-ipv4\"] or [\"10.244.0.0/16\"]", val)
	}
	var refs []ipam.PoolRef
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch p, err := netip.ParsePrefix(s); {
		case s == "":
			return nil, fmt.Errorf("%q has an empty pool name", val)
		case err == nil && !p.Addr().Is4():
			return nil, fmt.Errorf("%s is not an IPv4 CIDR: Wren hands out IPv4 only", p)
		case err == nil:
			refs = append(refs, ipam.PoolRef{CIDR: p.Masked()})
		default:
			refs = append(refs, ipam.PoolRef{Name: s})
		}
	}
	return refs, nil
}

// PodChoice returns what a pod asked of IPAM by annotation (an address or
// pools; parseChoice), for the CNI ADD of one of this node's pods. The
// pod comes from the informer cache, or an uncached GET when the cache has
// not seen it yet; its namespace likewise, and only when the pod itself
// chose neither. A pod that does not exist chooses nothing. Errors that
// mean the API server cannot be reached carry ipam.ErrUnavailable.
func (v *View) PodChoice(ctx context.Context, namespace, name string) (ipam.Choice, error) {
	var pod corev1.Pod
	found, err := v.getFresh(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod)
	if err != nil || !found {
		return ipam.Choice{}, err
	}
	var nsp *corev1.Namespace
	if _, _, ok := first(pod.Annotations, AnnotationIPAddrs, CalicoAnnotationIPAddrs); !ok {
		if _, _, ok := first(pod.Annotations, AnnotationIPv4Pools, CalicoAnnotationIPv4Pools); !ok {
			var ns corev1.Namespace
			found, err := v.getFresh(ctx, client.ObjectKey{Name: namespace}, &ns)
			if err != nil {
				return ipam.Choice{}, err
			}
			if found {
				nsp = &ns
			}
		}
	}
	return parseChoice(&pod, nsp)
}

// getFresh reads o from the cache, or with an uncached GET if the cache
// does not have it. found is false for NotFound.
func (v *View) getFresh(ctx context.Context, key client.ObjectKey, o client.Object) (found bool, err error) {
	if err := v.cache.Get(ctx, key, o); err == nil {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	switch err := v.c.Get(ctx, key, o); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, markUnavailable(fmt.Errorf("get %T %s: %w", o, key, err))
	}
	return true, nil
}

// IPAMSettings returns every IPReservation and the IPAMConfiguration
// named default from the informer caches (parseSettings). Entries that
// do not parse (which admission refuses) are reported as Events and left
// out.
func (v *View) IPAMSettings() (ipam.Settings, error) {
	return readSettings(context.Background(), v.cache, v.report)
}

// readSettings lists IPReservations and IPAMConfigurations through r.
func readSettings(ctx context.Context, r client.Reader, warn func(problem)) (ipam.Settings, error) {
	var rl v1alpha1.IPReservationList
	if err := r.List(ctx, &rl); err != nil {
		return ipam.Settings{}, fmt.Errorf("list ipreservations: %w", err)
	}
	// A list, not a get of "default": list and watch are all the agent
	// may do (deploy/rbac.yaml).
	var cl v1alpha1.IPAMConfigurationList
	if err := r.List(ctx, &cl); err != nil {
		return ipam.Settings{}, fmt.Errorf("list ipamconfigurations: %w", err)
	}
	s, problems := parseSettings(rl.Items, cl.Items)
	for _, p := range problems {
		warn(p)
	}
	return s, nil
}

// parseSettings translates IPReservations and IPAMConfigurations into
// ipam.Settings: every reserved network (a single address as a /32), and
// strictAffinity and maxBlocksPerHost of the configuration named default
// (any other name is ignored, as the CRD's admission refuses it).
func parseSettings(res []v1alpha1.IPReservation, cfgs []v1alpha1.IPAMConfiguration) (ipam.Settings, []problem) {
	var s ipam.Settings
	var problems []problem
	for _, r := range res {
		for i, c := range r.Spec.ReservedCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				if a, aerr := netip.ParseAddr(c); aerr == nil {
					p, err = netip.PrefixFrom(a, a.BitLen()), nil
				}
			}
			if err != nil || !p.Addr().Is4() {
				problems = append(problems, problem{Kind: "IPReservation", Name: r.Name, Reason: "InvalidCIDR",
					Message: fmt.Sprintf("spec.reservedCIDRs[%d] %q is not an IPv4 address or CIDR; that entry reserves nothing", i, c)})
				continue
			}
			s.Reservations = append(s.Reservations, ipam.Reservation{Name: r.Name, CIDR: p.Masked()})
		}
	}
	slices.SortFunc(s.Reservations, func(a, b ipam.Reservation) int {
		if c := a.CIDR.Addr().Compare(b.CIDR.Addr()); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, c := range cfgs {
		if c.Name != v1alpha1.IPAMConfigurationName {
			continue
		}
		s.StrictAffinity = c.Spec.StrictAffinity
		s.MaxBlocksPerHost = max(int(c.Spec.MaxBlocksPerHost), 0)
	}
	return s, problems
}
