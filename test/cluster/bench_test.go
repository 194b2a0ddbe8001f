//go:build linux

package cluster_test

// Benchmarks on the real cluster (docs/benchmarks.md):
//
//	go test ./test/cluster -run '^$' -bench . -benchtime 3x -timeout 30m
//
// Each brings up its own lab (BGP and VXLAN mode as sub-benchmarks) and
// reports milliseconds per stage as custom metrics.

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/internal/lab"
	nstest "github.com/wren-net/wren/test/netns"
)

// benchModes runs fn on a lab of each mode.
func benchModes(b *testing.B, fn func(b *testing.B, e *env)) {
	for _, m := range []struct{ mode, prefix string }{{lab.ModeBGP, "wrent-bb-"}, {lab.ModeVXLAN, "wrent-bv-"}} {
		b.Run(m.mode, func(b *testing.B) {
			e := upCluster(b, m.mode, m.prefix)
			fn(b, e)
		})
	}
}

// ms reports durations as milliseconds per operation under name.
func ms(b *testing.B, name string, ds []time.Duration) {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(len(ds)), name)
	if len(ds) > 1 {
		b.ReportMetric(float64(slices.Max(ds).Milliseconds()), "max-"+name)
	}
}

// BenchmarkAgentReady: an agent pod created (the DaemonSet replacing a
// deleted one) until Ready.
func BenchmarkAgentReady(b *testing.B) {
	benchModes(b, func(b *testing.B, e *env) {
		var ds []time.Duration
		for i := 0; i < b.N; i++ {
			old := e.agentPods()["node-1"]
			e.kubectl("-n", "wren-system", "delete", "pod", old.Name, "--wait=true")
			var created time.Time
			e.poll(2*time.Minute, "new agent pod on node-1", func() error {
				p, ok := e.agentPods()["node-1"]
				if !ok || p.UID == old.UID {
					return fmt.Errorf("not yet")
				}
				created = time.Now()
				return nil
			})
			ready := e.poll(2*time.Minute, "new agent Ready", func() error {
				if p := e.agentPods()["node-1"]; !podReady(p) {
					return fmt.Errorf("not Ready")
				}
				return nil
			})
			ds = append(ds, ready)
			b.Logf("agent pod seen %s, Ready %s later", created.Format("15:04:05.000"), ready.Round(time.Millisecond))
		}
		ms(b, "ms-created-to-ready", ds)
	})
}

// BenchmarkPodReachable: a workload pod created (the Deployment scaled
// by one) until Running, and until it answers pings from a pod on every
// other node.
func BenchmarkPodReachable(b *testing.B) {
	benchModes(b, func(b *testing.B, e *env) {
		var running, reachable []time.Duration
		for i := 0; i < b.N; i++ {
			before := map[string]bool{}
			for _, p := range e.workloads() {
				before[p.Name] = true
			}
			start := time.Now()
			e.kubectl("scale", "-n", "default", "deployment/web", fmt.Sprintf("--replicas=%d", len(before)+1))
			var pod corev1.Pod
			e.poll(time.Minute, "the new pod Running", func() error {
				for _, p := range e.workloads() {
					if !before[p.Name] {
						pod = p
						return nil
					}
				}
				return fmt.Errorf("not yet")
			})
			running = append(running, time.Since(start))
			e.reachableFromEveryNode(pod)
			reachable = append(reachable, time.Since(start))
		}
		ms(b, "ms-to-running", running)
		ms(b, "ms-to-reachable", reachable)
	})
}

// reachableFromEveryNode waits until pod answers a ping from a pod on
// each other node.
func (e *env) reachableFromEveryNode(pod corev1.Pod) {
	e.t.Helper()
	dst := netip.MustParseAddr(pod.Status.PodIP)
	seen := map[string]bool{pod.Spec.NodeName: true}
	for _, src := range e.workloads() {
		if seen[src.Spec.NodeName] {
			continue
		}
		seen[src.Spec.NodeName] = true
		pid, err := e.lab.PodPID(nodeNumber(src.Spec.NodeName), string(src.UID))
		if err != nil {
			e.t.Fatal(err)
		}
		h, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			e.t.Fatal(err)
		}
		p, err := nstest.StartPinger(h, dst, 5*time.Millisecond)
		h.Close()
		if err != nil {
			e.t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for p.Received() == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		p.Stop()
		if p.Received() == 0 {
			e.t.Fatalf("%s (%s) never reached %s (%s)", src.Name, src.Spec.NodeName, pod.Name, dst)
		}
	}
}

