package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/model"
	kubetest "github.com/wren-net/wren/test/kube"
)

// Test addresses: nodes 198.18.0.0/15 (API objects only).

// TestViewNodeFacts: the view reads a node's AS number and route
// reflector role from its Node; an AS number that does not parse and a
// route-reflector label that is not a dotted quad are each one Warning
// Event naming the Node and the key, and fixing the annotation takes
// effect without a restart.
func TestViewNodeFacts(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "node-a",
			Annotations: map[string]string{cluster.AnnotationIPv4: "198.18.0.11/24", cluster.AnnotationASNumber: "65010"},
			Labels:      map[string]string{cluster.LabelRouteReflector: "198.18.0.1", "rack": "r1"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-b",
			Annotations: map[string]string{cluster.AnnotationASNumber: "abc"},
			Labels:      map[string]string{cluster.LabelRouteReflector: "rack1"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-c", Labels: map[string]string{cluster.LabelRouteReflector: "true"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-d"}},
	} {
		if err := c.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	v, err := cluster.NewView(cfg, "node-a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	type facts struct {
		IP        netip.Prefix
		AS        uint32
		RR        bool
		ClusterID netip.Addr
	}
	nodeFacts := func() (map[string]facts, error) {
		ns, err := v.Nodes()
		if err != nil {
			return nil, err
		}
		out := map[string]facts{}
		for _, n := range ns {
			out[n.Name] = facts{n.IP, n.AS, n.RouteReflector, n.RRClusterID}
		}
		return out, nil
	}
	want := map[string]facts{
		"node-a": {IP: netip.MustParsePrefix("198.18.0.11/24"), AS: 65010, RR: true, ClusterID: netip.MustParseAddr("198.18.0.1")},
		"node-b": {RR: true, ClusterID: model.DefaultRRClusterID},
		"node-c": {RR: true, ClusterID: model.DefaultRRClusterID},
		"node-d": {},
	}
	got, err := nodeFacts()
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("node facts = %v, %v; want %v", got, err, want)
	}
	if _, err := v.Nodes(); err != nil { // a second look reports nothing new
		t.Fatal(err)
	}

	// Events are written asynchronously (client-go's broadcaster): wait
	// for them, then check there are no more than wanted.
	var nodeEvents []string
	listEvents := func() error {
		var evs corev1.EventList
		if err := c.List(ctx, &evs); err != nil {
			return err
		}
		nodeEvents = nil
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.Type == corev1.EventTypeWarning {
				nodeEvents = append(nodeEvents, e.InvolvedObject.Name+" "+e.Reason+": "+e.Message)
			}
		}
		if len(nodeEvents) < 2 {
			return fmt.Errorf("Node Events so far: %q", nodeEvents)
		}
		return nil
	}
	poll(t, "the Node Events are recorded", listEvents)
	wantEvents := []string{
		`node-b BadAnnotation: annotation wren.network/as-number="abc" is not an AS number`,
		`node-b BadLabel: label wren.network/route-reflector="rack1" is neither true nor a cluster ID`,
	}
	if len(nodeEvents) != len(wantEvents) {
		t.Fatalf("Node Events %q, want one each of %q", nodeEvents, wantEvents)
	}
	for _, w := range wantEvents {
		found := false
		for _, e := range nodeEvents {
			found = found || strings.HasPrefix(e, w)
		}
		if !found {
			t.Errorf("no Event %q among %q", w, nodeEvents)
		}
	}

	// The operator fixes node-b's AS number.
	var b corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: "node-b"}, &b); err != nil {
		t.Fatal(err)
	}
	b.Annotations[cluster.AnnotationASNumber] = "65020"
	if err := c.Update(ctx, &b); err != nil {
		t.Fatal(err)
	}
	want["node-b"] = facts{AS: 65020, RR: true, ClusterID: model.DefaultRRClusterID}
	poll(t, "node-b's new AS number", func() error {
		got, err := nodeFacts()
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("node facts = %v, %v; want %v", got, err, want)
		}
		return nil
	})
}
