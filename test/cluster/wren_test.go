//go:build linux

package cluster_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/internal/image"
	"github.com/wren-net/wren/internal/lab"
	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// TestBGPCluster: the lab in BGP mode (one subnet, no encapsulation,
// full mesh), shared by the subtests in order.
func TestBGPCluster(t *testing.T) {
	e := upCluster(t, lab.ModeBGP, "wrent-kb-")
	t.Run("Rollout", e.testRollout)
	t.Run("RBAC", e.sub(t, (*env).testRBAC))
	t.Run("RouteReflectorGuide", e.sub(t, (*env).testRRGuide))
	t.Run("UpgradeWithoutLoss", e.sub(t, (*env).testUpgrade))
	t.Run("APIServerOutage", e.sub(t, (*env).testOutage))
	t.Run("DrainAndReturn", e.sub(t, (*env).testDrain))
	t.Run("NodeJoin", e.sub(t, (*env).testJoin))
	// Last: it leaves every node in AS 64700.
	t.Run("LiveASChange", e.sub(t, (*env).testLiveAS))
}

// TestVXLANCluster: the lab in VXLAN CrossSubnet mode (node-3 behind the
// router): both route shapes, the VTEPs, all pairs.
func TestVXLANCluster(t *testing.T) {
	e := upCluster(t, lab.ModeVXLAN, "wrent-kv-")
	t.Run("Rollout", e.testRollout)
}

// sub runs fn with the subtest's t.
func (e *env) sub(parent *testing.T, fn func(*env)) func(*testing.T) {
	return func(t *testing.T) {
		if parent.Failed() && !strings.HasSuffix(t.Name(), "Rollout") {
			// An earlier subtest left the cluster in an unknown state.
			t.Skip("skipped: an earlier subtest failed")
		}
		se := *e
		se.t = t
		fn(&se)
	}
}

// testRollout: every agent Ready, not privileged, with the deploy/
// ServiceAccount; every workload pod reaches every other; every node's
// kernel state matches SPEC.md.
func (e *env) testRollout(t *testing.T) {
	e = &env{t: t, ctx: e.ctx, lab: e.lab, c: e.c}
	var ds appsv1.DaemonSet
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: "wren-system", Name: "wren-agent"}, &ds); err != nil {
		t.Fatal(err)
	}
	nodes := len(e.lab.Nodes())
	if s := ds.Status; int(s.DesiredNumberScheduled) != nodes || int(s.NumberReady) != nodes || int(s.UpdatedNumberScheduled) != nodes {
		t.Errorf("DaemonSet status: desired %d ready %d updated %d; want %d each", s.DesiredNumberScheduled, s.NumberReady, s.UpdatedNumberScheduled, nodes)
	}
	for node, p := range e.agentPods() {
		c := p.Spec.Containers[0]
		if p.Spec.ServiceAccountName != "wren-agent" || !p.Spec.HostNetwork {
			t.Errorf("%s: agent pod %s: serviceAccount %q hostNetwork %v", node, p.Name, p.Spec.ServiceAccountName, p.Spec.HostNetwork)
		}
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
			t.Errorf("%s: agent runs privileged", node)
		}
	}
	pods := e.workloads()
	if len(pods) != nodes*2 {
		t.Fatalf("%d workload pods Running; want %d", len(pods), nodes*2)
	}
	e.poll(30*time.Second, "every workload pod reaching every other", func() error { return e.lab.AllReachable(e.ctx) })
	t.Logf("%d pods, %d pairs answered", len(pods), len(pods)*(len(pods)-1))
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says", e.checkAllNodes)
}

