//go:build linux

package nstest_test

// End to end: a real kube-apiserver + etcd (envtest, on loopback), node
// namespaces wired as in cluster_test.go, and one in-process wren agent
// per node bound to its namespace. Pods are added through the agent's
// CNI handler, exactly as wren-cni would.

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/agent"
	wcluster "github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/cniserver"
	kubetest "github.com/wren-net/wren/test/kube"
	nstest "github.com/wren-net/wren/test/netns"
)

type agentNode struct {
	name string
	ns   *nstest.NS
	ip   netip.Prefix
	a    *agent.Agent
	stop func() // ends the agent like kill -9 would: no cleanup at all
	pods []*agentPod
}

type agentPod struct {
	ns   *nstest.NS
	name string
	ip   netip.Addr
}

type agentCluster struct {
	t     *testing.T
	rc    *rest.Config
	c     client.Client
	sw1   *nstest.Switch
	sw2   *nstest.Switch
	nodes []*agentNode
	// started, if set, replaces agent.Ready as what startAgent waits for.
	started func(*agent.Agent) error
}

func newAgentCluster(t *testing.T) *agentCluster {
	t.Helper()
	nstest.RequireRoot(t)
	rc := kubetest.Start(t)
	c, err := wcluster.NewClient(rc)
	if err != nil {
		t.Fatal(err)
	}
	ac := &agentCluster{t: t, rc: rc, c: c, sw1: nstest.NewSwitch(t, "sw1"), sw2: nstest.NewSwitch(t, "sw2")}
	r := nstest.New(t, "router")
	ac.sw1.Attach(t, r, "eth0", "198.18.0.1/24", 0)
	ac.sw2.Attach(t, r, "eth1", "198.18.1.1/24", 0)
	r.Sysctl(t, "net.ipv4.ip_forward", "1")
	return ac
}

func (ac *agentCluster) pool(mode v1alpha1.EncapMode) { ac.poolCIDR(mode, "10.244.0.0/16") }

func (ac *agentCluster) poolCIDR(mode v1alpha1.EncapMode, cidr string) {
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(cidr), BlockSize: 26, VXLANMode: mode, IPIPMode: v1alpha1.EncapNever}}
	if err := ac.c.Create(context.Background(), p); err != nil {
		ac.t.Fatal(err)
	}
}

// addNode creates the Node object and namespace and starts its agent.
func (ac *agentCluster) addNode(name string, sw *nstest.Switch, addr string) *agentNode {
	an := ac.newNode(name, sw, addr)
	ac.startAgent(an)
	ac.nodes = append(ac.nodes, an)
	return an
}

// newNode creates the Node object (with its InternalIP) and the node's
// namespace on sw with a default route via the subnet's first address.
func (ac *agentCluster) newNode(name string, sw *nstest.Switch, addr string) *agentNode {
	t := ac.t
	t.Helper()
	ctx := context.Background()
	ip := netip.MustParsePrefix(addr)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := ac.c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.Addr().String()}}
	if err := ac.c.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	ns := nstest.New(t, name)
	sw.Attach(t, ns, "eth0", addr, 0)
	ns.AddRoute(t, "default", "via", ip.Masked().Addr().Next().String())
	return &agentNode{name: name, ns: ns, ip: ip}
}

// startAgent starts (or restarts) the node's agent and waits until ready.
func (ac *agentCluster) startAgent(an *agentNode) {
	ac.t.Helper()
	ac.startAgentVia(an, ac.rc, quiet)
}

// addPod creates the Pod object and its namespace and runs CNI ADD.
func (ac *agentCluster) addPod(n *agentNode, name string) *agentPod {
	t := ac.t
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause"}}}}
	if err := ac.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	ns := nstest.New(t, "pod")
	addCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := n.a.Add(addCtx, cniserver.AddRequest{Pod: cniserver.Pod{ContainerID: "ctr-" + name, NetNS: "/var/run/netns/" + ns.Name,
		IfName: "eth0", Namespace: "default", Name: name}})
	if err != nil {
		t.Fatalf("CNI ADD %s on %s: %v", name, n.name, err)
	}
	pod := &agentPod{ns: ns, name: name, ip: res.IP.Addr()}
	n.pods = append(n.pods, pod)
	return pod
}

// pingMatrix polls until every pod reaches every other pod.
func (ac *agentCluster) pingMatrix(deadline time.Duration) {
	t := ac.t
	t.Helper()
	var pods []*agentPod
	for _, n := range ac.nodes {
		pods = append(pods, n.pods...)
	}
	took := nstest.Poll(t, deadline, "all-pairs pod ping", func() error {
		for _, s := range pods {
			for _, d := range pods {
				if s != d {
					if err := s.ns.Ping(d.ip, 1); err != nil {
						return fmt.Errorf("%s -> %s (%s): %w", s.name, d.name, d.ip, err)
					}
				}
			}
		}
		return nil
	})
	t.Logf("all-pairs ping across %d pods on %d nodes ok after %s", len(pods), len(ac.nodes), took.Round(time.Millisecond))
}

func TestAgentVXLANCluster(t *testing.T) {
	for _, mode := range []v1alpha1.EncapMode{v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet} {
		t.Run(string(mode), func(t *testing.T) {
			ac := newAgentCluster(t)
			ac.pool(mode)
			ac.addNode("node-a", ac.sw1, "198.18.0.11/24")
			ac.addNode("node-b", ac.sw1, "198.18.0.12/24")
			ac.addNode("node-c", ac.sw2, "198.18.1.13/24")
			for _, n := range ac.nodes {
				ac.addPod(n, n.name+"-web-0")
				ac.addPod(n, n.name+"-web-1")
			}
			ac.pingMatrix(30 * time.Second)
		})
	}
}

func keyOf(name string) client.ObjectKey { return client.ObjectKey{Name: name} }
