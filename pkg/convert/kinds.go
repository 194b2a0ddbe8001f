package convert

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/selector"
)

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind}
}

// Reasons for the Calico fields Wren does not have, by kind. A field not
// listed gets a generic reason.
var (
	ipPoolReasons = map[string]string{
		"ipip":         "Calico's deprecated v1 field: Wren reads ipipMode",
		"nat-outgoing": "Calico's deprecated v1 field: Wren reads natOutgoing",
		"awsSubnetID":  "Wren has no AWS integration",
		"assignmentMode": "Wren has no manual pools: it hands out addresses from every enabled pool that selects the node " +
			"(or the pools a pod's wren.network/ipv4pools annotation names); narrow nodeSelector or set disabled: true to keep pods out",
	}
	bgpPeerReasons = map[string]string{
		"keepOriginalNextHop":      "Wren always advertises its routes with the node's address as next hop",
		"nextHopMode":              "Wren always advertises its routes with the node's address as next hop",
		"numAllowedLocalASNumbers": "Wren keeps BGP loop prevention: routes whose AS path holds the node's AS are refused",
		"filters":                  "Wren has no BGPFilter: it imports only prefixes inside enabled pools (and service ranges from reflectors) and exports only its blocks, borrowed /32s and service ranges",
		"reachableBy":              "Wren adds no static route to the peer: the node must reach it through its routing table",
		"localASNumber":            "Wren peers with the node's own AS (wren.network/as-number annotation, else BGPConfiguration asNumber); there is no per-peer local AS",
		"localWorkloadSelector":    "Wren does not peer with pods",
		"reversePeering":           "Wren makes peerSelector sessions from both sides itself",
		"failureDetectionMode":     "Wren has no BFD: a dead peer is noticed by the BGP hold time",
		"restartMode":              "Wren uses graceful restart (RFC 4724) on every session; no long-lived graceful restart",
		"birdGatewayMode":          "Wren has no BIRD",
		"externalNetwork":          "Wren has no external networks",
		"extensions":               "Wren has no BIRD templates",
	}
	bgpConfigReasons = map[string]string{
		"logSeverityScreen":        "Wren has no BIRD; the agent logs at Info, or Debug with --debug",
		"bindMode":                 "Wren's speaker listens on every address of the node (Calico's bindMode None)",
		"communities":              "Wren sets no BGP communities",
		"prefixAdvertisements":     "Wren sets no BGP communities",
		"ignoredInterfaces":        "Wren imports no interface routes into BGP",
		"localWorkloadPeeringIPV4": "Wren does not peer with pods",
		"localWorkloadPeeringIPV6": "Wren does not peer with pods",
		"programClusterRoutes":     "Wren always programs the routes to other nodes' blocks",
		"extensions":               "Wren has no BIRD templates",
	}
	ipamConfigReasons = map[string]string{
		"autoAllocateBlocks":           "Wren always claims blocks as pods need them",
		"kubeVirtVMAddressPersistence": "Wren has no KubeVirt support",
	}
)

