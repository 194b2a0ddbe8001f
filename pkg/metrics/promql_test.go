package metrics

// Every PromQL expression in deploy/monitoring (the PrometheusRule's
// alerts and the Grafana dashboard's queries) parses with Prometheus' own
// parser and names only metrics the agent's registry really exports
// (gathered from the registry over fakes, not from a list kept by hand).
// The alerts' annotations only use labels their expression keeps.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

var monitoring = filepath.Join("..", "..", "deploy", "monitoring")

// exported is every series name the agent's registry exports, with the
// _bucket, _sum and _count series of histograms and summaries.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for name, mf := range gather(t, populated(t, fakeSource{})) {
		names[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// selectorName is the metric a selector names, from its name or a
// __name__ equality matcher ("" if neither).
func selectorName(name string, ms []*labels.Matcher) string {
	if name != "" {
		return name
	}
	for _, m := range ms {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// checkExpr parses expr and checks every metric it selects.
func checkExpr(t *testing.T, where, expr string, names map[string]bool) parser.Expr {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	found := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		found++
		switch name := selectorName(vs.Name, vs.LabelMatchers); {
		case name == "":
			t.Errorf("%s: %q selects no metric by name", where, vs)
		case !names[name]:
			t.Errorf("%s: %q uses %s, which the agent does not export", where, expr, name)
		}
		return nil
	})
	if found == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	return e
}

// keptLabels returns the labels the result of e can carry; all when e
// keeps every label of its series.
func keptLabels(e parser.Expr) (set []string, all bool) {
	switch e := e.(type) {
	case *parser.ParenExpr:
		return keptLabels(e.Expr)
	case *parser.VectorSelector, *parser.MatrixSelector:
		return nil, true
	case *parser.Call:
		for _, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return keptLabels(a)
			}
		}
		return nil, false
	case *parser.AggregateExpr:
		if e.Without {
			return nil, true // a superset: good enough for the check
		}
		return e.Grouping, false
	case *parser.BinaryExpr:
		ls, la := keptLabels(e.LHS)
		if e.RHS.Type() != parser.ValueTypeVector || e.Op == parser.LAND || e.Op == parser.LUNLESS {
			return ls, la
		}
		if e.LHS.Type() != parser.ValueTypeVector {
			return keptLabels(e.RHS)
		}
		rs, ra := keptLabels(e.RHS)
		switch {
		case la && ra:
			return nil, true
		case la:
			return rs, false
		case ra:
			return ls, false
		}
		var both []string
		for _, l := range ls {
			if slices.Contains(rs, l) {
				both = append(both, l)
			}
		}
		return both, false
	}
	return nil, false
}

// rule is one rule of the PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(monitoring, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []rule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(b, &pr); err != nil {
		t.Fatal(err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("%s %s; want a monitoring.coreos.com/v1 PrometheusRule", pr.APIVersion, pr.Kind)
	}
	names := exported(t)
	labelRef := regexp.MustCompile(`\$labels\.([a-zA-Z_]+)`)
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert + r.Record
			e := checkExpr(t, where, r.Expr, names)
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a severity label and summary and description annotations", where)
			}
			if e == nil {
				continue
			}
			kept, all := keptLabels(e)
			for _, text := range r.Annotations {
				for _, m := range labelRef.FindAllStringSubmatch(text, -1) {
					if !all && !slices.Contains(kept, m[1]) {
						t.Errorf("%s: the annotations use $labels.%s, which %q does not keep (it keeps %v)", where, m[1], r.Expr, kept)
					}
				}
			}
			// Name what the alert is about: a node, a pool or a peer.
			if !strings.Contains(r.Annotations["summary"], "$labels.node") && !strings.Contains(r.Annotations["summary"], "$labels.pool") {
				t.Errorf("%s: the summary names neither the node nor the pool", where)
			}
		}
	}
	for _, want := range []string{"WrenBGPPeerDown", "WrenNodeNotReady", "WrenKernelRouteWriteErrors", "WrenNodeOutOfBlockSpace",
		"WrenNodeBorrowingAddresses", "WrenIPPoolNearlyExhausted"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}
}

// grafanaVars are Grafana's own variables, replaced by a duration before
// parsing; the dashboard's template variables are used inside label
// matchers' quotes only.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(monitoring, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string      `json:"uid"`
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	names := exported(t)
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		checkExpr(t, "variable "+v.Name, m[1], names)
	}
	varRef := regexp.MustCompile(`\$\{?([a-zA-Z_]+)`)
	exprs := 0
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				where := fmt.Sprintf("panel %q", p.Title)
				for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
						t.Errorf("%s: %q uses $%s, which is no template variable", where, tg.Expr, m[1])
					}
				}
				checkExpr(t, where, grafanaVars.Replace(tg.Expr), names)
				exprs++
			}
		}
	}
	walk(d.Panels)
	if exprs < 20 {
		t.Errorf("only %d queries in the dashboard", exprs)
	}
}

type dashPanel struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}
