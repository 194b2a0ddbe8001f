//go:build linux

// Package cluster_test runs Wren on a real Kubernetes cluster (internal/lab:
// kube-apiserver, kube-controller-manager, kube-scheduler, and per node a
// containerd and a kubelet in its own network and mount namespaces),
// installed with kubectl apply -k of deploy/, and checks what operators
// see: the DaemonSet rolling out, pods reaching each other, each node's
// kernel state against SPEC.md, an upgrade and an API server outage
// without a lost packet, a node drained and returned, RBAC, the CNI
// install step.
//
// Test addresses: nodes 198.18.0.0/15, pods 10.244.0.0/16, services
// 10.96.0.0/16 (never routed), all only inside the lab's namespaces
// (named wrent-k*-).
package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/internal/lab"
	"github.com/wren-net/wren/pkg/cluster"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

// env is one lab cluster brought up for a test and its subtests.
type env struct {
	t   testing.TB
	ctx context.Context
	lab *lab.Lab
	c   client.Client // admin, dialing inside the lab's API namespace
}

// lineWriter turns the lab's progress lines into test log lines.
type lineWriter struct{ t testing.TB }

func (w lineWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// upCluster brings up a lab cluster in mode with namespaces and cgroups
// named prefix*, and removes it when the test ends (after printing what
// helps to debug a failure). Without root, or without containerd, runc
// and the Kubernetes binaries, it skips with the reason, except under CI,
// where it fails.
func upCluster(t testing.TB, mode, prefix string) *env {
	t.Helper()
	nstest.RequireRoot(t)
	ctx := context.Background()
	repo := kubetest.RepoRoot(t)
	assets := kubetest.AssetsDir(t)
	cfg := lab.Config{Repo: repo, State: "/var/tmp/" + strings.TrimSuffix(prefix, "-"), Prefix: prefix,
		Mode: mode, Assets: assets, Out: lineWriter{t}}
	l, err := lab.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CheckTools(); err != nil {
		if ci := os.Getenv("CI"); ci != "" {
			t.Fatalf("%v (CI=%s: not skipping)", err, ci)
		}
		t.Skip(err)
	}
	// A lab left by an interrupted run goes first.
	if stale, err := lab.Open(repo, cfg.State, prefix, lineWriter{t}); err == nil {
		if err := stale.Down(ctx); err != nil {
			t.Fatalf("remove the lab of an earlier run: %v", err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpDiagnostics(t, l)
		}
		if err := l.Down(ctx); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.NewClient(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, lab: l, c: c}
}

// dumpDiagnostics logs the cluster's pods, the agents' logs and the tail
// of every kubelet log: what CI keeps of a failed run.
func dumpDiagnostics(t testing.TB, l *lab.Lab) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "nodes,pods", "-A", "-o", "wide"},
		{"get", "ippools,ipamblocks", "-o", "wide"},
		{"-n", "wren-system", "logs", "-l", "app.kubernetes.io/name=wren-agent", "--tail", "60", "--prefix"},
		{"get", "events", "-A", "--sort-by", ".lastTimestamp"},
	} {
		out, err := l.Kubectl(ctx, args...)
		t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
	}
	logs, _ := filepath.Glob(filepath.Join(l.Config().State, "logs", "kubelet-*.log"))
	for _, f := range logs {
		t.Logf("tail of %s:\n%s", f, tail(f, 30))
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kubectl runs kubectl on the lab or fails the test.
func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	out, err := e.lab.Kubectl(e.ctx, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// poll waits for cond with a deadline, every 200 ms (each try is an API
// request or a command).
func (e *env) poll(deadline time.Duration, what string, cond func() error) time.Duration {
	e.t.Helper()
	return nstest.PollEvery(e.t, 200*time.Millisecond, deadline, what, cond)
}

// agentPods returns the wren-agent pods by node.
func (e *env) agentPods() map[string]corev1.Pod {
	e.t.Helper()
	var l corev1.PodList
	if err := e.c.List(e.ctx, &l, client.InNamespace("wren-system"), client.MatchingLabels{"app.kubernetes.io/name": "wren-agent"}); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

// workloads returns the Running pods of the Deployment web.
func (e *env) workloads() []corev1.Pod {
	e.t.Helper()
	var l corev1.PodList
	if err := e.c.List(e.ctx, &l, client.InNamespace("default"), client.MatchingLabels{"app": "web"}); err != nil {
		e.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			out = append(out, p)
		}
	}
	return out
}

// nodeNumber maps "node-N" to N.
func nodeNumber(name string) int {
	var n int
	fmt.Sscanf(name, "node-%d", &n)
	return n
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewBufferString(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}