// ipPool converts an IPPool.
func (o *obj) ipPool(spec map[string]any) any {
	p := &v1alpha1.IPPool{TypeMeta: typeMeta("IPPool")}
	s := &p.Spec
	if v, ok := o.str(spec, "spec.", "cidr"); ok {
		s.CIDR, _ = o.cidr4("spec.cidr", v)
	} else if !o.failed {
		o.find("spec.cidr", Failed, "missing")
	}
	if v, ok := o.integer(spec, "spec.", "blockSize"); ok {
		if v < 20 || v > 32 {
			o.find("spec.blockSize", Failed, "%d is outside 20-32", v)
		}
		if pr, err := netip.ParsePrefix(string(s.CIDR)); err == nil && int(v) < pr.Bits() {
			o.find("spec.blockSize", Failed, "%d is larger than the pool %s", v, s.CIDR)
		}
		s.BlockSize = int32(v)
	}
	s.IPIPMode = o.encap(spec, "ipipMode")
	s.VXLANMode = o.encap(spec, "vxlanMode")
	if s.IPIPMode != "" && s.IPIPMode != v1alpha1.EncapNever && s.VXLANMode != "" && s.VXLANMode != v1alpha1.EncapNever {
		o.find("spec.vxlanMode", Failed, "ipipMode %s and vxlanMode %s are both enabled; Calico refuses it too", s.IPIPMode, s.VXLANMode)
	}
	s.NATOutgoing, _ = o.boolean(spec, "spec.", "natOutgoing")
	s.DisableBGPExport, _ = o.boolean(spec, "spec.", "disableBGPExport")
	s.Disabled, _ = o.boolean(spec, "spec.", "disabled")
	if v, ok := o.str(spec, "spec.", "nodeSelector"); ok {
		s.NodeSelector = o.selector("spec.nodeSelector", v)
	}
	if v, ok := take(spec, "allowedUses"); ok {
		o.allowedUses(v)
	}
	if v, ok := spec["assignmentMode"]; ok && v == "Automatic" {
		delete(spec, "assignmentMode")
	}
	o.rest("spec.", spec, ipPoolReasons)
	return p
}

// allowedUses: Wren hands out pod and tunnel addresses from every pool,
// which is Calico's default [Workload, Tunnel].
func (o *obj) allowedUses(v any) {
	list, ok := v.([]any)
	if !ok {
		o.find("spec.allowedUses", Failed, "%s is not a list", show(v))
		return
	}
	var uses []string
	for _, u := range list {
		uses = append(uses, fmt.Sprint(u))
	}
	slices.Sort(uses)
	switch {
	case slices.Equal(uses, []string{"Tunnel", "Workload"}):
	case !slices.Contains(uses, "Workload"):
		o.find("spec.allowedUses", Failed, "%s: the pool is not for pods, and Wren has no other use for a pool (no LoadBalancer IPAM; tunnel addresses come from the pod pools)", show(v))
	case slices.Contains(uses, "LoadBalancer"):
		o.find("spec.allowedUses", Dropped, "%s: Wren has no LoadBalancer IPAM: the pool serves pods and tunnel addresses", show(v))
	default:
		o.find("spec.allowedUses", Dropped, "%s: Wren also takes tunnel addresses from every pod pool", show(v))
	}
}

func (o *obj) encap(spec map[string]any, key string) v1alpha1.EncapMode {
	v, ok := o.str(spec, "spec.", key)
	if !ok {
		return ""
	}
	switch m := v1alpha1.EncapMode(v); m {
	case v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever:
		return m
	}
	o.find("spec."+key, Failed, "%q is not Always, CrossSubnet or Never", v)
	return ""
}

// selector carries a Calico selector, warning when Wren's parser refuses
// it (the agent would then report it and ignore the object).
func (o *obj) selector(field, s string) string {
	if _, err := selector.Parse(s); err != nil {
		o.find(field, Warning, "carried over, but the agent will refuse it: %v", err)
	}
	return s
}

