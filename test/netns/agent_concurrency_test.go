//go:build linux

package nstest_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/proxyarp"
	nstest "github.com/wren-net/wren/test/netns"
)

// TestAgentConcurrentAdds runs CNI ADDs from four goroutines while every
// new veth pokes the agent's loop into syncs, then DELs half of the pods
// while ADDing new ones. No ADD may fail, no sync may sweep the veth of
// an ADD it had not seen yet (each veth keeps the ifindex it was created
// with), every pod answers the node, and deleted pods leave nothing.
func TestAgentConcurrentAdds(t *testing.T) {
	ac := newAgentCluster(t)
	ac.pool(v1alpha1.EncapAlways)
	n := ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
	ctx := context.Background()

	type cniPod struct {
		name  string
		ns    *nstest.NS
		ip    netip.Addr
		index int
	}
	newPods := func(prefix string, count int) []*cniPod {
		var ps []*cniPod
		for i := range count {
			name := fmt.Sprintf("%s-%d", prefix, i)
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
				Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
			if err := ac.c.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			ps = append(ps, &cniPod{name: name, ns: nstest.New(t, "pod")})
		}
		return ps
	}
	add := func(p *cniPod) error {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		res, err := n.a.Add(actx, cniserver.AddRequest{Pod: cniserver.Pod{ContainerID: "ctr-" + p.name,
			NetNS: "/var/run/netns/" + p.ns.Name, IfName: "eth0", Namespace: "default", Name: p.name}})
		if err != nil {
			return fmt.Errorf("ADD %s: %w", p.name, err)
		}
		p.ip = res.IP.Addr()
		return nil
	}
	del := func(p *cniPod) error {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := n.a.Del(dctx, cniserver.DelRequest{Pod: cniserver.Pod{ContainerID: "ctr-" + p.name,
			NetNS: "/var/run/netns/" + p.ns.Name, IfName: "eth0", Namespace: "default", Name: p.name}}); err != nil {
			return fmt.Errorf("DEL %s: %w", p.name, err)
		}
		return nil
	}
	// run calls fn for every pod from four goroutines and reports every
	// failure.
	run := func(ps []*cniPod, fn func(*cniPod) error) {
		t.Helper()
		work := make(chan *cniPod)
		errs := make(chan error, len(ps))
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range work {
					errs <- fn(p)
				}
			}()
		}
		for _, p := range ps {
			work <- p
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	// check: every pod has its first veth and answers the node.
	check := func(ps []*cniPod) {
		t.Helper()
		seen := map[netip.Addr]string{}
		for _, p := range ps {
			if prev, dup := seen[p.ip]; dup {
				t.Fatalf("%s and %s both got %s", prev, p.name, p.ip)
			}
			seen[p.ip] = p.name
			l, err := n.ns.NL.LinkByName(proxyarp.VethName("default", p.name))
			if err != nil {
				t.Fatalf("pod %s: host veth: %v", p.name, err)
			}
			if p.index == 0 {
				p.index = l.Attrs().Index
			} else if l.Attrs().Index != p.index {
				t.Fatalf("pod %s: veth re-created (ifindex %d -> %d): a sync swept it", p.name, p.index, l.Attrs().Index)
			}
		}
		nstest.Poll(t, 10*time.Second, "node reaches every pod", func() error {
			for _, p := range ps {
				if err := n.ns.Ping(p.ip, 1); err != nil {
					return fmt.Errorf("pod %s (%s): %w", p.name, p.ip, err)
				}
			}
			return nil
		})
	}

	first := newPods("first", 48)
	run(first, add)
	check(first)

	// Half go while as many new ones come.
	gone, kept := first[:24], first[24:]
	second := newPods("second", 24)
	var mixed []*cniPod
	isDel := map[*cniPod]bool{}
	for i := range 24 {
		mixed = append(mixed, gone[i], second[i])
		isDel[gone[i]] = true
	}
	run(mixed, func(p *cniPod) error {
		if isDel[p] {
			return del(p)
		}
		return add(p)
	})
	live := append(append([]*cniPod(nil), kept...), second...)
	check(live)
	nstest.Poll(t, 10*time.Second, "deleted pods' veths and routes gone", func() error {
		for _, p := range gone {
			if _, err := n.ns.NL.LinkByName(proxyarp.VethName("default", p.name)); err == nil {
				return fmt.Errorf("pod %s: veth still there", p.name)
			}
		}
		return nil
	})
	// A few more syncs later nothing has changed.
	if err := n.a.Ready(); err != nil {
		t.Fatal(err)
	}
	check(live)
	for _, p := range live {
		n.pods = append(n.pods, &agentPod{ns: p.ns, name: p.name, ip: p.ip})
	}
	ac.assertStates(false)
}
