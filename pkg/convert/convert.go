// Package convert translates Calico's configuration (projectcalico.org/v3,
// or the crd.projectcalico.org/v1 objects behind it) into Wren's
// wren.network/v1alpha1 objects, and says what it could not carry over.
// It does no I/O: Convert takes the YAML and returns the objects and the
// findings; cmd/wrenctl (wrenctl convert) reads and writes. See
// docs/migrating.md.
//
// Every field of a converted object is either carried over (maybe
// respelled: an asdot AS number becomes a number) or named in a Finding
// with the reason. Fields are read from a generic map and removed as they
// are handled, so whatever is left (a Calico field Wren lacks, including
// fields newer than this code) is reported too. A field set to the value
// Calico uses by default, where Wren behaves the same, is dropped without
// a finding (allowedUses [Workload, Tunnel], assignmentMode Automatic).
package convert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// APIVersion is the apiVersion of Calico's API (calicoctl and the Calico
// API server); CRDVersion that of the CRDs Calico stores them in, which
// kubectl prints when no Calico API server is installed. Both are read,
// and so are Kubernetes Nodes (v1) for Calico's BGP annotations on them.
const (
	APIVersion = "projectcalico.org/v3"
	CRDVersion = "crd.projectcalico.org/v1"
)

// Wren's labels and annotations that Calico node settings become.
const (
	labelRouteReflector = "wren.network/route-reflector"
	annotationASNumber  = "wren.network/as-number"
)

// Level says what happened to a field or an object.
type Level string

// Levels of a Finding.
const (
	// Dropped: the field is not in the output; the message says why and
	// what Wren does instead.
	Dropped Level = "dropped"
	// Changed: the field is in the output with another spelling or value.
	Changed Level = "changed"
	// Action: the setting needs a command; Finding.Command is it.
	Action Level = "action"
	// Warning: the field is carried over, but Wren will not accept or
	// honour it as it is.
	Warning Level = "warning"
	// Skipped: the whole object has no Wren counterpart by design and is
	// left out (a per-node BGPConfiguration, a Node once its commands are
	// printed).
	Skipped Level = "skipped"
	// Failed: the object cannot be converted; it is left out and the
	// conversion as a whole has failed (wrenctl convert exits 1).
	Failed Level = "error"
)

// Finding is one thing the report says, about one object and field.
type Finding struct {
	// Object is "Kind/name", or "document N" for a document without one.
	Object string
	// Field is the path in the Calico object, e.g. spec.allowedUses; ""
	// for the whole object.
	Field string
	// Level is what happened.
	Level Level
	// Message says why, and what to do.
	Message string
	// Command is a shell command to run, for Level Action.
	Command string
}

// String renders the finding as one report line.
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Object)
	if f.Field != "" {
		b.WriteString(" ")
		b.WriteString(f.Field)
	}
	fmt.Fprintf(&b, ": %s: %s", f.Level, f.Message)
	return b.String()
}

// Result is a conversion: the Wren objects in input order and the
// findings.
type Result struct {
	// Objects are Wren API objects (*v1alpha1.IPPool, …).
	Objects []any
	// Findings are in input order.
	Findings []Finding
	// In counts the Calico objects read (list items one by one).
	In int
	// NotConverted names the objects that could not be converted
	// ("Kind/name"); each has a Failed finding saying why.
	NotConverted []string
}

// Commands are the commands of the Action findings, in order.
func (r Result) Commands() []string {
	var cmds []string
	for _, f := range r.Findings {
		if f.Command != "" {
			cmds = append(cmds, f.Command)
		}
	}
	return cmds
}

// YAML renders the objects as a multi-document YAML stream ("---"
// between documents), ready for kubectl apply -f.
func (r Result) YAML() ([]byte, error) {
	var out bytes.Buffer
	for i, o := range r.Objects {
		b, err := marshal(o)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// marshal renders one object without the zero creationTimestamp that
// metav1.ObjectMeta always writes.
func marshal(o any) ([]byte, error) {
	j, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", o, err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("unmarshal %T: %w", o, err)
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T as yaml: %w", o, err)
	}
	return b, nil
}

// Report writes the findings, one a line, then a summary, then the
// commands to run after applying the output.
func (r Result) Report(w io.Writer) error {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String())
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "wrenctl convert: Calico objects read: %d, Wren objects written: %d, not converted: %d, findings: %d\n",
		r.In, len(r.Objects), len(r.NotConverted), len(r.Findings))
	if cmds := r.Commands(); len(cmds) > 0 {
		b.WriteString("Run after applying the output:\n")
		for _, c := range cmds {
			fmt.Fprintf(&b, "  %s\n", c)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Convert reads a YAML stream of Calico objects: several documents
// separated by "---", each an object or a list (kind List, or
// IPPoolList and the like, as kubectl and calicoctl print them). It
// returns an error only for input that is not YAML; an object that cannot
// be converted is a Failed finding and the others are still converted.
func Convert(data []byte) (Result, error) {
	var r Result
	c := converter{res: &r, names: map[string]string{}}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		b, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Result{}, fmt.Errorf("read document %d: %w", doc, err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return Result{}, fmt.Errorf("parse document %d: %w", doc, err)
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue // empty document or only comments
		}
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return Result{}, fmt.Errorf("parse document %d: not an object: %w", doc, err)
		}
		c.document(fmt.Sprintf("document %d", doc), m)
	}
	return r, nil
}