// bgpPeer converts a BGPPeer.
func (o *obj) bgpPeer(spec map[string]any) any {
	p := &v1alpha1.BGPPeer{TypeMeta: typeMeta("BGPPeer")}
	s := &p.Spec
	s.Node, _ = o.str(spec, "spec.", "node")
	if v, ok := o.str(spec, "spec.", "nodeSelector"); ok {
		s.NodeSelector = o.selector("spec.nodeSelector", v)
	}
	if s.Node != "" && s.NodeSelector != "" {
		o.find("spec.nodeSelector", Failed, "set with spec.node; Calico refuses it too")
	}
	if v, ok := o.str(spec, "spec.", "peerIP"); ok {
		s.PeerIP = o.peerIP(v)
	}
	if v, ok := take(spec, "asNumber"); ok {
		s.ASNumber = o.asNumber("spec.asNumber", v)
	}
	if v, ok := o.str(spec, "spec.", "peerSelector"); ok {
		s.PeerSelector = o.selector("spec.peerSelector", v)
	}
	switch {
	case s.PeerIP != "" && s.PeerSelector != "":
		o.find("spec.peerSelector", Failed, "set with spec.peerIP; Calico refuses it too")
	case s.PeerIP == "" && s.PeerSelector == "" && !o.failed:
		o.find("spec.peerIP", Failed, "neither peerIP nor peerSelector is set")
	case s.PeerIP != "" && s.ASNumber == nil && !o.failed:
		o.find("spec.asNumber", Failed, "missing: Wren needs the AS of a peerIP peer")
	case s.PeerSelector != "" && s.ASNumber != nil:
		o.find("spec.asNumber", Dropped, "%d: with peerSelector the selected nodes' own AS numbers are used, as in Calico", *s.ASNumber)
		s.ASNumber = nil
	}
	s.Password = o.password(spec, "spec.", "password")
	s.KeepaliveTime = o.duration(spec, "spec.", "keepaliveTime")
	s.MaxRestartTime = o.duration(spec, "spec.", "maxRestartTime")
	if v, ok := o.integer(spec, "spec.", "ttlSecurity"); ok {
		if v < 0 || v > 255 {
			o.find("spec.ttlSecurity", Failed, "%d is outside 0-255", v)
		}
		t := int32(v)
		s.TTLSecurity = &t
	}
	if v, ok := o.str(spec, "spec.", "sourceAddress"); ok {
		switch sa := v1alpha1.SourceAddress(v); sa {
		case v1alpha1.SourceAddressUseNodeIP, v1alpha1.SourceAddressNone:
			s.SourceAddress = sa
		default:
			o.find("spec.sourceAddress", Failed, "%q is not UseNodeIP or None", v)
		}
	}
	if v, ok := o.integer(spec, "spec.", "maxPrefixes"); ok { // a Wren field, in case of a round trip
		m := int32(v)
		s.MaxPrefixes = &m
	}
	// Calico's defaults, which are what Wren does.
	if v, ok := spec["keepOriginalNextHop"]; ok && v == false {
		delete(spec, "keepOriginalNextHop")
	}
	if v, ok := spec["nextHopMode"]; ok && v == "Auto" {
		delete(spec, "nextHopMode")
	}
	if v, ok := spec["reversePeering"]; ok && v == "Auto" {
		delete(spec, "reversePeering")
	}
	o.rest("spec.", spec, bgpPeerReasons)
	return p
}

// peerIP checks an "ip" or "ip:port" peer address; IPv6 fails.
func (o *obj) peerIP(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !ap.Addr().Is4() {
			o.find("spec.peerIP", Failed, "%q is IPv6: Wren is IPv4-only", s)
			return ""
		}
		if ap.Port() == 0 {
			o.find("spec.peerIP", Failed, "%q has port 0", s)
			return ""
		}
		return s
	}
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		o.find("spec.peerIP", Failed, "%q is not an IP address or ip:port", s)
		return ""
	case !ip.Unmap().Is4() || ip.Is4In6():
		o.find("spec.peerIP", Failed, "%q is IPv6: Wren is IPv4-only", s)
		return ""
	}
	return s
}

// asNumber reads a Calico AS number: a number, or a string holding a
// number or the asdot form "65000.100" (RFC 5396), which becomes
// 65000×65536+100.
func (o *obj) asNumber(field string, v any) *v1alpha1.ASNumber {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
		if strings.ContainsAny(s, ".eE") {
			o.find(field, Failed, "%s is not an AS number (asdot is a string: \"65000.100\")", s)
			return nil
		}
	case string:
		s = v
	default:
		o.find(field, Failed, "%s is not an AS number", show(v))
		return nil
	}
	if hi, lo, dot := strings.Cut(s, "."); dot {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil || h<<16|l == 0 {
			o.find(field, Failed, "%q is not an AS number (asdot is two numbers 0-65535: 65000.100)", s)
			return nil
		}
		as := v1alpha1.ASNumber(h<<16 | l)
		o.find(field, Changed, "asdot %q written as %d (Wren takes AS numbers as plain numbers)", s, as)
		return &as
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		o.find(field, Failed, "%q is not an AS number from 1 to 4294967295", s)
		return nil
	}
	as := v1alpha1.ASNumber(n)
	return &as
}

