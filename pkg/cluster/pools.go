package cluster

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/selector"
)

// problem is something wrong with one Kubernetes object that admission
// could not catch: it is logged and recorded as a Warning Event on the
// object (View.Warn), its message naming the field and what Wren does
// about it.
type problem struct {
	Kind, Name string
	Reason     string // the Event's reason, e.g. InvalidCIDR
	Message    string
}

// parsePool translates one IPPool into a model.Pool, defaults filled in.
// problems names every field that is wrong. usable is false when the pool
// must be left out: its cidr, blockSize, ipipMode or vxlanMode is invalid
// (written before the CRD validated it, or by a client that skipped the
// rule). A nodeSelector that does not parse is reported but leaves the
// pool usable: its addresses already handed out stay routed, and the
// selector selects no node, so nothing new is allocated from it.
func parsePool(o *v1alpha1.IPPool) (p model.Pool, problems []problem, usable bool) {
	report := func(reason, format string, args ...any) {
		problems = append(problems, problem{Kind: "IPPool", Name: o.Name, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	sp := o.Spec
	p = model.Pool{Name: o.Name, BlockSize: int(sp.BlockSize), VXLAN: model.EncapMode(sp.VXLANMode), IPIP: model.EncapMode(sp.IPIPMode),
		NATOutgoing: sp.NATOutgoing, DisableBGPExport: sp.DisableBGPExport, NodeSelector: sp.NodeSelector, Disabled: sp.Disabled}
	usable = true
	cidr, err := sp.CIDR.Prefix()
	if err != nil {
		report("InvalidCIDR", "spec.cidr: %v; the pool is ignored", err)
		usable = false
	}
	p.CIDR = cidr
	if p.BlockSize == 0 {
		p.BlockSize = model.DefaultBlockSize
	}
	if p.BlockSize < model.MinBlockSize || p.BlockSize > model.MaxBlockSize || cidr.IsValid() && p.BlockSize < cidr.Bits() {
		bs := fmt.Sprint(sp.BlockSize)
		if sp.BlockSize == 0 {
			bs = fmt.Sprintf("%d (the default)", p.BlockSize)
		}
		report("InvalidBlockSize", "spec.blockSize %s must be %d to %d and at least the prefix length of spec.cidr %s; the pool is ignored",
			bs, model.MinBlockSize, model.MaxBlockSize, sp.CIDR)
		usable = false
	}
	encapOK := true
	for _, m := range []struct {
		field string
		mode  *model.EncapMode
	}{{"ipipMode", &p.IPIP}, {"vxlanMode", &p.VXLAN}} {
		switch *m.mode {
		case "":
			*m.mode = model.EncapNever
		case model.EncapNever, model.EncapAlways, model.EncapCrossSubnet:
		default:
			report("InvalidEncapsulation", "spec.%s %q must be Always, CrossSubnet or Never; the pool is ignored", m.field, string(*m.mode))
			usable, encapOK = false, false
		}
	}
	if encapOK && p.IPIP != model.EncapNever && p.VXLAN != model.EncapNever {
		report("BothEncapsulations", "spec.ipipMode=%s and spec.vxlanMode=%s: at most one may be enabled; the pool is ignored until one is Never", p.IPIP, p.VXLAN)
		usable = false
	}
	if _, err := selector.Parse(sp.NodeSelector); err != nil {
		// pkg/agent's poolSelected reports it in the same words: View.Warn
		// then records one Event.
		report("InvalidNodeSelector", "spec.nodeSelector: %v; no node allocates from this pool until it is fixed", err)
	}
	return p, problems, usable
}

// parsePools is the one translation of IPPools, used by the View (the
// agent's routes, advertisements and BGP import filter) and by the IPAM
// store (which blocks a node claims), so both always see the same pools.
// It returns the usable pools sorted by name, and the problems to report:
//
//   - A pool with an invalid field is left out (see parsePool); the
//     others are kept.
//   - Of two overlapping pools the older one (metadata.creationTimestamp;
//     of two created in the same second, the first by name) is kept and
//     the other left out, so a new pool can never take over addresses an
//     existing pool has handed out. A disabled pool counts: its
//     addresses are still in use and routed by its mode. A pool left out
//     for an invalid field does not count.
func parsePools(items []v1alpha1.IPPool) ([]model.Pool, []problem) {
	byAge := make([]*v1alpha1.IPPool, len(items))
	for i := range items {
		byAge[i] = &items[i]
	}
	slices.SortFunc(byAge, func(a, b *v1alpha1.IPPool) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []model.Pool
	var problems []problem
	for _, o := range byAge {
		p, probs, usable := parsePool(o)
		problems = append(problems, probs...)
		if !usable {
			continue
		}
		if j := slices.IndexFunc(out, func(q model.Pool) bool { return q.CIDR.Overlaps(p.CIDR) }); j >= 0 {
			problems = append(problems, problem{Kind: "IPPool", Name: o.Name, Reason: "OverlappingPool",
				Message: fmt.Sprintf("spec.cidr %s overlaps IPPool %s (%s), which is older or, created in the same second, first by name; the pool is ignored",
					p.CIDR, out[j].Name, out[j].CIDR)})
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b model.Pool) int { return strings.Compare(a.Name, b.Name) })
	return out, problems
}

// logOnce returns a problem reporter that logs each distinct problem once
// (the IPAM store's, when no View records Events for it).
func logOnce(log *slog.Logger) func(problem) {
	var mu sync.Mutex
	seen := map[problem]bool{}
	return func(p problem) {
		mu.Lock()
		dup := seen[p]
		seen[p] = true
		mu.Unlock()
		if !dup {
			log.Warn(p.Message, "kind", p.Kind, "name", p.Name, "reason", p.Reason)
		}
	}
}
