package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/ipam"
	kubetest "github.com/wren-net/wren/test/kube"
)

// TestAgentRBACForIPAMChoice: with deploy/rbac.yaml applied to a real API
// server (envtest authorizes by RBAC), the agent's ServiceAccount starts
// the View (every informer, the Namespace, IPReservation and
// IPAMConfiguration ones included), reads a pod's choice through an
// uncached GET of a pod and its namespace's annotation, and lists the
// IPAM settings live. A rule missing from rbac.yaml makes Start or a read
// fail with Forbidden.
func TestAgentRBACForIPAMChoice(t *testing.T) {
	cfg := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := kubetest.RepoRoot(t)
	for _, f := range []string{"deploy/namespace.yaml", "deploy/rbac.yaml"} {
		r, err := os.Open(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
		for {
			var o unstructured.Unstructured
			if err := dec.Decode(&o.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(o.Object) == 0 {
				continue
			}
			if err := c.Create(ctx, &o); err != nil {
				t.Fatalf("%s: create %s %s: %v", f, o.GetKind(), o.GetName(), err)
			}
		}
		r.Close()
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a",
		Annotations: map[string]string{cluster.AnnotationIPv4Pools: `["blue"]`}}}); err != nil {
		t.Fatal(err)
	}
	// On another node: not in node-a's pod cache, so PodChoice GETs it.
	if err := c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web-0"},
		Spec: corev1.PodSpec{NodeName: "node-b", Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}); err != nil {
		t.Fatal(err)
	}

	sa := rest.CopyConfig(cfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:wren-system:wren-agent"}
	v, err := cluster.NewView(sa, "node-a", slog.New(slog.DiscardHandler), cluster.WithNamespace("wren-system"))
	if err != nil {
		t.Fatal(err)
	}
	startCtx, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	if err := v.Start(startCtx, func() {}); err != nil {
		t.Fatalf("View.Start as the agent's ServiceAccount: %v (a list or watch rule missing from deploy/rbac.yaml?)", err)
	}
	got, err := v.PodChoice(ctx, "team-a", "web-0")
	if err != nil || len(got.Pools) != 1 || got.Pools[0].Name != "blue" {
		t.Errorf("PodChoice as the agent's ServiceAccount: %+v, %v; want pools [blue] from the namespace", got, err)
	}
	if _, err := v.IPAMStore().Settings(ctx); err != nil {
		t.Errorf("IPAM settings (live lists) as the agent's ServiceAccount: %v", err)
	}
	if _, err := v.IPAMStore().(ipam.CachedStore).CachedSettings(ctx); err != nil {
		t.Errorf("IPAM settings (cache) as the agent's ServiceAccount: %v", err)
	}
	if got, err := v.PodChoice(ctx, "team-a", "no-such-pod"); err != nil || got.IP.IsValid() || len(got.Pools) != 0 {
		t.Errorf("PodChoice of a missing pod: %+v, %v; want no choice", got, err)
	}
	// Impersonation is in effect: what rbac.yaml does not grant is refused.
	saClient, err := cluster.NewClient(sa)
	if err != nil {
		t.Fatal(err)
	}
	// PodChoice GETs a namespace only when its cache has not seen it yet
	// (created a moment ago): check the rule directly.
	if err := saClient.Get(ctx, client.ObjectKey{Name: "team-a"}, &corev1.Namespace{}); err != nil {
		t.Errorf("the agent's ServiceAccount cannot GET a Namespace: %v", err)
	}
	if err := saClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rogue"}}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent's ServiceAccount created a Namespace: %v; want Forbidden", err)
	}
}