// converter holds the state of one Convert.
type converter struct {
	res *Result
	// names maps "Kind/name" of the output to the input object it came
	// from, to catch two objects converting to one name.
	names map[string]string
}

func (c *converter) document(where string, m map[string]any) {
	kind, _ := m["kind"].(string)
	if items, ok := m["items"].([]any); ok && (kind == "List" || strings.HasSuffix(kind, "List")) {
		for i, it := range items {
			im, ok := it.(map[string]any)
			if !ok {
				c.res.In++
				c.fail(fmt.Sprintf("%s item %d", where, i), "", "not an object; not converted")
				continue
			}
			c.document(fmt.Sprintf("%s item %d", where, i), im)
		}
		return
	}
	c.res.In++
	c.object(where, m)
}

func (c *converter) add(f Finding) { c.res.Findings = append(c.res.Findings, f) }

// fail reports an object that is not converted.
func (c *converter) fail(id, field, format string, args ...any) {
	c.add(Finding{Object: id, Field: field, Level: Failed, Message: fmt.Sprintf(format, args...)})
	c.res.NotConverted = append(c.res.NotConverted, id)
}

// object converts one Calico object.
func (c *converter) object(where string, m map[string]any) {
	kind, _ := m["kind"].(string)
	apiVersion, _ := m["apiVersion"].(string)
	md, _ := m["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	id := where
	if kind != "" && name != "" {
		id = kind + "/" + name
	}
	if apiVersion == "v1" && kind == "Node" && name != "" {
		o := &obj{c: c, id: id, kind: kind, name: name}
		o.kubeNode(md)
		return
	}
	if apiVersion != APIVersion && apiVersion != CRDVersion {
		c.fail(id, "", "apiVersion %q is not Calico's (%s or %s); not converted", apiVersion, APIVersion, CRDVersion)
		return
	}
	if name == "" {
		c.fail(id, "metadata.name", "missing; not converted")
		return
	}
	spec, _ := m["spec"].(map[string]any)
	if spec == nil {
		spec = map[string]any{}
	}
	o := &obj{c: c, id: id, kind: kind, name: name}
	var out any
	switch kind {
	case "IPPool":
		out = o.ipPool(spec)
	case "BGPPeer":
		out = o.bgpPeer(spec)
	case "BGPConfiguration":
		out = o.bgpConfiguration(spec)
	case "IPReservation":
		out = o.ipReservation(spec)
	case "IPAMConfiguration":
		out = o.ipamConfiguration(spec)
	case "Node":
		o.node(spec)
		return
	default:
		reason, ok := otherKinds[kind]
		if !ok {
			reason = "Wren has no counterpart"
		}
		c.fail(id, "", "kind %s is not converted: %s", kind, reason)
		return
	}
	if o.failed {
		c.res.NotConverted = append(c.res.NotConverted, id)
		return
	}
	if out == nil {
		return // skipped, reported
	}
	meta := o.meta(md)
	key := kind + "/" + meta.Name
	if prev, dup := c.names[key]; dup {
		c.fail(id, "metadata.name", "converts to %s, as %s does; not converted", key, prev)
		return
	}
	c.names[key] = id
	mo := out.(metav1.Object)
	mo.SetName(meta.Name)
	mo.SetLabels(meta.Labels)
	mo.SetAnnotations(meta.Annotations)
	c.res.Objects = append(c.res.Objects, out)
}

// otherKinds says why Calico kinds Wren does not read are left out.
var otherKinds = map[string]string{
	"FelixConfiguration":            "Wren has no Felix; the agent's flags and the wren-config ConfigMap configure the node (docs/agent.md)",
	"KubeControllersConfiguration":  "Wren has no kube-controllers; the agents clean up blocks of deleted nodes themselves",
	"ClusterInformation":            "written by Calico for itself",
	"IPAMBlock":                     "IPAM state: Wren's agents allocate their own blocks; do not port it",
	"BlockAffinity":                 "IPAM state: Wren's agents claim their own blocks; do not port it",
	"IPAMHandle":                    "IPAM state: do not port it",
	"BGPFilter":                     "Wren has no BGP filters: it imports only prefixes inside enabled pools",
	"CalicoNodeStatus":              "use wrenctl status on the node",
	"GlobalNetworkPolicy":           "Wren does no network policy; keep Kubernetes NetworkPolicy with a policy engine of your choice",
	"NetworkPolicy":                 "Wren does no network policy",
	"StagedGlobalNetworkPolicy":     "Wren does no network policy",
	"StagedNetworkPolicy":           "Wren does no network policy",
	"StagedKubernetesNetworkPolicy": "Wren does no network policy",
	"Tier":                          "Wren does no network policy",
	"GlobalNetworkSet":              "Wren does no network policy",
	"NetworkSet":                    "Wren does no network policy",
	"HostEndpoint":                  "Wren does no host protection policy",
	"Profile":                       "Wren does no network policy",
	"WorkloadEndpoint":              "written by Calico's CNI plugin for each pod",
}

// obj is one Calico object being converted.
type obj struct {
	c      *converter
	id     string
	kind   string
	name   string
	failed bool
}

func (o *obj) find(field string, l Level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if l == Failed {
		o.failed = true
		msg += "; not converted"
	}
	o.c.add(Finding{Object: o.id, Field: field, Level: l, Message: msg})
}

// meta carries the name, labels and annotations over. Names Kubernetes
// refuses for custom resources (Calico allows "_" and capitals) are
// rewritten; fields the API server sets are dropped silently.
func (o *obj) meta(md map[string]any) metav1.ObjectMeta {
	var m metav1.ObjectMeta
	m.Name = o.name
	if n := dnsName(o.name); n != o.name {
		o.find("metadata.name", Changed, "%q is no Kubernetes object name; written as %q", o.name, n)
		m.Name = n
	}
	if l, ok := md["labels"].(map[string]any); ok {
		m.Labels = stringMap(l)
	}
	if a, ok := md["annotations"].(map[string]any); ok {
		m.Annotations = stringMap(a)
		for k := range m.Annotations {
			// Calico's own bookkeeping and kubectl's record of the last
			// apply (of the Calico object, not of this one).
			if k == "projectcalico.org/metadata" || k == "kubectl.kubernetes.io/last-applied-configuration" {
				delete(m.Annotations, k)
			}
		}
		if len(m.Annotations) == 0 {
			m.Annotations = nil
		}
	}
	return m
}

// dnsName makes s a DNS subdomain as Kubernetes wants object names:
// lower case, "_" as "-".
func dnsName(s string) string {
	s = strings.ToLower(s)
	return strings.ReplaceAll(s, "_", "-")
}

func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		} else {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// rest reports every field of spec that is left, with the reason from
// reasons or a generic one.
func (o *obj) rest(prefix string, spec map[string]any, reasons map[string]string) {
	keys := make([]string, 0, len(spec))
	for k := range spec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		why, ok := reasons[k]
		if !ok {
			why = fmt.Sprintf("Wren's %s has no such field", o.kind)
		}
		o.find(prefix+k, Dropped, "%s: %s", show(spec[k]), why)
	}
}