// testRBAC: the agent's ServiceAccount can do what the agent does and
// nothing it should not: writing Secrets, deleting Nodes, reading Secrets
// outside wren-system, touching Pods are denied; the agents' logs show no
// request they were refused.
func (e *env) testRBAC() {
	t := e.t
	token := e.kubectl("-n", "wren-system", "create", "token", "wren-agent", "--duration", "10m")
	rc, err := e.lab.TokenConfig(token)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := cluster.NewClient(rc)
	if err != nil {
		t.Fatal(err)
	}
	denied := []struct {
		what string
		do   func() error
	}{
		{"create a Secret in wren-system", func() error {
			return sa.Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "wren-system", Name: "stolen"}})
		}},
		{"read Secrets in kube-system", func() error { return sa.List(e.ctx, &corev1.SecretList{}, client.InNamespace("kube-system")) }},
		{"delete a Node", func() error {
			return sa.Delete(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
		}},
		{"delete a Pod", func() error {
			return sa.DeleteAllOf(e.ctx, &corev1.Pod{}, client.InNamespace("default"))
		}},
		{"delete an IPPool", func() error {
			return sa.Delete(e.ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: cluster.DefaultPoolName}})
		}},
		{"change a BGPPeer", func() error {
			return sa.Create(e.ctx, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "rogue"}, Spec: v1alpha1.BGPPeerSpec{PeerIP: "198.18.0.99"}})
		}},
	}
	for _, d := range denied {
		if err := d.do(); !apierrors.IsForbidden(err) {
			t.Errorf("the agent's ServiceAccount could %s: err = %v, want Forbidden", d.what, err)
		}
	}
	allowed := []struct {
		what string
		do   func() error
	}{
		{"list Nodes", func() error { return sa.List(e.ctx, &corev1.NodeList{}) }},
		{"list IPAMBlocks", func() error { return sa.List(e.ctx, &v1alpha1.IPAMBlockList{}) }},
		{"list Secrets in wren-system", func() error { return sa.List(e.ctx, &corev1.SecretList{}, client.InNamespace("wren-system")) }},
	}
	for _, a := range allowed {
		if err := a.do(); err != nil {
			t.Errorf("the agent's ServiceAccount cannot %s: %v", a.what, err)
		}
	}
	logs := e.kubectl("-n", "wren-system", "logs", "-l", "app.kubernetes.io/name=wren-agent", "--tail", "-1", "--prefix")
	if lines := grepLines(strings.ToLower(logs), "forbidden"); len(lines) > 0 {
		t.Errorf("agents were refused requests:\n%s", strings.Join(lines, "\n"))
	}
}

