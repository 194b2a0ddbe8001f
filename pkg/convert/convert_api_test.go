package convert_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/convert"
	kubetest "github.com/wren-net/wren/test/kube"
)

// Test addresses: as in convert_test.go; API objects only.

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// TestOutputAccepted converts every testdata case and creates the
// output on a real kube-apiserver with Wren's CRDs (deploy/crds), with
// strict field validation so that a field the CRD does not know is an
// error rather than pruned. Each object must be accepted, and reading it
// back must give every field written (the API server's defaults may add
// more). The objects are deleted before the next case (several cases
// write BGPConfiguration default).
func TestOutputAccepted(t *testing.T) {
	cfg := kubetest.Shared(t)
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ins, err := filepath.Glob("testdata/*/in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range ins {
		t.Run(filepath.Base(filepath.Dir(in)), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			res, err := convert.Convert(data)
			if err != nil {
				t.Fatal(err)
			}
			out, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			objs := decode(t, out)
			if len(objs) != len(res.Objects) || len(objs) == 0 {
				t.Fatalf("%d documents in the output for %d objects", len(objs), len(res.Objects))
			}
			for _, o := range objs {
				t.Cleanup(func() { _ = c.Delete(ctx, o.DeepCopy()) })
				if err := c.Create(ctx, o.DeepCopy(), client.FieldValidation("Strict")); err != nil {
					t.Errorf("create %s/%s: %v", o.GetKind(), o.GetName(), err)
					continue
				}
				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(o.GroupVersionKind())
				if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
					t.Fatal(err)
				}
				want, _ := o.Object["spec"].(map[string]any)
				stored, _ := got.Object["spec"].(map[string]any)
				for k, v := range want {
					if diff := cmp.Diff(v, stored[k]); diff != "" {
						t.Errorf("%s/%s spec.%s stored differently (-written +stored):\n%s", o.GetKind(), o.GetName(), k, diff)
					}
				}
				if diff := cmp.Diff(o.GetLabels(), got.GetLabels()); diff != "" {
					t.Errorf("%s/%s labels (-written +stored):\n%s", o.GetKind(), o.GetName(), diff)
				}
			}
		})
	}
}

// decode splits a YAML stream into objects.
func decode(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, doc)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil { // integers as int64, as the client reads them
			t.Fatalf("output document is not an object: %v\n%s", err, doc)
		}
		objs = append(objs, u)
	}
}