// BenchmarkNodeJoin: a new node joins (its kubelet registers); the
// stages until its first workload pod answers pings from every other
// node. The Wren part, agent Ready until a pod network on the node is
// reachable cluster-wide, is measured apart with a sandbox made the way
// containerd makes one (a network namespace and wren-cni ADD), since the
// kubelet only starts pods once its own 5 s runtime check has seen the
// CNI configuration.
func BenchmarkNodeJoin(b *testing.B) {
	benchModes(b, func(b *testing.B, e *env) {
		if b.N > 5 {
			b.Skip("at most 5 joins fit the lab's 9 nodes")
		}
		var agentReady, wrenReach, nodeReady, podReach []time.Duration
		for i := 0; i < b.N; i++ {
			n := 4 + i
			name := fmt.Sprintf("node-%d", n)
			t0 := time.Now()
			if err := e.lab.AddNode(e.ctx, n, nil); err != nil {
				b.Fatal(err)
			}
			registered := time.Now()
			e.poll(2*time.Minute, "agent Ready on "+name, func() error {
				if p, ok := e.agentPods()[name]; !ok || !podReady(p) {
					return fmt.Errorf("not yet")
				}
				return nil
			})
			ar := time.Now()
			agentReady = append(agentReady, ar.Sub(registered))
			// The Wren part: a sandbox on the new node, reachable from a
			// pod on every other node.
			nsName := fmt.Sprintf("bench-join-%d", i)
			e.nodeNetns(n, "add", nsName)
			r, _, err := e.cni(n, "ADD", "bench-join-"+fmt.Sprint(i), nsName, nsName)
			if err != nil || len(r.IPs) == 0 {
				b.Fatalf("CNI ADD on %s: %+v %v", name, r, err)
			}
			ip := r.IPs[0].Address[:len(r.IPs[0].Address)-3]
			e.reachableFromEveryNode(corev1.Pod{Spec: corev1.PodSpec{NodeName: name}, Status: corev1.PodStatus{PodIP: ip}})
			wrenReach = append(wrenReach, time.Since(ar))
			if _, _, err := e.cni(n, "DEL", "bench-join-"+fmt.Sprint(i), nsName, nsName); err != nil {
				b.Fatal(err)
			}
			e.nodeNetns(n, "delete", nsName)
			// End to end: the node Ready (kubelet), a pod scheduled there,
			// Running, reachable.
			e.poll(time.Minute, name+" Ready", func() error {
				var node corev1.Node
				if err := e.c.Get(e.ctx, client.ObjectKey{Name: name}, &node); err != nil {
					return err
				}
				for _, c := range node.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						return nil
					}
				}
				return fmt.Errorf("not Ready")
			})
			nodeReady = append(nodeReady, time.Since(ar))
			before := len(e.workloads())
			if err := e.lab.ScaleWorkloads(e.ctx, before+1); err != nil {
				b.Fatal(err)
			}
			var pod corev1.Pod
			for _, p := range e.workloads() {
				if p.Spec.NodeName == name {
					pod = p
				}
			}
			if pod.Name == "" {
				b.Fatalf("no workload pod scheduled on %s", name)
			}
			e.reachableFromEveryNode(pod)
			podReach = append(podReach, time.Since(ar))
			b.Logf("%s: registered %s after start; agent Ready +%s; a sandbox reachable everywhere +%s after that; node Ready +%s; first workload pod reachable everywhere +%s",
				name, registered.Sub(t0).Round(time.Millisecond), agentReady[i].Round(time.Millisecond), wrenReach[i].Round(time.Millisecond),
				nodeReady[i].Round(time.Millisecond), podReach[i].Round(time.Millisecond))
		}
		ms(b, "ms-registered-to-agent-ready", agentReady)
		ms(b, "ms-agent-ready-to-sandbox-reachable", wrenReach)
		ms(b, "ms-agent-ready-to-node-ready", nodeReady)
		ms(b, "ms-agent-ready-to-pod-reachable", podReach)
	})
}