// testUpgrade: a rolling update of the DaemonSet to a new image while
// pods ping across nodes every 10 ms: every agent replaced, no ping
// lost, no Wren route deleted anywhere.
func (e *env) testUpgrade() {
	t := e.t
	imgs, err := image.Build(e.ctx, image.Options{Repo: e.lab.Config().Repo, OutDir: t.TempDir(), Version: "upgrade-test", Images: []string{image.NameWren}})
	if err != nil {
		t.Fatal(err)
	}
	next := imgs[0]
	if next.Ref == e.lab.Image("wren") {
		t.Fatalf("the upgrade image %s is the running one", next.Ref)
	}
	if err := e.lab.ImportImage(e.ctx, next.Path); err != nil {
		t.Fatal(err)
	}
	before := e.agentPods()
	pings := e.ringPingers()
	watches := e.watchAllRoutes()
	start := time.Now()
	if err := e.lab.ApplyWren(e.ctx, next.Ref); err != nil {
		t.Fatal(err)
	}
	e.poll(4*time.Minute, "every agent replaced by a Ready one on "+next.Ref, func() error {
		now := e.agentPods()
		for node, old := range before {
			p, ok := now[node]
			switch {
			case !ok:
				return fmt.Errorf("%s: no agent pod", node)
			case p.UID == old.UID:
				return fmt.Errorf("%s: agent %s not replaced yet", node, p.Name)
			case p.Spec.Containers[0].Image != next.Ref:
				return fmt.Errorf("%s: agent %s runs %s", node, p.Name, p.Spec.Containers[0].Image)
			case !podReady(p):
				return fmt.Errorf("%s: agent %s not Ready", node, p.Name)
			}
		}
		return nil
	})
	rolled := time.Since(start)
	// The new agents have re-established every session (graceful restart
	// both ways) before the ping stops.
	e.poll(time.Minute, "BGP sessions established on every node (wrenctl status)", func() error { _, err := e.sessions(e.status); return err })
	t.Logf("DaemonSet rolled to %s on %d nodes in %s", next.Ref, len(before), rolled.Round(100*time.Millisecond))
	e.stopPingers("upgrade", pings)
	e.noRouteDeleted("upgrade", watches)
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says", e.checkAllNodes)
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// outage is how long the API server stays down.
const outage = 60 * time.Second

// testOutage: kube-apiserver stopped for 60 s while pods ping across
// nodes: no ping lost, BGP sessions and routes stay, no agent restarted;
// a CNI ADD meanwhile fails fast with code 11 naming the API server;
// after it returns, new pods get addresses and reach everyone, and IPAM
// keeps every pod's address (no GC on a stale cache).
func (e *env) testOutage() {
	t := e.t
	agents := e.agentPods()
	pids := e.agentPIDs(agents)
	sessions, err := e.sessions(e.status)
	if err != nil {
		t.Fatal(err)
	}
	pings := e.ringPingers()
	watches := e.watchAllRoutes()
	e.nodeNetns(1, "add", "outage-probe")
	defer e.nodeNetns(1, "delete", "outage-probe")

	down := time.Now()
	if err := e.lab.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := e.lab.StartAPIServer(e.ctx); err != nil {
				t.Errorf("restart kube-apiserver: %v", err)
			}
		}
	}()
	t.Logf("kube-apiserver stopped; keeping it down for %s", outage)
	// A sandbox created during the outage: wren-cni as containerd runs it.
	r, took, err := e.cni(1, "ADD", "outage-probe-0001", "outage-probe", "outage-probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CNI ADD during the outage: code %d in %s: %s", r.Code, took.Round(time.Millisecond), r.Msg)
	if r.Code != 11 || !strings.Contains(r.Msg, "198.18.0.2:6443") {
		t.Errorf("CNI ADD during the outage: code %d %q; want 11 (try again later) naming the API server 198.18.0.2:6443", r.Code, r.Msg)
	}
	if took > 5*time.Second {
		t.Errorf("CNI ADD during the outage took %s; it should fail fast", took)
	}
	r, took, err = e.cni(1, "DEL", "outage-probe-0001", "outage-probe", "outage-probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CNI DEL during the outage: code %d in %s: %s", r.Code, took.Round(time.Millisecond), r.Msg)
	if r.Code != 11 || !strings.Contains(r.Msg, "198.18.0.2:6443") {
		t.Errorf("CNI DEL during the outage: code %d %q; want 11 naming the API server", r.Code, r.Msg)
	}
	// Watch the sessions through the outage (they do not need the API;
	// neither does the agent's socket, while kubectl exec does).
	for time.Since(down) < outage {
		now, err := e.sessions(e.statusNoAPI)
		if err != nil {
			t.Errorf("%s into the outage: %v", time.Since(down).Round(time.Second), err)
		} else if !maps.EqualFunc(now, sessions, slices.Equal) {
			t.Errorf("%s into the outage: BGP sessions changed:\nbefore %v\nnow    %v", time.Since(down).Round(time.Second), sessions, now)
		}
		time.Sleep(5 * time.Second) // the outage's own clock, not a wait for a condition
	}
	if err := e.lab.StartAPIServer(e.ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	t.Logf("kube-apiserver back after %s", time.Since(down).Round(time.Second))

	// Pods created right after recovery, while the agents' watches may
	// still be backing off.
	replicas := len(e.workloads())
	if err := e.lab.ScaleWorkloads(e.ctx, replicas+len(e.lab.Nodes())); err != nil {
		t.Fatal(err)
	}
	e.poll(time.Minute, "every workload pod reaching every other after the outage", func() error { return e.lab.AllReachable(e.ctx) })
	// Every agent's address GC runs at least once (housekeeping every
	// 10 s in the lab overlay): every Running pod keeps its address.
	until := time.Now().Add(25 * time.Second)
	for time.Now().Before(until) {
		if err := e.ipamConsistent(); err != nil {
			t.Fatalf("IPAM after the outage: %v", err)
		}
		time.Sleep(time.Second) // checking that a state holds for a period
	}
	e.stopPingers("API server outage", pings)
	e.noRouteDeleted("API server outage", watches)
	if now, err := e.sessions(e.status); err != nil || !maps.EqualFunc(now, sessions, slices.Equal) {
		t.Errorf("BGP sessions after the outage: %v (err %v); before %v", now, err, sessions)
	}
	after := e.agentPods()
	if pidsAfter := e.agentPIDs(after); !maps.Equal(pids, pidsAfter) {
		t.Errorf("agent processes changed across the outage: before %v after %v", pids, pidsAfter)
	}
	for node, p := range after {
		if p.UID != agents[node].UID || p.Status.ContainerStatuses[0].RestartCount != agents[node].Status.ContainerStatuses[0].RestartCount {
			t.Errorf("%s: agent restarted across the outage (restarts %d -> %d)", node,
				agents[node].Status.ContainerStatuses[0].RestartCount, p.Status.ContainerStatuses[0].RestartCount)
		}
	}
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says", e.checkAllNodes)
}