// show renders a value for the report as compact JSON.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// take removes key from m and returns its value.
func take(m map[string]any, key string) (any, bool) {
	v, ok := m[key]
	delete(m, key)
	return v, ok && v != nil
}

// str takes a string field; a value of another type fails the object.
func (o *obj) str(m map[string]any, prefix, key string) (string, bool) {
	v, ok := take(m, key)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		o.find(prefix+key, Failed, "%s is not a string", show(v))
		return "", false
	}
	return s, s != ""
}

func (o *obj) boolean(m map[string]any, prefix, key string) (bool, bool) {
	v, ok := take(m, key)
	if !ok {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		o.find(prefix+key, Failed, "%s is not true or false", show(v))
		return false, false
	}
	return b, true
}

func (o *obj) integer(m map[string]any, prefix, key string) (int64, bool) {
	v, ok := take(m, key)
	if !ok {
		return 0, false
	}
	n, isNum := v.(json.Number)
	if !isNum {
		o.find(prefix+key, Failed, "%s is not a number", show(v))
		return 0, false
	}
	i, err := n.Int64()
	if err != nil {
		o.find(prefix+key, Failed, "%s is not an integer", n)
		return 0, false
	}
	return i, true
}

// cidr4 parses an IPv4 CIDR; host bits are cleared with a Changed
// finding.
func (o *obj) cidr4(field, s string) (v1alpha1.CIDR, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		o.find(field, Failed, "%q is not a CIDR", s)
		return "", false
	}
	if !p.Addr().Is4() {
		o.find(field, Failed, "%q is IPv6: Wren is IPv4-only", s)
		return "", false
	}
	if p.Masked() != p {
		o.find(field, Changed, "%q has host bits set; written as %s", s, p.Masked())
	}
	return v1alpha1.CIDR(p.Masked().String()), true
}