// duration reads a Go duration; Wren wants it with a unit and not
// negative, so "0" becomes "0s".
func (o *obj) duration(m map[string]any, prefix, key string) *metav1.Duration {
	s, ok := o.str(m, prefix, key)
	if !ok {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		o.find(prefix+key, Failed, "%q is not a duration such as 120s", s)
		return nil
	}
	return &metav1.Duration{Duration: d}
}

// password reads {secretKeyRef: {name, key, optional}}.
func (o *obj) password(m map[string]any, prefix, key string) *v1alpha1.BGPPassword {
	v, ok := take(m, key)
	if !ok {
		return nil
	}
	field := prefix + key
	pm, ok := v.(map[string]any)
	if !ok {
		o.find(field, Failed, "%s is not an object", show(v))
		return nil
	}
	rv, ok := take(pm, "secretKeyRef")
	ref, isMap := rv.(map[string]any)
	if !ok || !isMap {
		o.find(field+".secretKeyRef", Failed, "missing: Wren reads BGP passwords from Secrets only")
		return nil
	}
	sub := field + ".secretKeyRef."
	var p v1alpha1.BGPPassword
	p.SecretKeyRef.Name, _ = o.str(ref, sub, "name")
	p.SecretKeyRef.Key, _ = o.str(ref, sub, "key")
	if p.SecretKeyRef.Name == "" || p.SecretKeyRef.Key == "" {
		o.find(field+".secretKeyRef", Failed, "needs both name and key")
	}
	if v, ok := o.boolean(ref, sub, "optional"); ok && v {
		o.find(sub+"optional", Dropped, "true: Wren has no optional Secret: while the Secret or key is missing the session waits and a PasswordUnavailable Event names it")
	}
	o.rest(sub, ref, nil)
	o.rest(field+".", pm, nil)
	p.SecretKeyRef.Name = strings.TrimSpace(p.SecretKeyRef.Name)
	return &p
}

// bgpConfiguration converts the BGPConfiguration named default; Calico's
// per-node ones (node.<name>) and any other name are skipped.
func (o *obj) bgpConfiguration(spec map[string]any) any {
	if o.name != v1alpha1.BGPConfigurationName {
		why := "Calico reads only default and node.<name>"
		if node, ok := strings.CutPrefix(o.name, "node."); ok {
			why = fmt.Sprintf("a per-node configuration of node %s: Wren has only the default one (a node's AS goes in its %s annotation)", node, annotationASNumber)
		}
		o.find("", Skipped, "not converted: %s", why)
		o.rest("spec.", spec, bgpConfigReasons)
		return nil
	}
	c := &v1alpha1.BGPConfiguration{TypeMeta: typeMeta("BGPConfiguration")}
	s := &c.Spec
	if v, ok := take(spec, "asNumber"); ok {
		s.ASNumber = o.asNumber("spec.asNumber", v)
	}
	if v, ok := o.boolean(spec, "spec.", "nodeToNodeMeshEnabled"); ok {
		s.NodeToNodeMeshEnabled = &v
	}
	if v, ok := o.integer(spec, "spec.", "listenPort"); ok {
		if v < 1 || v > 65535 {
			o.find("spec.listenPort", Failed, "%d is outside 1-65535", v)
		}
		p := int32(v)
		s.ListenPort = &p
	}
	s.ServiceClusterIPs = o.serviceIPs(spec, "serviceClusterIPs")
	s.ServiceExternalIPs = o.serviceIPs(spec, "serviceExternalIPs")
	s.ServiceLoadBalancerIPs = o.serviceIPs(spec, "serviceLoadBalancerIPs")
	s.NodeMeshPassword = o.password(spec, "spec.", "nodeMeshPassword")
	s.NodeMeshMaxRestartTime = o.duration(spec, "spec.", "nodeMeshMaxRestartTime")
	s.KeepaliveTime = o.duration(spec, "spec.", "keepaliveTime")
	s.HoldTime = o.duration(spec, "spec.", "holdTime")
	if v, ok := spec["logSeverityScreen"]; ok && v == "Info" {
		delete(spec, "logSeverityScreen")
	}
	if v, ok := spec["bindMode"]; ok && v == "None" {
		delete(spec, "bindMode")
	}
	o.rest("spec.", spec, bgpConfigReasons)
	return c
}