// ipamConsistent checks that every Running workload pod's address is
// allocated to that pod in an IPAMBlock and that no address is allocated
// twice.
func (e *env) ipamConsistent() error {
	var bl v1alpha1.IPAMBlockList
	if err := e.c.List(e.ctx, &bl); err != nil {
		return err
	}
	owner := map[string]string{}
	for _, b := range bl.Items {
		for _, a := range b.Spec.Allocations {
			if prev, ok := owner[a.IP]; ok {
				return fmt.Errorf("%s allocated twice: %s and %s/%s", a.IP, prev, a.Namespace, a.Pod)
			}
			owner[a.IP] = a.Namespace + "/" + a.Pod
		}
	}
	for _, p := range e.workloads() {
		if got := owner[p.Status.PodIP]; got != p.Namespace+"/"+p.Name {
			return fmt.Errorf("pod %s/%s has %s, which IPAM gives to %q", p.Namespace, p.Name, p.Status.PodIP, got)
		}
	}
	return nil
}

// testDrain: cordon and drain node-2: its workloads move, its agent
// stays; its now empty block stays its own (released only after the
// grace period, SPEC.md) and blackholed, every pod reaches every other;
// uncordoned, it takes new pods again.
func (e *env) testDrain() {
	t := e.t
	agent := e.agentPods()["node-2"]
	e.kubectl("cordon", "node-2")
	e.kubectl("drain", "node-2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "90s")
	if err := e.lab.WaitRollout(e.ctx, "default", "deployment/web", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, p := range e.workloads() {
		if p.Spec.NodeName == "node-2" {
			t.Errorf("workload %s still on drained node-2", p.Name)
		}
	}
	if now := e.agentPods()["node-2"]; now.UID != agent.UID {
		t.Errorf("the agent on node-2 was replaced by the drain")
	}
	f, err := e.facts()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.blocks["node-2"]) == 0 {
		t.Errorf("node-2 lost its block right away; SPEC.md keeps an empty block for the grace period")
	}
	e.poll(30*time.Second, "every workload pod reaching every other with node-2 drained", func() error { return e.lab.AllReachable(e.ctx) })
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says (node-2 drained)", e.checkAllNodes)

	e.kubectl("uncordon", "node-2")
	n := len(e.workloads())
	if err := e.lab.ScaleWorkloads(e.ctx, n+2); err != nil {
		t.Fatal(err)
	}
	on2 := 0
	for _, p := range e.workloads() {
		if p.Spec.NodeName == "node-2" {
			on2++
		}
	}
	if on2 == 0 {
		t.Errorf("no workload scheduled on node-2 after uncordon")
	}
	e.poll(30*time.Second, "every workload pod reaching every other after uncordon", func() error { return e.lab.AllReachable(e.ctx) })
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says (node-2 back)", e.checkAllNodes)
}

// testJoin: a fourth node joins. Its CNI directories hold no Wren file
// before the agent (only the runtime's loopback plugin); the init
// container installs wren-cni, the conflist and the rt_protos entry; a
// second start of the agent pod changes none of them; the node's first
// workload pods reach every other pod.
func (e *env) testJoin() {
	t := e.t
	const n = 4
	dir := e.lab.NodeDir(n)
	files := []string{filepath.Join(dir, "cni-bin", "wren-cni"), filepath.Join(dir, "cni-conf", "10-wren.conflist"), filepath.Join(dir, "rt_protos.d", "wren.conf")}
	hook := func() error {
		for _, f := range files {
			if _, err := os.Stat(f); !os.IsNotExist(err) {
				return fmt.Errorf("%s exists before Wren runs on the node (err %v)", f, err)
			}
		}
		return nil
	}
	start := time.Now()
	if err := e.lab.AddNode(e.ctx, n, hook); err != nil {
		t.Fatal(err)
	}
	registered := time.Since(start)
	var agent corev1.Pod
	e.poll(2*time.Minute, "agent Ready on node-4", func() error {
		p, ok := e.agentPods()["node-4"]
		if !ok || !podReady(p) {
			return fmt.Errorf("agent on node-4: %v %s", ok, p.Status.Phase)
		}
		agent = p
		return nil
	})
	t.Logf("node-4 registered %s after AddNode; agent Ready %s after that", registered.Round(time.Millisecond), (time.Since(start) - registered).Round(time.Millisecond))
	repo := e.lab.Config().Repo
	ref1, _ := statFile(filepath.Join(e.lab.NodeDir(1), "cni-bin", "wren-cni"))
	conflist, _ := os.ReadFile(filepath.Join(repo, "deploy", "cni", "10-wren.conflist"))
	rtproto, _ := os.ReadFile(filepath.Join(repo, "deploy", "iproute2", "wren.conf"))
	first := map[string]fileID{}
	for i, f := range files {
		id, err := statFile(f)
		if err != nil {
			t.Fatalf("not installed: %v", err)
		}
		want := []string{ref1.content, string(conflist), string(rtproto)}[i]
		if id.content != want || (i == 0 && id.mode.Perm() != 0o755) {
			t.Errorf("%s: content or mode %v differs from what the image carries", f, id.mode)
		}
		first[f] = id
	}
	// A second start of the agent pod: the init container runs again.
	e.kubectl("-n", "wren-system", "delete", "pod", agent.Name, "--wait=true")
	e.poll(2*time.Minute, "a new agent Ready on node-4", func() error {
		p, ok := e.agentPods()["node-4"]
		if !ok || p.UID == agent.UID || !podReady(p) {
			return fmt.Errorf("not yet")
		}
		agent = p
		return nil
	})
	for _, f := range files {
		if id, err := statFile(f); err != nil || id != first[f] {
			t.Errorf("%s changed on the second start: %+v -> %+v (%v)", f, first[f], id, err)
		}
	}
	initLog := e.kubectl("-n", "wren-system", "logs", agent.Name, "-c", "install-cni")
	if !strings.Contains(initLog, "0 files written, 3 unchanged") {
		t.Errorf("install-cni on the second start:\n%s", initLog)
	}
	n0 := len(e.workloads())
	if err := e.lab.ScaleWorkloads(e.ctx, n0+2); err != nil {
		t.Fatal(err)
	}
	e.poll(30*time.Second, "every workload pod (node-4's too) reaching every other", func() error { return e.lab.AllReachable(e.ctx) })
	e.poll(15*time.Second, "kernel state of every node as SPEC.md says (4 nodes)", e.checkAllNodes)
}
