package main

// The wrenctl binary's `ipam check` and `ipam release` against a real
// kube-apiserver (envtest), through a kubeconfig file as an operator
// would run them.
//
// Test addresses: pods 10.244.8.0/24 (pool "pool-8", /26 blocks), nodes
// are API objects only.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	kubetest "github.com/wren-net/wren/test/kube"
)

// buildWrenctl builds this command into a temporary directory.
func buildWrenctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wrenctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/wrenctl")
	cmd.Dir = kubetest.RepoRoot(t)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/wrenctl: %v\n%s", err, out)
	}
	t.Logf("built wrenctl in %s", time.Since(t0).Round(time.Millisecond))
	return bin
}

// writeKubeconfig writes envtest's admin credentials as a kubeconfig
// file (by hand: wrenctl's tests do not import client-go).
func writeKubeconfig(t *testing.T, host string, caData, certData, keyData []byte) string {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: admin
  user: {client-certificate-data: %s, client-key-data: %s}
contexts:
- name: envtest
  context: {cluster: envtest, user: admin}
current-context: envtest
`, host, b64(caData), b64(certData), b64(keyData))
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runBin runs the wrenctl binary with env added to the environment
// (KUBECONFIG cleared unless env sets it, so the test never reads the
// machine's).
func runBin(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "KUBECONFIG=") || strings.HasPrefix(e, "KUBERNETES_SERVICE_HOST=") || strings.HasPrefix(e, "HOME=")
	}), append([]string{"HOME=" + t.TempDir()}, env...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s %q: %v", bin, args, err)
	}
	return o.String(), e.String(), code
}

func mkBlock(cidr, affinity string, allocs ...v1alpha1.IPAllocation) *v1alpha1.IPAMBlock {
	return &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BlockName(netip.MustParsePrefix(cidr))},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: v1alpha1.CIDR(cidr), Affinity: affinity, State: v1alpha1.BlockConfirmed, Allocations: allocs},
	}
}

func podAlloc(ip, pod, node string) v1alpha1.IPAllocation {
	return v1alpha1.IPAllocation{IP: ip, Handle: "default/" + pod + "/c-" + pod, Namespace: "default", Pod: pod, ContainerID: "c-" + pod, Node: node}
}

func mkPod(t *testing.T, c crclient.Client, name, node, ip string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := c.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
}

func create(t *testing.T, c crclient.Client, objs ...crclient.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s: %v", o.GetName(), err)
		}
	}
}

// TestWrenctlIPAMCheckRelease: the wrenctl binary, given envtest's
// kubeconfig by --kubeconfig or $KUBECONFIG:
//   - ipam check on a consistent cluster exits 0 and says so;
//   - with a leaked allocation (deleted pod), a pod without allocation, a
//     block of a deleted node and a borrowed address, ipam check exits 1
//     and prints exactly those (table, -o json, -o yaml);
//   - ipam release of an address a live pod holds exits 1 naming the pod
//     and leaves the block unchanged; of the leaked address exits 0 and
//     frees it in its block; a second release of it exits 1 (not
//     allocated); without --ip exits 2.
func TestWrenctlIPAMCheckRelease(t *testing.T) {
	cfg := kubetest.Start(t)
	bin := buildWrenctl(t)
	if len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 {
		t.Fatalf("envtest's config has no client certificate data (cert file %q): writeKubeconfig needs it", cfg.CertFile)
	}
	kc := writeKubeconfig(t, cfg.Host, cfg.CAData, cfg.CertData, cfg.KeyData)
	c, err := cluster.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create(t, c, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}},
		&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-8"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.8.0/24", BlockSize: 26}},
		mkBlock("10.244.8.0/26", "node-a", podAlloc("10.244.8.1", "web-1", "node-a")))
	mkPod(t, c, "web-1", "node-a", "10.244.8.1")

	out, errOut, code := runBin(t, bin, nil, "ipam", "check", "--kubeconfig", kc)
	if code != 0 || !strings.HasSuffix(out, "IPAM is consistent.\n") {
		t.Fatalf("ipam check on a consistent cluster: exit %d, want 0 and \"IPAM is consistent.\"\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("ipam check, consistent:\n%s", out)

	// The problems.
	var b v1alpha1.IPAMBlock
	if err := c.Get(ctx, crclient.ObjectKey{Name: "10-244-8-0-26"}, &b); err != nil {
		t.Fatal(err)
	}
	b.Spec.Allocations = append(b.Spec.Allocations, podAlloc("10.244.8.2", "gone-1", "node-a"), podAlloc("10.244.8.4", "web-2", "node-b"))
	if err := c.Update(ctx, &b); err != nil {
		t.Fatal(err)
	}
	create(t, c, mkBlock("10.244.8.64/26", "node-gone"))
	mkPod(t, c, "web-2", "node-b", "10.244.8.4")
	mkPod(t, c, "lost-1", "node-b", "10.244.8.130")

	out, errOut, code = runBin(t, bin, []string{"KUBECONFIG=" + kc}, "-o", "wide", "ipam", "check")
	t.Logf("ipam check -o wide with problems: exit %d\n%s%s", code, out, errOut)
	if code != 1 {
		t.Errorf("ipam check with problems: exit %d, want 1", code)
	}
	out, errOut, code = runBin(t, bin, []string{"KUBECONFIG=" + kc}, "ipam", "check")
	t.Logf("ipam check with problems: exit %d\n%s%s", code, out, errOut)
	for _, want := range []string{
		"| 10.244.8.2 | 10.244.8.0/26 | node-a     | default/gone-1 | node-a | pod default/gone-1 does not exist |",
		"| 10.244.8.130 | default/lost-1 | node-b | pool-8 | no allocation |",
		"| 10.244.8.64/26 | node-gone |           0 |",
		"| 10.244.8.4 | 10.244.8.0/26 | node-a     | default/web-2 | node-b       |",
		"|      2 |           3 |    3 |      1 |       1 |             1 |        1 |",
		"Found 3 problem(s).",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ipam check table lacks %q", want)
		}
	}
	if code != 1 {
		t.Errorf("ipam check with problems: exit %d, want 1", code)
	}

	type finding struct{ IP, Block, Pod, Owner, Node, Reason string }
	type report struct {
		Leaked, Missing, Borrowed []finding
		OrphanBlocks              []struct {
			Block, Node string
			Allocations int
		}
		Summary cluster.IPAMSummary
	}
	wantReport := report{
		Leaked:   []finding{{IP: "10.244.8.2", Block: "10.244.8.0/26", Owner: "default/gone-1", Node: "node-a", Reason: "pod default/gone-1 does not exist"}},
		Missing:  []finding{{IP: "10.244.8.130", Pod: "default/lost-1", Node: "node-b", Reason: "no allocation"}},
		Borrowed: []finding{{IP: "10.244.8.4", Block: "10.244.8.0/26", Pod: "default/web-2", Node: "node-b"}},
		OrphanBlocks: []struct {
			Block, Node string
			Allocations int
		}{{Block: "10.244.8.64/26", Node: "node-gone"}},
		Summary: cluster.IPAMSummary{Blocks: 2, Allocations: 3, Pods: 3, Leaked: 1, Missing: 1, OrphanBlocks: 1, Borrowed: 1, Problems: 3},
	}
	for _, format := range []string{"json", "yaml"} {
		out, errOut, code := runBin(t, bin, nil, "-o", format, "ipam", "check", "--kubeconfig", kc)
		if code != 1 {
			t.Errorf("ipam check -o %s: exit %d, want 1 (stderr %s)", format, code, errOut)
		}
		var got report
		var err error
		if format == "json" {
			t.Logf("ipam check -o json:\n%s", out)
			err = json.Unmarshal([]byte(out), &got)
		} else {
			err = yaml.Unmarshal([]byte(out), &got)
		}
		if err != nil {
			t.Fatalf("ipam check -o %s: %v\n%s", format, err, out)
		}
		if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", wantReport); g != w {
			t.Errorf("ipam check -o %s:\n got %s\nwant %s", format, g, w)
		}
	}

	// Release: refused for web-1's address, done for gone-1's.
	rv := func() string {
		var b v1alpha1.IPAMBlock
		if err := c.Get(ctx, crclient.ObjectKey{Name: "10-244-8-0-26"}, &b); err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, a := range b.Spec.Allocations {
			ips = append(ips, a.IP)
		}
		return b.ResourceVersion + " " + strings.Join(ips, ",")
	}
	before := rv()
	out, errOut, code = runBin(t, bin, nil, "ipam", "release", "--ip", "10.244.8.1", "--kubeconfig", kc)
	t.Logf("ipam release --ip 10.244.8.1: exit %d\n%s%s", code, out, errOut)
	if code != 1 || !strings.Contains(errOut, "10.244.8.1 is held by pod default/web-1") {
		t.Errorf("ipam release of web-1's address: exit %d, stderr %q; want 1 naming default/web-1", code, errOut)
	}
	if after := rv(); after != before {
		t.Errorf("refused release changed the block: %s -> %s", before, after)
	}
	out, errOut, code = runBin(t, bin, nil, "ipam", "release", "--ip", "10.244.8.2", "--kubeconfig", kc)
	t.Logf("ipam release --ip 10.244.8.2: exit %d\n%s%s", code, out, errOut)
	if code != 0 || out != "Released 10.244.8.2 from block 10.244.8.0/26 (node node-a): handle default/gone-1/c-gone-1, pod default/gone-1 does not exist.\n" {
		t.Errorf("ipam release of the leaked address: exit %d, stdout %q", code, out)
	}
	if got := rv(); !strings.HasSuffix(got, " 10.244.8.1,10.244.8.4") {
		t.Errorf("block after the release: %s, want allocations 10.244.8.1,10.244.8.4", got)
	}
	out, errOut, code = runBin(t, bin, nil, "ipam", "release", "--ip", "10.244.8.2", "--kubeconfig", kc)
	if code != 1 || !strings.Contains(errOut, "10.244.8.2 is free in block 10.244.8.0/26 (node node-a): address not allocated") {
		t.Errorf("second release: exit %d, stderr %q; want 1, not allocated", code, errOut)
	}
	t.Logf("second ipam release --ip 10.244.8.2: exit %d\n%s%s", code, out, errOut)
	if _, errOut, code := runBin(t, bin, nil, "ipam", "release", "--kubeconfig", kc); code != 2 {
		t.Errorf("ipam release without --ip: exit %d (stderr %q), want 2", code, errOut)
	}
	if _, errOut, code := runBin(t, bin, nil, "ipam", "check"); code != 1 || !strings.Contains(errOut, "no kubeconfig at") {
		t.Errorf("ipam check without any kubeconfig: exit %d, stderr %q; want 1 saying there is no kubeconfig", code, errOut)
	}
}
