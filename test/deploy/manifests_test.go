// Package deploy_test checks the install manifests against a real
// kube-apiserver: every object of deploy/ and of the lab's overlay passes
// server-side dry-run (schema, defaulting, admission, RBAC references),
// and the lab's BGP configuration for tor mode too.
package deploy_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	kubetest "github.com/wren-net/wren/test/kube"
)

// kubectl runs the cached kubectl against cfg's API server.
type kubectl struct {
	t          *testing.T
	bin, kconf string
}

func newKubectl(t *testing.T, cfg *rest.Config) kubectl {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return kubectl{t: t, bin: filepath.Join(kubetest.AssetsDir(t), "kubectl"), kconf: path}
}

func (k kubectl) run(stdin string, args ...string) (string, error) {
	cmd := exec.Command(k.bin, append([]string{"--kubeconfig", k.kconf}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestManifestsServerDryRun renders deploy/ and hack/lab/deploy with
// kubectl kustomize and has the API server dry-run every object: first
// the cluster-scoped ones (the Namespace and the CRDs) against an empty
// cluster, then, with the Namespace created, all of them.
func TestManifestsServerDryRun(t *testing.T) {
	cfg := kubetest.Start(t)
	k := newKubectl(t, cfg)
	repo := kubetest.RepoRoot(t)
	for _, dir := range []string{"deploy", "hack/lab/deploy"} {
		out, err := k.run("", "kustomize", filepath.Join(repo, dir))
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "DaemonSet"} {
			if !strings.Contains(out, "\nkind: "+kind+"\n") {
				t.Errorf("%s renders no %s", dir, kind)
			}
		}
		// Before the namespace exists only cluster-scoped objects pass, so
		// kubectl exits non-zero; every error line must be that one.
		res, _ := k.run(out, "apply", "--dry-run=server", "-f", "-")
		for _, line := range strings.Split(strings.TrimSpace(res), "\n") {
			if strings.Contains(line, "Error") && !strings.Contains(line, `namespaces "wren-system" not found`) {
				t.Errorf("%s: server dry-run: %s", dir, line)
			}
		}
		if !strings.Contains(res, "customresourcedefinition.apiextensions.k8s.io/ippools.wren.network") {
			t.Errorf("%s: the CRDs were not dry-run:\n%s", dir, res)
		}
	}
	if out, err := k.run("", "create", "namespace", "wren-system"); err != nil {
		t.Fatalf("create namespace: %v: %s", err, out)
	}
	for _, dir := range []string{"deploy", "hack/lab/deploy"} {
		out, err := k.run("", "apply", "--dry-run=server", "-k", filepath.Join(repo, dir))
		if err != nil {
			t.Errorf("%s: kubectl apply --dry-run=server -k: %v\n%s", dir, err, out)
			continue
		}
		n := strings.Count(out, "(server dry run)")
		t.Logf("%s: %d objects pass server-side dry-run", dir, n)
		if n < 12 {
			t.Errorf("%s: only %d objects dry-run:\n%s", dir, n, out)
		}
	}
}

// TestLabBGPConfigDryRun dry-runs the BGP configuration the lab applies
// in tor mode.
func TestLabBGPConfigDryRun(t *testing.T) {
	cfg := kubetest.Start(t)
	k := newKubectl(t, cfg)
	out, err := k.run("", "apply", "--dry-run=server", "-f", filepath.Join(kubetest.RepoRoot(t), "hack", "lab", "deploy", "tor-bgp.yaml"))
	if err != nil {
		t.Fatalf("server dry-run of the tor configuration: %v\n%s", err, out)
	}
	if n := strings.Count(out, "(server dry run)"); n != 3 {
		t.Errorf("%d objects dry-run, want 3:\n%s", n, out)
	}
}
