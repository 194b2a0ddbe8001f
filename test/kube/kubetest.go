// Package kubetest starts a real kube-apiserver and etcd for tests, with
// Wren's CRDs (deploy/crds) installed, through controller-runtime's
// envtest. No fake clientset: admission, defaulting, CEL validation and
// resourceVersion conflicts are the real API server's.
//
// The binaries come from the cache hack/kube/build.sh fills:
// ${WREN_CACHE:-/var/cache/wren}/k8s-<version>/{kube-apiserver,etcd,kubectl},
// where <version> is the k8s.io/kubernetes version pinned in
// hack/kube/tools/go.mod (KUBEBUILDER_ASSETS, if set, names another
// directory). Without them a test skips with the reason, except under CI
// (CI set), where it fails: CI must never skip silently.
//
// Start gives each test its own API server and etcd (≈6 s on a 2-vCPU
// VM). Packages with many tests can share one per package with Main and
// Shared. Everything listens on 127.0.0.1 only.
package kubetest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// module is the main module's path; RepoRoot looks for its go.mod.
const module = "github.com/wren-net/wren"

// binaries are what envtest runs from the assets directory.
var binaries = []string{"kube-apiserver", "etcd", "kubectl"}

// RepoRoot returns the directory of the main module's go.mod, found by
// walking up from the working directory (a test's package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(string(b)) == module {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of module %s above %s", module, dir)
		}
	}
}

func modulePath(gomod string) string {
	for _, l := range strings.Split(gomod, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "module" {
			return f[1]
		}
	}
	return ""
}

// KubeVersion returns the Kubernetes version the tests run: the
// k8s.io/kubernetes requirement of hack/kube/tools/go.mod, as build.sh
// reads it.
func KubeVersion(t testing.TB) string {
	t.Helper()
	v, err := kubeVersion()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return v
}

func kubeVersion() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "hack", "kube", "tools", "go.mod")
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("read the pinned Kubernetes version: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(strings.TrimPrefix(strings.TrimSpace(s.Text()), "require "))
		if len(fs) >= 2 && fs[0] == "k8s.io/kubernetes" {
			return fs[1], nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return "", fmt.Errorf("no k8s.io/kubernetes requirement in %s", p)
}

// AssetsDir returns the directory holding kube-apiserver, etcd and
// kubectl. If they are missing it skips the test with the reason and the
// command that fixes it, or fails it when the CI variable is set.
func AssetsDir(t testing.TB) string {
	t.Helper()
	dir, err := assetsDir()
	if err != nil {
		if ci := os.Getenv("CI"); ci != "" {
			t.Fatalf("kubetest: %v (CI=%s: not skipping)", err, ci)
		}
		t.Skipf("kubetest: %v", err)
	}
	return dir
}

func assetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, checkBinaries(dir, "KUBEBUILDER_ASSETS="+dir+" lacks %s; unset it to use hack/kube/build.sh's cache")
	}
	v, err := kubeVersion()
	if err != nil {
		return "", err
	}
	cache := os.Getenv("WREN_CACHE")
	if cache == "" {
		cache = "/var/cache/wren"
	}
	dir := filepath.Join(cache, "k8s-"+v)
	return dir, checkBinaries(dir, "%s "+v+" is not built: run hack/kube/build.sh (builds kube-apiserver and kubectl "+v+
		" into "+dir+" in about 6 minutes and links Debian's etcd there)")
}

// checkBinaries reports the first missing or non-executable binary of
// dir, formatting why with its path.
func checkBinaries(dir, why string) error {
	for _, b := range binaries {
		p := filepath.Join(dir, b)
		fi, err := os.Stat(p) // follows the etcd symlink
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf(why, p)
		}
	}
	return nil
}

var quietLogs sync.Once

// newEnvironment returns an envtest environment over the cached binaries
// and deploy/crds. It never uses an existing cluster, whatever
// USE_EXISTING_CLUSTER says.
func newEnvironment(t testing.TB) *envtest.Environment {
	t.Helper()
	dir := AssetsDir(t)
	// envtest logs through controller-runtime's logger, which otherwise
	// complains after 30 s that it was never set.
	quietLogs.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	existing := false
	return &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(t), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
		UseExistingCluster:    &existing,
	}
}

// Start starts a kube-apiserver and etcd for this test alone, with the
// CRDs of deploy/crds established, and stops them when the test ends. The
// returned config is cluster-admin over 127.0.0.1.
func Start(t testing.TB) *rest.Config {
	t.Helper()
	env := newEnvironment(t)
	t0 := time.Now()
	cfg, err := env.Start()
	if err != nil {
		// Stop whatever half started (etcd without an apiserver).
		_ = env.Stop()
		t.Fatalf("kubetest: start kube-apiserver and etcd from %s: %v", env.BinaryAssetsDirectory, err)
	}
	t.Logf("kubetest: envtest (kube-apiserver + etcd + CRDs) started in %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		t0 := time.Now()
		if err := stopErr(env.Stop(), t.Logf); err != nil {
			t.Errorf("kubetest: stop envtest: %v", err)
		}
		t.Logf("kubetest: envtest stopped in %s", time.Since(t0).Round(time.Millisecond))
	})
	return cfg
}

// stopErr returns the errors of envtest's Stop that matter to a test.
// A process that outlives its stop timeout (kube-apiserver draining
// requests on SIGTERM sometimes takes over 20 s on a loaded machine) has
// already been sent SIGKILL by envtest, so that error is logged, not
// returned: the server is gone either way and the test's work is done.
func stopErr(err error, logf func(string, ...any)) error {
	if err == nil {
		return nil
	}
	var kept []error
	for _, e := range flatten(err) {
		if strings.HasPrefix(e.Error(), "timeout waiting for process ") {
			logf("kubetest: %v; envtest sent it SIGKILL", e)
			continue
		}
		kept = append(kept, e)
	}
	return errors.Join(kept...)
}

// flatten returns the errors joined in err (envtest joins its
// components' errors with an aggregate), or err alone.
func flatten(err error) []error {
	if agg, ok := err.(interface{ Errors() []error }); ok {
		return agg.Errors()
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// shared is the per-package environment of Shared, stopped by Main.
var shared struct {
	sync.Mutex
	inMain bool
	env    *envtest.Environment
	cfg    *rest.Config
	err    error
}

// Main runs the package's tests and then stops the API server Shared
// started, if any. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.env != nil {
		if err := stopErr(shared.env.Stop(), func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop shared envtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns a config for one API server shared by every test of the
// package that calls it, started by the first caller. Tests sharing it
// must use distinct object names (or clean up after themselves). The
// package's TestMain must call Main, which stops the server.
func Shared(t testing.TB) *rest.Config {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("kubetest: Shared needs the package's TestMain to run kubetest.Main, which stops the shared API server")
	}
	if shared.env == nil && shared.err == nil {
		env := newEnvironment(t) // may skip: then the next caller tries again
		t0 := time.Now()
		cfg, err := env.Start()
		if err != nil {
			_ = env.Stop()
			shared.err = fmt.Errorf("start kube-apiserver and etcd from %s: %w", env.BinaryAssetsDirectory, err)
		} else {
			shared.env, shared.cfg = env, cfg
			t.Logf("kubetest: shared envtest (kube-apiserver + etcd + CRDs) started in %s", time.Since(t0).Round(time.Millisecond))
		}
	}
	if shared.err != nil {
		t.Fatalf("kubetest: %v", shared.err)
	}
	return rest.CopyConfig(shared.cfg)
}
