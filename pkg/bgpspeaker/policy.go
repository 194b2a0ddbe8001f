package bgpspeaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// Policy is what the speaker accepts from its peers and what it sends on.
//
// Import (every peer): locally originated paths pass; the default route,
// paths from eBGP peers with an empty AS_PATH, and exactly the prefixes
// in Reject are rejected (a longer prefix inside
// one, such as a /32 another node borrowed from this node's block, is
// not); anything inside Accept (at any length) is accepted; everything
// else is rejected. Reject holds the node's own blocks and the nodes'
// addresses, Accept the enabled pools (and the service ranges a route
// reflector passes on).
//
// Export (every peer): locally originated paths (the node's
// advertisements) pass; paths learned over iBGP pass only when Reflect is
// set (the node is a route reflector, and GoBGP's RFC 4456 rules decide
// which peer gets what); paths learned over eBGP are never passed on, so a
// node does not re-advertise a top-of-rack router's routes to the mesh.
type Policy struct {
	Accept  []netip.Prefix
	Reject  []netip.Prefix
	Reflect bool
}

func (p Policy) normalized() Policy {
	norm := func(ps []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(ps))
		for _, x := range ps {
			if x.IsValid() && x.Addr().Is4() {
				out = append(out, x.Masked())
			}
		}
		slices.SortFunc(out, netip.Prefix.Compare)
		return slices.Compact(out)
	}
	return Policy{Accept: norm(p.Accept), Reject: norm(p.Reject), Reflect: p.Reflect}
}

func (p Policy) equal(o Policy) bool {
	return p.Reflect == o.Reflect && slices.Equal(p.Accept, o.Accept) && slices.Equal(p.Reject, o.Reject)
}

// SetPolicy replaces the import and export policies. The new policy is
// built beside the old one under new names and swapped in with one
// assignment per direction (GoBGP has no in-place replace), then the old
// one is deleted; the paths already received are re-evaluated with a soft
// reset (no session is reset). Setting the same policy again does nothing.
func (s *Speaker) SetPolicy(ctx context.Context, p Policy) error {
	p = p.normalized()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set policy: speaker not started")
	}
	if s.policySet && s.policy.equal(p) {
		return nil
	}
	gen := s.policyGen + 1
	if err := s.installPolicy(ctx, policyNames(gen), p); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	if s.policySet {
		s.deletePolicies(ctx, policyNames(s.policyGen))
	}
	s.policy, s.policySet, s.policyGen = p, true, gen
	// Re-evaluate what was received under the old policy, and re-send
	// under the new export policy; no session is reset.
	if len(s.peers) > 0 {
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_BOTH}); err != nil {
			return fmt.Errorf("set policy: soft reset: %w", err)
		}
	}
	s.log.Info("bgp policy set", "accept", len(p.Accept), "reject", len(p.Reject), "reflect", p.Reflect)
	return nil
}

// installPolicy adds p's policies and sets under names and assigns them
// (one assignment per direction replaces what was assigned). s.mu is held.
func (s *Speaker) installPolicy(ctx context.Context, names policySetNames, p Policy) error {
	if err := s.addPolicies(ctx, names, p); err != nil {
		s.deletePolicies(ctx, names)
		return err
	}
	for _, a := range []struct {
		dir  api.PolicyDirection
		name string
	}{{api.PolicyDirection_POLICY_DIRECTION_IMPORT, names.importPolicy}, {api.PolicyDirection_POLICY_DIRECTION_EXPORT, names.exportPolicy}} {
		err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: a.dir, Policies: []*api.Policy{{Name: a.name}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT}})
		if err != nil {
			return fmt.Errorf("assign %s: %w", a.name, err)
		}
	}
	return nil
}

type policySetNames struct {
	importPolicy, exportPolicy, acceptSet, rejectSet, defaultSet string
}

func policyNames(gen int) policySetNames {
	return policySetNames{
		importPolicy: fmt.Sprintf("wren-import-%d", gen),
		exportPolicy: fmt.Sprintf("wren-export-%d", gen),
		acceptSet:    fmt.Sprintf("wren-accept-%d", gen),
		rejectSet:    fmt.Sprintf("wren-reject-%d", gen),
		defaultSet:   fmt.Sprintf("wren-default-%d", gen),
	}
}

func prefixSet(name string, ps []netip.Prefix, exact bool) *api.DefinedSet {
	ds := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name}
	for _, p := range ps {
		maxLen := uint32(32)
		if exact {
			maxLen = uint32(p.Bits())
		}
		ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: maxLen})
	}
	return ds
}

func (s *Speaker) addPolicies(ctx context.Context, n policySetNames, p Policy) error {
	// An empty defined set matches everything in GoBGP, so empty lists get
	// no set and no statement at all.
	sets := []*api.DefinedSet{prefixSet(n.defaultSet, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, true)}
	if len(p.Accept) > 0 {
		sets = append(sets, prefixSet(n.acceptSet, p.Accept, false))
	}
	if len(p.Reject) > 0 {
		sets = append(sets, prefixSet(n.rejectSet, p.Reject, true))
	}
	for _, ds := range sets {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("add prefix set %s: %w", ds.Name, err)
		}
	}
	accept := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
	reject := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
	local := &api.Statement{Name: n.importPolicy + "-local", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, Actions: accept}
	imp := &api.Policy{Name: n.importPolicy, Statements: []*api.Statement{
		local,
		{Name: n.importPolicy + "-default", Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: n.defaultSet}}, Actions: reject},
		// An eBGP peer must put its own AS first in AS_PATH (RFC 4271
		// §5.1.2); GoBGP leaves that check to the receiver (§6.3 makes it
		// optional), so a path from an eBGP peer with an empty AS_PATH is
		// rejected here. iBGP paths (the mesh's) legitimately have one.
		{Name: n.importPolicy + "-ebgp-empty-aspath", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL,
			AsPathLength: &api.AsPathLength{Type: api.Comparison_COMPARISON_EQ, Length: 0}}, Actions: reject},
	}}
	if len(p.Reject) > 0 {
		imp.Statements = append(imp.Statements, &api.Statement{Name: n.importPolicy + "-reject",
			Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: n.rejectSet}}, Actions: reject})
	}
	if len(p.Accept) > 0 {
		imp.Statements = append(imp.Statements, &api.Statement{Name: n.importPolicy + "-accept",
			Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: n.acceptSet}}, Actions: accept})
	}
	exp := &api.Policy{Name: n.exportPolicy, Statements: []*api.Statement{
		{Name: n.exportPolicy + "-local", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, Actions: accept},
	}}
	if p.Reflect {
		exp.Statements = append(exp.Statements, &api.Statement{Name: n.exportPolicy + "-reflect",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_INTERNAL}, Actions: accept})
	}
	for _, pol := range []*api.Policy{imp, exp} {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return fmt.Errorf("add policy %s: %w", pol.Name, err)
		}
	}
	return nil
}

// deletePolicies removes a generation's policies and sets; errors are
// logged (what is left is unassigned and harmless).
func (s *Speaker) deletePolicies(ctx context.Context, n policySetNames) {
	for _, name := range []string{n.importPolicy, n.exportPolicy} {
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: name}, All: true}); err != nil {
			s.log.Debug("delete old policy", "policy", name, "err", err)
		}
	}
	for _, name := range []string{n.acceptSet, n.rejectSet, n.defaultSet} {
		if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name}, All: true}); err != nil {
			s.log.Debug("delete old prefix set", "set", name, "err", err)
		}
	}
}
