//go:build linux

package nstest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentBadInput: what admission cannot catch — a pool overlapping
// another, a pool with both encapsulations written by a client that
// predates the validation rule, a BGPPeer the node cannot reach — each
// produces a Warning Event naming the object, and the agent keeps serving
// everything else (a pod added afterwards is reachable).
func TestAgentBadInput(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapAlways)
	a := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	b := ac.addNode("node-b", ac.sw1, "198.18.0.12/24")
	ac.addPod(a, "node-a-web")
	ctx := context.Background()

	overlap := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "overlap"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.128.0/17", VXLANMode: v1alpha1.EncapAlways, IPIPMode: v1alpha1.EncapNever}}
	if err := ac.c.Create(ctx, overlap); err != nil {
		t.Fatal(err)
	}

	// An old client: drop the both-modes rule from the CRD, write the
	// pool, put the rule back.
	ac.withoutPoolSpecRules(func() {
		both := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "both"},
			Spec: v1alpha1.IPPoolSpec{CIDR: "10.246.0.0/16", VXLANMode: v1alpha1.EncapAlways, IPIPMode: v1alpha1.EncapAlways}}
		nstest.Poll(t, 10*time.Second, "old-client pool accepted", func() error { return ac.c.Create(ctx, both) })
	})

	a.ns.AddRoute(t, "unreachable", "198.19.250.0/24")
	asn := v1alpha1.ASNumber(64513)
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"},
		Spec: v1alpha1.BGPPeerSpec{PeerIP: "198.19.250.1", ASNumber: &asn}}
	if err := ac.c.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}

	for _, want := range []struct{ kind, name, reason, text string }{
		{"IPPool", "overlap", "OverlappingPool", "overlaps IPPool default (10.244.0.0/16)"},
		{"IPPool", "both", "BothEncapsulations", "at most one may be enabled"},
		{"BGPPeer", "tor", "PeerUnreachable", "198.19.250.1 is unreachable from node node-a"},
	} {
		nstest.Poll(t, 10*time.Second, fmt.Sprintf("Event %s on %s %s", want.reason, want.kind, want.name), func() error {
			var evs corev1.EventList
			if err := ac.c.List(ctx, &evs); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Kind == want.kind && e.InvolvedObject.Name == want.name && e.Reason == want.reason &&
					e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, want.text) {
					t.Logf("event %s %s/%s: %s", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
					return nil
				}
			}
			return fmt.Errorf("not among %d events", len(evs.Items))
		})
	}
	// Everything else still works: a new pod is reachable from the others.
	ac.addPod(b, "node-b-web")
	ac.pingMatrix(20 * time.Second)
	ac.assertStates(false)
}

// withoutPoolSpecRules runs fn while the IPPool CRD lacks the rules on
// spec (as if the object were written before they existed).
func (ac *agentCluster) withoutPoolSpecRules(fn func()) {
	t := ac.t
	ctx := context.Background()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := ac.c.Get(ctx, keyOf("ippools.wren.network"), u); err != nil {
		t.Fatal(err)
	}
	orig := u.DeepCopy()
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	v0 := versions[0].(map[string]any)
	unstructured.RemoveNestedField(v0, "schema", "openAPIV3Schema", "properties", "spec", "x-kubernetes-validations")
	versions[0] = v0
	if err := unstructured.SetNestedSlice(u.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := ac.c.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	fn()
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(u.GroupVersionKind())
	if err := ac.c.Get(ctx, keyOf("ippools.wren.network"), cur); err != nil {
		t.Fatal(err)
	}
	orig.SetResourceVersion(cur.GetResourceVersion())
	if err := ac.c.Update(ctx, orig); err != nil {
		t.Fatal(err)
	}
}