// serviceIPs reads [{cidr}]; IPv6 ranges are dropped with a finding.
func (o *obj) serviceIPs(spec map[string]any, key string) []v1alpha1.ServiceIPBlock {
	v, ok := take(spec, key)
	if !ok {
		return nil
	}
	field := "spec." + key
	list, ok := v.([]any)
	if !ok {
		o.find(field, Failed, "%s is not a list", show(v))
		return nil
	}
	var out []v1alpha1.ServiceIPBlock
	for i, it := range list {
		f := fmt.Sprintf("%s[%d].cidr", field, i)
		m, _ := it.(map[string]any)
		s, _ := m["cidr"].(string)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			o.find(f, Failed, "%s is not a CIDR", show(m["cidr"]))
		case !p.Addr().Is4():
			o.find(f, Dropped, "%q is IPv6: Wren is IPv4-only", s)
		default:
			c, _ := o.cidr4(f, s)
			out = append(out, v1alpha1.ServiceIPBlock{CIDR: c})
		}
	}
	return out
}

// ipReservation converts an IPReservation; IPv6 entries are dropped.
func (o *obj) ipReservation(spec map[string]any) any {
	r := &v1alpha1.IPReservation{TypeMeta: typeMeta("IPReservation")}
	v, ok := take(spec, "reservedCIDRs")
	list, isList := v.([]any)
	if !ok || !isList {
		o.find("spec.reservedCIDRs", Failed, "missing or not a list")
		return r
	}
	for i, it := range list {
		f := fmt.Sprintf("spec.reservedCIDRs[%d]", i)
		s, _ := it.(string)
		var addr netip.Addr
		if p, err := netip.ParsePrefix(s); err == nil {
			addr = p.Addr()
		} else if a, err := netip.ParseAddr(s); err == nil {
			addr = a
		} else {
			o.find(f, Failed, "%s is not an address or CIDR", show(it))
			continue
		}
		if !addr.Is4() {
			o.find(f, Dropped, "%q is IPv6: Wren is IPv4-only", s)
			continue
		}
		r.Spec.ReservedCIDRs = append(r.Spec.ReservedCIDRs, s)
	}
	if len(r.Spec.ReservedCIDRs) == 0 && !o.failed {
		o.find("spec.reservedCIDRs", Failed, "no IPv4 entry left")
	}
	o.rest("spec.", spec, nil)
	return r
}

// ipamConfiguration converts the IPAMConfiguration (Calico has only
// "default" too).
func (o *obj) ipamConfiguration(spec map[string]any) any {
	if o.name != v1alpha1.IPAMConfigurationName {
		o.find("metadata.name", Failed, "Wren reads only the IPAMConfiguration named default, as Calico")
		return nil
	}
	c := &v1alpha1.IPAMConfiguration{TypeMeta: typeMeta("IPAMConfiguration")}
	c.Spec.StrictAffinity, _ = o.boolean(spec, "spec.", "strictAffinity")
	if v, ok := o.integer(spec, "spec.", "maxBlocksPerHost"); ok {
		if v < 0 || v > 1<<31-1 {
			o.find("spec.maxBlocksPerHost", Failed, "%d is out of range", v)
		}
		c.Spec.MaxBlocksPerHost = int32(v)
	}
	if v, ok := spec["autoAllocateBlocks"]; ok && v == true {
		delete(spec, "autoAllocateBlocks")
	}
	o.rest("spec.", spec, ipamConfigReasons)
	return c
}

