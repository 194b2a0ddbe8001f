package cluster_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/wren-net/wren/pkg/cluster"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	kubetest "github.com/wren-net/wren/test/kube"
)

// Test addresses: nodes and BGP peers 198.18.0.0/15, pods 10.244.0.0/16,
// services 10.96.0.0/12 (never routed: these are API objects only).

// admissionCases are objects as an operator writes them, each either
// accepted or rejected by the real API server's admission with errors
// naming the offending field.
var admissionCases = []struct {
	name string
	yaml string
	// want are substrings of the rejection; none means accepted.
	want []string
}{
	// IPPool
	{"pool/minimal", `
kind: IPPool
metadata: {name: minimal}
spec: {cidr: 10.244.0.0/16}`, nil},
	{"pool/vxlan", `
kind: IPPool
metadata: {name: vxlan}
spec: {cidr: 10.245.0.0/16, blockSize: 28, vxlanMode: Always, ipipMode: Never, natOutgoing: true, nodeSelector: all()}`, nil},
	{"pool/cidr-no-prefix", `
kind: IPPool
metadata: {name: no-prefix}
spec: {cidr: 10.244.0.0}`, []string{"spec.cidr", "must be an IPv4 CIDR"}},
	{"pool/cidr-garbage", `
kind: IPPool
metadata: {name: garbage}
spec: {cidr: ten-two-four-four}`, []string{"spec.cidr", "must be an IPv4 CIDR"}},
	{"pool/cidr-prefix-33", `
kind: IPPool
metadata: {name: prefix-33}
spec: {cidr: 10.244.0.0/33}`, []string{"spec.cidr", "must be an IPv4 CIDR"}},
	{"pool/cidr-ipv6", `
kind: IPPool
metadata: {name: ipv6}
spec: {cidr: "fd00:10:244::/64"}`, []string{"spec.cidr", "must be an IPv4 CIDR"}},
	{"pool/cidr-host-bits", `
kind: IPPool
metadata: {name: host-bits}
spec: {cidr: 10.244.0.1/16}`, []string{"spec.cidr", "host bits"}},
	{"pool/no-spec", `
kind: IPPool
metadata: {name: no-spec}`, []string{"spec: Required value"}},
	{"pool/no-cidr", `
kind: IPPool
metadata: {name: no-cidr}
spec: {blockSize: 26}`, []string{"spec.cidr: Required value"}},
	{"pool/blocksize-19", `
kind: IPPool
metadata: {name: bs19}
spec: {cidr: 10.244.0.0/16, blockSize: 19}`, []string{"spec.blockSize", "greater than or equal to 20"}},
	{"pool/blocksize-33", `
kind: IPPool
metadata: {name: bs33}
spec: {cidr: 10.244.0.0/16, blockSize: 33}`, []string{"spec.blockSize", "less than or equal to 32"}},
	{"pool/blocksize-larger-than-pool", `
kind: IPPool
metadata: {name: bs-large}
spec: {cidr: 10.244.0.0/27, blockSize: 26}`, []string{"spec.blockSize must be at least the prefix length of spec.cidr"}},
	{"pool/ipip-sometimes", `
kind: IPPool
metadata: {name: sometimes}
spec: {cidr: 10.244.0.0/16, ipipMode: Sometimes}`, []string{"spec.ipipMode", `Unsupported value: "Sometimes"`, `"Always", "CrossSubnet", "Never"`}},
	{"pool/vxlan-lowercase", `
kind: IPPool
metadata: {name: lowercase}
spec: {cidr: 10.244.0.0/16, vxlanMode: always}`, []string{"spec.vxlanMode", `Unsupported value: "always"`}},
	{"pool/both-always", `
kind: IPPool
metadata: {name: both}
spec: {cidr: 10.244.0.0/16, ipipMode: Always, vxlanMode: Always}`, []string{"spec.ipipMode and spec.vxlanMode cannot both be enabled"}},
	{"pool/both-crosssubnet-always", `
kind: IPPool
metadata: {name: both2}
spec: {cidr: 10.244.0.0/16, ipipMode: CrossSubnet, vxlanMode: Always}`, []string{"spec.ipipMode and spec.vxlanMode cannot both be enabled"}},
	// Schema errors (enum, required, ranges) stop the CEL rules: the
	// operator fixes ipipMode first and then learns about cidr.
	{"pool/cidr-and-mode-both-bad", `
kind: IPPool
metadata: {name: two-errors}
spec: {cidr: 10.244.0.0, ipipMode: Sometimes}`, []string{"spec.ipipMode", "some validation rules were not checked"}},

	// BGPConfiguration
	{"bgpconfig/defaults", `
kind: BGPConfiguration
metadata: {name: default}`, nil},
	{"bgpconfig/per-node-name", `
kind: BGPConfiguration
metadata: {name: node.node-a}
spec: {asNumber: 64512}`, []string{"metadata.name must be default"}},
	{"bgpconfig/as-0", `
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 0}`, []string{"spec.asNumber", "greater than or equal to 1"}},
	{"bgpconfig/as-too-big", `
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 4294967296}`, []string{"spec.asNumber", "less than or equal to 4294967295"}},
	{"bgpconfig/port-70000", `
kind: BGPConfiguration
metadata: {name: default}
spec: {listenPort: 70000}`, []string{"spec.listenPort", "less than or equal to 65535"}},
	{"bgpconfig/hold-time-words", `
kind: BGPConfiguration
metadata: {name: default}
spec: {holdTime: 90 seconds}`, []string{"spec.holdTime", "should match"}},
	{"bgpconfig/service-cidr-host-bits", `
kind: BGPConfiguration
metadata: {name: default}
spec: {serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: 10.96.0.1/12}]}`, []string{"spec.serviceClusterIPs[1].cidr", "host bits"}},
	{"bgpconfig/password-no-key", `
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeMeshPassword: {secretKeyRef: {name: bgp}}}`, []string{"spec.nodeMeshPassword.secretKeyRef.key: Required value"}},

	// BGPPeer
	{"peer/tor", `
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: "198.18.0.1:1179", asNumber: 65001, nodeSelector: "rack == 'r1'", keepaliveTime: 20s, maxRestartTime: 2m, ttlSecurity: 1, sourceAddress: UseNodeIP, maxPrefixes: 1000, password: {secretKeyRef: {name: bgp, key: tor}}}`, nil},
	{"peer/selector", `
kind: BGPPeer
metadata: {name: to-rrs}
spec: {peerSelector: has(wren.network/route-reflector)}`, nil},
	{"peer/ip-bad-octet", `
kind: BGPPeer
metadata: {name: bad-octet}
spec: {peerIP: 198.18.0.300, asNumber: 65001}`, []string{"spec.peerIP", "must be an IPv4 address"}},
	{"peer/ip-port-0", `
kind: BGPPeer
metadata: {name: port-0}
spec: {peerIP: "198.18.0.1:0", asNumber: 65001}`, []string{"spec.peerIP", "port 1-65535"}},
	{"peer/ip-ipv6", `
kind: BGPPeer
metadata: {name: v6}
spec: {peerIP: "fd00::1", asNumber: 65001}`, []string{"spec.peerIP", "must be an IPv4 address"}},
	{"peer/ip-without-as", `
kind: BGPPeer
metadata: {name: no-as}
spec: {peerIP: 198.18.0.1}`, []string{"spec.asNumber is required with spec.peerIP"}},
	{"peer/ip-and-selector", `
kind: BGPPeer
metadata: {name: both}
spec: {peerIP: 198.18.0.1, asNumber: 65001, peerSelector: all()}`, []string{"exactly one of spec.peerIP and spec.peerSelector"}},
	{"peer/neither-ip-nor-selector", `
kind: BGPPeer
metadata: {name: neither}
spec: {node: node-a}`, []string{"exactly one of spec.peerIP and spec.peerSelector"}},
	{"peer/node-and-selector", `
kind: BGPPeer
metadata: {name: node-and-selector}
spec: {node: node-a, nodeSelector: all(), peerIP: 198.18.0.1, asNumber: 65001}`, []string{"spec.node and spec.nodeSelector cannot both be set"}},
	{"peer/source-address", `
kind: BGPPeer
metadata: {name: source}
spec: {peerIP: 198.18.0.1, asNumber: 65001, sourceAddress: NodeIP}`, []string{"spec.sourceAddress", `Unsupported value: "NodeIP"`}},
	{"peer/ttl-256", `
kind: BGPPeer
metadata: {name: ttl}
spec: {peerIP: 198.18.0.1, asNumber: 65001, ttlSecurity: 256}`, []string{"spec.ttlSecurity", "less than or equal to 255"}},
	{"peer/max-prefixes-0", `
kind: BGPPeer
metadata: {name: max-0}
spec: {peerIP: 198.18.0.1, asNumber: 65001, maxPrefixes: 0}`, []string{"spec.maxPrefixes", "greater than or equal to 1"}},
	{"peer/max-prefixes-words", `
kind: BGPPeer
metadata: {name: max-words}
spec: {peerIP: 198.18.0.1, asNumber: 65001, maxPrefixes: "1k"}`, []string{"spec.maxPrefixes", "must be of type integer"}},

	// IPAMBlock
	{"block/valid", `
kind: IPAMBlock
metadata: {name: 10-244-3-64-26}
spec:
  cidr: 10.244.3.64/26
  affinity: node-a
  allocations:
  - {ip: 10.244.3.64, handle: node/node-a/vxlan, node: node-a}
  - {ip: 10.244.3.65, handle: default/web/c0ffee, namespace: default, pod: web, containerID: c0ffee, node: node-b}`, nil},
	{"block/bad-cidr", `
kind: IPAMBlock
metadata: {name: 10-244-3-64-33}
spec: {cidr: 10.244.3.64/33, affinity: node-a}`, []string{"spec.cidr", "must be an IPv4 CIDR"}},
	{"block/host-bits", `
kind: IPAMBlock
metadata: {name: 10-244-3-65-26}
spec: {cidr: 10.244.3.65/26, affinity: node-a}`, []string{"spec.cidr", "host bits"}},
	{"block/name-mismatch", `
kind: IPAMBlock
metadata: {name: 10-244-3-0-26}
spec: {cidr: 10.244.3.64/26, affinity: node-a}`, []string{"metadata.name must be 10-244-3-64-26", "spec.cidr 10.244.3.64/26"}},
	{"block/state", `
kind: IPAMBlock
metadata: {name: 10-244-4-0-26}
spec: {cidr: 10.244.4.0/26, affinity: node-a, state: claimed}`, []string{"spec.state", `Unsupported value: "claimed"`, `"pending", "confirmed"`}},
	{"block/ip-outside", `
kind: IPAMBlock
metadata: {name: 10-244-4-0-26}
spec: {cidr: 10.244.4.0/26, allocations: [{ip: 10.244.4.64, handle: a/b/c}]}`, []string{"every spec.allocations[].ip must be inside spec.cidr"}},
	{"block/ip-garbage", `
kind: IPAMBlock
metadata: {name: 10-244-4-0-26}
spec: {cidr: 10.244.4.0/26, allocations: [{ip: 10.244.4.x, handle: a/b/c}]}`, []string{"spec.allocations[0].ip", "must be an IPv4 address"}},
	{"block/duplicate-ip", `
kind: IPAMBlock
metadata: {name: 10-244-4-0-26}
spec: {cidr: 10.244.4.0/26, allocations: [{ip: 10.244.4.1, handle: a/b/c}, {ip: 10.244.4.1, handle: a/d/e}]}`, []string{"spec.allocations[1]", "Duplicate value"}},
	{"block/no-handle", `
kind: IPAMBlock
metadata: {name: 10-244-4-0-26}
spec: {cidr: 10.244.4.0/26, allocations: [{ip: 10.244.4.1}]}`, []string{"spec.allocations[0].handle: Required value"}},
}

