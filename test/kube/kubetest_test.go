package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// recorder is a testing.TB that records Skipf/Fatalf and stops the
// goroutine like the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(f string, a ...any) {
	r.skipped = fmt.Sprintf(f, a...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(f string, a ...any) {
	r.failed = fmt.Sprintf(f, a...)
	runtime.Goexit()
}

func runTB(r *recorder, f func(testing.TB)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f(r) }()
	wg.Wait()
}

// TestAssetsDirMissing: without binaries a test skips naming build.sh,
// except under CI, where it fails.
func TestAssetsDirMissing(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("WREN_CACHE", empty)
	t.Setenv("KUBEBUILDER_ASSETS", "")

	t.Setenv("CI", "")
	r := &recorder{TB: t}
	runTB(r, func(tb testing.TB) { AssetsDir(tb) })
	if r.failed != "" || !strings.Contains(r.skipped, "hack/kube/build.sh") || !strings.Contains(r.skipped, empty) {
		t.Errorf("without CI: skipped %q, failed %q; want a skip naming hack/kube/build.sh and %s", r.skipped, r.failed, empty)
	}

	t.Setenv("CI", "true")
	r = &recorder{TB: t}
	runTB(r, func(tb testing.TB) { AssetsDir(tb) })
	if r.skipped != "" || !strings.Contains(r.failed, "hack/kube/build.sh") || !strings.Contains(r.failed, "CI=true") {
		t.Errorf("with CI=true: skipped %q, failed %q; want a failure naming hack/kube/build.sh and CI", r.skipped, r.failed)
	}

	t.Setenv("KUBEBUILDER_ASSETS", empty)
	r = &recorder{TB: t}
	runTB(r, func(tb testing.TB) { AssetsDir(tb) })
	if !strings.Contains(r.failed, "KUBEBUILDER_ASSETS="+empty) {
		t.Errorf("with KUBEBUILDER_ASSETS: failed %q, want the variable named", r.failed)
	}
}

func TestKubeVersion(t *testing.T) {
	if v := KubeVersion(t); !strings.HasPrefix(v, "v1.") {
		t.Errorf("KubeVersion = %q, want v1.x.y", v)
	}
}

func pool(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "wren.network/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"cidr": "10.244.0.0/16"},
	}}
	return u
}

// TestStartIsolated starts two API servers side by side: both serve the
// CRDs, and an object created in one does not exist in the other.
func TestStartIsolated(t *testing.T) {
	ctx := context.Background()
	a, err := client.New(Start(t), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.New(Start(t), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, pool("only-in-a")); err != nil {
		t.Fatalf("create IPPool (CRDs installed?): %v", err)
	}
	err = b.Get(ctx, client.ObjectKey{Name: "only-in-a"}, pool(""))
	if !apierrors.IsNotFound(err) {
		t.Fatalf("second API server: get only-in-a: %v, want NotFound", err)
	}
}

// TestShared: every caller gets the same API server.
func TestShared(t *testing.T) {
	ctx := context.Background()
	c1, c2 := Shared(t), Shared(t)
	if c1.Host != c2.Host {
		t.Fatalf("Shared returned %s then %s", c1.Host, c2.Host)
	}
	a, err := client.New(c1, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.New(c2, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, pool("shared")); err != nil {
		t.Fatal(err)
	}
	if err := b.Get(ctx, client.ObjectKey{Name: "shared"}, pool("")); err != nil {
		t.Fatalf("get through the second config: %v", err)
	}
}

// A stop timeout (envtest has already sent SIGKILL) is logged and
// dropped; any other stop error is kept, alone or beside a timeout.
func TestStopErr(t *testing.T) {
	timeout := errors.New("timeout waiting for process kube-apiserver to stop")
	other := errors.New("unable to signal for process /x/etcd to stop: operation not permitted")
	for _, c := range []struct {
		name   string
		in     error
		want   string
		logged int
	}{
		{"nil", nil, "", 0},
		{"timeout alone", kerrors.NewAggregate([]error{timeout}), "", 1},
		{"timeout and another", kerrors.NewAggregate([]error{timeout, other}), other.Error(), 1},
		{"another alone", other, other.Error(), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs []string
			err := stopErr(c.in, func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != c.want || len(logs) != c.logged {
				t.Errorf("stopErr = %q with %d log lines %q; want %q with %d", got, len(logs), logs, c.want, c.logged)
			}
			for _, l := range logs {
				if !strings.Contains(l, "kube-apiserver") || !strings.Contains(l, "SIGKILL") {
					t.Errorf("log line %q does not name the process and the kill", l)
				}
			}
		})
	}
}