// node turns a Calico Node's settings into commands on the Kubernetes
// Node of the same name: the route-reflector label and the AS
// annotation. What calico-node writes for itself (addresses, tunnel
// addresses, MACs) is dropped in one finding: Wren's agent detects and
// allocates its own.
func (o *obj) node(spec map[string]any) {
	bgp, _ := take(spec, "bgp")
	bm, _ := bgp.(map[string]any)
	if bm == nil {
		bm = map[string]any{}
	}
	rr, hasRR := o.str(bm, "spec.bgp.", "routeReflectorClusterID")
	as, hasAS := take(bm, "asNumber")
	acted := o.nodeCommands("spec.bgp.routeReflectorClusterID", rr, hasRR, "spec.bgp.asNumber", as, hasAS)
	var written []string
	for k := range bm {
		written = append(written, "spec.bgp."+k)
	}
	for k := range spec {
		written = append(written, "spec."+k)
	}
	slices.Sort(written)
	if len(written) > 0 {
		o.find(strings.Join(written, ", "), Dropped, "written by calico-node for itself: Wren's agent detects the node's address (--node-ip-method) and allocates its own tunnel addresses")
	}
	o.nodeDone(acted)
}

// Annotations in which Calico keeps a Kubernetes Node's BGP settings
// when its datastore is the Kubernetes API (where calicoctl shows them
// as the Calico Node's spec.bgp).
const (
	calicoAnnotationRRClusterID = "projectcalico.org/RouteReflectorClusterID"
	calicoAnnotationASNumber    = "projectcalico.org/ASNumber"
)

// kubeNode reads Calico's annotations of a Kubernetes Node (kubectl get
// nodes -o yaml); the rest of a Kubernetes Node is not Calico's and is
// not looked at.
func (o *obj) kubeNode(md map[string]any) {
	ann, _ := md["annotations"].(map[string]any)
	rr, hasRR := o.str(ann, "metadata.annotations.", calicoAnnotationRRClusterID)
	as, hasAS := take(ann, calicoAnnotationASNumber)
	acted := o.nodeCommands("metadata.annotations."+calicoAnnotationRRClusterID, rr, hasRR,
		"metadata.annotations."+calicoAnnotationASNumber, as, hasAS)
	o.nodeDone(acted)
}

// nodeCommands adds the kubectl commands that give a node Wren's route
// reflector label and AS annotation; it says whether there was any.
func (o *obj) nodeCommands(rrField, rr string, hasRR bool, asField string, as any, hasAS bool) bool {
	acted := false
	if hasRR {
		value := rr
		if ip, err := netip.ParseAddr(rr); err != nil || !ip.Is4() {
			o.find(rrField, Warning, "%q is no dotted-quad cluster ID; the label is set to true (the default cluster ID)", rr)
			value = "true"
		}
		o.c.add(Finding{Object: o.id, Field: rrField, Level: Action,
			Message: fmt.Sprintf("%q: Wren makes a node a route reflector by the label %s=%s", rr, labelRouteReflector, value),
			Command: fmt.Sprintf("kubectl label node %s %s=%s --overwrite", o.name, labelRouteReflector, value)})
		acted = true
	}
	if hasAS {
		if n := o.asNumber(asField, as); n != nil {
			o.c.add(Finding{Object: o.id, Field: asField, Level: Action,
				Message: fmt.Sprintf("%d: Wren reads a node's own AS from the annotation %s", *n, annotationASNumber),
				Command: fmt.Sprintf("kubectl annotate node %s %s=%d --overwrite", o.name, annotationASNumber, *n)})
			acted = true
		}
	}
	return acted
}

func (o *obj) nodeDone(acted bool) {
	if o.failed {
		o.c.res.NotConverted = append(o.c.res.NotConverted, o.id)
		return
	}
	if !acted {
		o.find("", Skipped, "nothing to carry over: Wren reads the Kubernetes Node itself")
	}
}