// TestAdmission creates each case's object in a real kube-apiserver with
// deploy/crds installed and checks that it is accepted or rejected with an
// error that names the field and says what is wrong.
func TestAdmission(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range admissionCases {
		t.Run(tc.name, func(t *testing.T) {
			u := object(t, tc.yaml)
			err := c.Create(ctx, u)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("create rejected: %v", err)
				}
				if err := c.Delete(ctx, u); err != nil {
					t.Fatalf("delete: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("create accepted, want a rejection containing %q", tc.want)
			}
			t.Logf("rejected: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("rejection lacks %q", w)
				}
			}
		})
	}
}

// object parses a case's YAML into an unstructured wren.network/v1alpha1
// object, as kubectl would send it.
func object(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatalf("test case YAML: %v", err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	return u
}

// TestAdmissionDefaults checks the defaults the API server fills in and
// that the typed Go structs read them back.
func TestAdmissionDefaults(t *testing.T) {
	c, err := cluster.NewClient(kubetest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if err := c.Create(ctx, object(t, "{kind: IPPool, metadata: {name: p}, spec: {cidr: 10.244.0.0/16}}")); err != nil {
		t.Fatal(err)
	}
	var pool v1alpha1.IPPool
	if err := c.Get(ctx, client.ObjectKey{Name: "p"}, &pool); err != nil {
		t.Fatal(err)
	}
	want := v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 26, IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever}
	if pool.Spec != want {
		t.Errorf("IPPool spec = %+v, want %+v", pool.Spec, want)
	}

	// An update is validated like a create: an old manifest that turns
	// on IPIP over a VXLAN pool is refused.
	pool.Spec.VXLANMode = v1alpha1.EncapAlways
	if err := c.Update(ctx, &pool); err != nil {
		t.Fatalf("switch pool to VXLAN: %v", err)
	}
	pool.Spec.IPIPMode = v1alpha1.EncapAlways
	if err := c.Update(ctx, &pool); err == nil || !strings.Contains(err.Error(), "spec.ipipMode and spec.vxlanMode") {
		t.Errorf("update to both modes: %v, want a rejection naming spec.ipipMode and spec.vxlanMode", err)
	}

	// A BGPConfiguration without spec gets every default.
	if err := c.Create(ctx, object(t, "{kind: BGPConfiguration, metadata: {name: default}}")); err != nil {
		t.Fatal(err)
	}
	var bc v1alpha1.BGPConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.BGPConfigurationName}, &bc); err != nil {
		t.Fatal(err)
	}
	if s := bc.Spec; s.ASNumber == nil || *s.ASNumber != 64512 || s.NodeToNodeMeshEnabled == nil || !*s.NodeToNodeMeshEnabled ||
		s.ListenPort == nil || *s.ListenPort != 179 {
		t.Errorf("BGPConfiguration defaults: asNumber %v, nodeToNodeMeshEnabled %v, listenPort %v; want 64512, true, 179",
			deref(s.ASNumber), deref(s.NodeToNodeMeshEnabled), deref(s.ListenPort))
	}

	// An IPAMBlock is created pending unless it says otherwise.
	if err := c.Create(ctx, object(t, "{kind: IPAMBlock, metadata: {name: 10-244-1-0-26}, spec: {cidr: 10.244.1.0/26, affinity: node-a}}")); err != nil {
		t.Fatal(err)
	}
	var blk v1alpha1.IPAMBlock
	if err := c.Get(ctx, client.ObjectKey{Name: "10-244-1-0-26"}, &blk); err != nil {
		t.Fatal(err)
	}
	if blk.Spec.State != v1alpha1.BlockPending {
		t.Errorf("IPAMBlock state = %q, want %q", blk.Spec.State, v1alpha1.BlockPending)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}
