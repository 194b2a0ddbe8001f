package main

// These tests run the real wren-cni binary (built into a temporary
// directory) as the container runtime would, against a fake agent behind
// the real pkg/cniserver on a unix socket. No root, no namespace: the
// netns paths are only passed through to the agent.
// Test addresses: pods get 10.244.1.0/26.

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/proxyarp"
)

const podArgsEnv = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=uid-0"

// netConf is a network configuration for the plugin.
func netConf(version, socket string, extra ...string) string {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"k8s-pod-network","type":"wren-cni","agent_socket":%q`, version, socket)
	for _, e := range extra {
		s += "," + e
	}
	return s + "}"
}

// add runs an ADD for containerID and returns the decoded result.
func add(t *testing.T, version, socket, containerID string) map[string]any {
	t.Helper()
	r := run(t, invocation{
		command: "ADD", containerID: containerID, netns: "/var/run/netns/cni-" + containerID,
		ifname: "eth0", args: podArgsEnv, conf: netConf(version, socket),
	})
	if r.exit != 0 {
		code, msg := r.cniError(t)
		t.Fatalf("ADD %s exited %d: code %d: %s", containerID, r.exit, code, msg)
	}
	var res map[string]any
	if err := json.Unmarshal(r.stdout, &res); err != nil {
		t.Fatalf("ADD output is not JSON: %v: %s", err, r.stdout)
	}
	return res
}

// resultIP returns ips[0].address of a decoded result.
func resultIP(t *testing.T, res map[string]any) string {
	t.Helper()
	ips, _ := res["ips"].([]any)
	if len(ips) != 1 {
		t.Fatalf("result has %d ips, want 1: %v", len(ips), res)
	}
	a, _ := ips[0].(map[string]any)["address"].(string)
	return a
}

func TestBinaryAddPerVersion(t *testing.T) {
	f := &fakeAgent{}
	sock := serveAgent(t, f)
	veth := proxyarp.VethName("default", "web-0")
	for i, v := range supportedVersions {
		t.Run(v, func(t *testing.T) {
			id := fmt.Sprintf("ctr%d", i)
			res := add(t, v, sock, id)
			ip, ok := f.allocated(id)
			if !ok {
				t.Fatalf("the agent allocated nothing for %s", id)
			}
			mac := podMAC(ip).String()
			want := map[string]any{
				"cniVersion": v,
				"interfaces": []any{
					map[string]any{"name": veth},
					map[string]any{"name": "eth0", "mac": mac, "sandbox": "/var/run/netns/cni-" + id},
				},
				"ips":    []any{map[string]any{"interface": 1.0, "address": ip.String() + "/32", "gateway": "169.254.1.1"}},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}},
			}
			if v != "1.0.0" {
				want["ips"].([]any)[0].(map[string]any)["version"] = "4"
				want["dns"] = map[string]any{}
			}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("ADD result (-want +got):\n%s", diff)
			}
		})
	}
	// The agent was told who the pod is.
	wantReq := cniserver.Pod{
		ContainerID: "ctr0", NetNS: "/var/run/netns/cni-ctr0", IfName: "eth0",
		Namespace: "default", Name: "web-0", UID: "uid-0", CNIVersion: "0.3.1",
	}
	adds, _, _ := f.requests()
	if len(adds) == 0 {
		t.Fatal("the agent got no ADD")
	}
	if diff := cmp.Diff(wantReq, adds[0].Pod); diff != "" {
		t.Errorf("first ADD request (-want +got):\n%s", diff)
	}
}

func TestBinaryAddIdempotent(t *testing.T) {
	f := &fakeAgent{}
	sock := serveAgent(t, f)
	first := resultIP(t, add(t, "1.0.0", sock, "ctr-a"))
	again := resultIP(t, add(t, "1.0.0", sock, "ctr-a"))
	other := resultIP(t, add(t, "1.0.0", sock, "ctr-b"))
	if first != again {
		t.Errorf("second ADD of the same container got %s, first got %s", again, first)
	}
	if other == first {
		t.Errorf("another container got the same address %s", other)
	}
	if !strings.HasPrefix(first, "10.244.1.") || !strings.HasSuffix(first, "/32") {
		t.Errorf("address %s is not a /32 of 10.244.1.0/26", first)
	}
}

func TestBinaryDelIdempotent(t *testing.T) {
	f := &fakeAgent{}
	sock := serveAgent(t, f)
	add(t, "1.0.0", sock, "ctr-a")
	del := func(id, netns string) result {
		return run(t, invocation{command: "DEL", containerID: id, netns: netns, ifname: "eth0", args: podArgsEnv, conf: netConf("1.0.0", sock)})
	}
	for _, step := range []struct {
		what, id, netns string
	}{
		{"DEL", "ctr-a", "/var/run/netns/cni-ctr-a"},
		{"DEL again", "ctr-a", "/var/run/netns/cni-ctr-a"},
		{"DEL without netns", "ctr-a", ""},
		{"DEL of an unknown container", "ctr-never", "/var/run/netns/x"},
	} {
		r := del(step.id, step.netns)
		if r.exit != 0 || len(r.stdout) != 0 {
			t.Errorf("%s: exit %d, stdout %q; want exit 0 and no output", step.what, r.exit, r.stdout)
		}
	}
	if _, ok := f.allocated("ctr-a"); ok {
		t.Error("the address of ctr-a is still allocated after DEL")
	}
	if _, dels, _ := f.requests(); len(dels) != 4 {
		t.Errorf("the agent got %d DELs, want 4 (each one forwarded)", len(dels))
	}
	// The address is free again: the next container gets a fresh one and
	// a re-ADD of ctr-a a new allocation.
	add(t, "1.0.0", sock, "ctr-a")
	if _, ok := f.allocated("ctr-a"); !ok {
		t.Error("ADD after DEL allocated nothing")
	}
}

func TestBinaryCheck(t *testing.T) {
	f := &fakeAgent{}
	sock := serveAgent(t, f)
	for _, v := range []string{"0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			id := "ctr-check-" + v
			res := add(t, v, sock, id)
			prev, _ := json.Marshal(res)
			check := func(prev string) result {
				return run(t, invocation{command: "CHECK", containerID: id, netns: "/var/run/netns/cni-" + id, ifname: "eth0",
					args: podArgsEnv, conf: netConf(v, sock, `"prevResult":`+prev)})
			}
			if r := check(string(prev)); r.exit != 0 {
				code, msg := r.cniError(t)
				t.Fatalf("CHECK with the ADD result: code %d: %s", code, msg)
			}
			_, _, checks := f.requests()
			last := checks[len(checks)-1]
			if last.IP.String() != resultIP(t, res) {
				t.Errorf("the agent checked %s, want the ADD address %s", last.IP, resultIP(t, res))
			}

			// A prevResult with another address: the agent's mismatch.
			wrong := strings.Replace(string(prev), resultIP(t, res), "10.244.1.60/32", 1)
			r := check(wrong)
			code, msg := r.cniError(t)
			if r.exit == 0 || code != 999 || !strings.Contains(msg, "differs from what ADD built") || !strings.Contains(msg, "10.244.1.60/32") {
				t.Errorf("CHECK with a wrong address: exit %d code %d %q; want 999 naming the difference", r.exit, code, msg)
			}
		})
	}

	r := run(t, invocation{command: "CHECK", containerID: "c", netns: "/x", ifname: "eth0", args: podArgsEnv, conf: netConf("1.0.0", sock)})
	if code, msg := r.cniError(t); code != 7 || !strings.Contains(msg, "no prevResult") {
		t.Errorf("CHECK without prevResult: code %d %q; want 7", code, msg)
	}
	r = run(t, invocation{command: "CHECK", containerID: "c", netns: "/x", ifname: "eth0", args: podArgsEnv, conf: netConf("0.3.1", sock)})
	if code, _ := r.cniError(t); code != 1 {
		t.Errorf("CHECK with a 0.3.1 config: code %d; want 1 (CHECK needs 0.4.0)", code)
	}
}

// TestBinaryErrors: every bad input ends in a CNI error with the right
// code and a message that says what to do, and nothing on stdout but the
// error JSON.
func TestBinaryErrors(t *testing.T) {
	live := serveAgent(t, &fakeAgent{})
	full := serveAgent(t, &fakeAgent{limit: 1})
	add(t, "1.0.0", full, "ctr-first")
	notReady := serveAgent(t, &fakeAgent{failWith: cniserver.Errorf(cniserver.ReasonNotReady, "IPAM not synced with the Kubernetes API yet")})
	slow := serveAgent(t, &fakeAgent{block: true})
	// The agent is fine, the Kubernetes API server is not: the agent names
	// it (as pkg/agent does), or its IPAM store's error says so.
	const apiMsg = "the Kubernetes API server https://198.18.0.2:6443 is unreachable (since 12:01:02: dial tcp 198.18.0.2:6443: connect: connection refused); node-1 cannot record the pod's address until it returns; the runtime will retry"
	apiDown := serveAgent(t, &fakeAgent{failWith: cniserver.Errorf(cniserver.ReasonAPIUnavailable, "%s", apiMsg)})
	storeDown := serveAgent(t, &fakeAgent{failWith: fmt.Errorf("allocate for default/web-0: update ipamblock 10-244-1-0-26: %w: the server is currently unable to handle the request", ipam.ErrUnavailable)})
	missing := filepath.Join(shortTempDir(t), "wren.sock")
	// A stale socket file: bound, then nobody accepts (an agent that died).
	stale := filepath.Join(shortTempDir(t), "wren.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	ok := invocation{command: "ADD", containerID: "ctr-x", netns: "/var/run/netns/cni-x", ifname: "eth0", args: podArgsEnv}
	with := func(f func(*invocation)) invocation { inv := ok; f(&inv); return inv }
	tests := []struct {
		name string
		inv  invocation
		code uint
		msgs []string
	}{
		{"bad JSON", with(func(i *invocation) { i.conf = `{"cniVersion":"1.0.0","name":` }), 6, []string{"unmarshal"}},
		{"unknown version", with(func(i *invocation) { i.conf = netConf("9.9.9", live) }), 1, []string{"incompatible CNI versions"}},
		{"missing K8S_POD_NAME", with(func(i *invocation) { i.conf = netConf("1.0.0", live); i.args = "K8S_POD_NAMESPACE=default" }), 4,
			[]string{"container ctr-x", "CNI_ARGS lacks K8S_POD_NAME"}},
		{"no CNI_ARGS", with(func(i *invocation) { i.conf = netConf("1.0.0", live); i.args = "" }), 4,
			[]string{"K8S_POD_NAMESPACE and K8S_POD_NAME"}},
		{"missing CNI_CONTAINERID", with(func(i *invocation) { i.conf = netConf("1.0.0", live); i.noEnv = []string{"CNI_CONTAINERID"} }), 4,
			[]string{"CNI_CONTAINERID"}},
		{"bad timeout", with(func(i *invocation) { i.conf = netConf("1.0.0", live, `"timeout":"soon"`) }), 7, []string{`timeout "soon"`}},
		{"agent socket missing", with(func(i *invocation) { i.conf = netConf("1.0.0", missing) }), 11,
			[]string{"wren-cni ADD pod default/web-0 (container ctr-x)", "wren agent socket " + missing + " does not exist: is the wren-agent pod running on this node?"}},
		{"agent socket stale", with(func(i *invocation) { i.conf = netConf("1.0.0", stale) }), 11,
			[]string{"wren agent socket " + stale + " unreachable: is the wren-agent pod running on this node?"}},
		{"DEL with the agent down", with(func(i *invocation) { i.command = "DEL"; i.conf = netConf("1.0.0", missing) }), 11,
			[]string{"wren-cni DEL", "is the wren-agent pod running on this node?"}},
		{"pool exhausted", with(func(i *invocation) { i.conf = netConf("1.0.0", full) }), 999,
			[]string{"no free pod address", "IP pools exhausted", "add an IPPool"}},
		{"agent not ready", with(func(i *invocation) { i.conf = netConf("1.0.0", notReady) }), 11,
			[]string{"not ready: IPAM not synced"}},
		{"API server unreachable", with(func(i *invocation) { i.conf = netConf("1.0.0", apiDown) }), 11,
			[]string{"wren-cni ADD pod default/web-0 (container ctr-x): " + apiMsg}},
		{"DEL with the API server unreachable", with(func(i *invocation) { i.command = "DEL"; i.conf = netConf("1.0.0", apiDown) }), 11,
			[]string{"wren-cni DEL pod default/web-0 (container ctr-x): " + apiMsg}},
		{"CHECK with the API server unreachable", with(func(i *invocation) {
			i.command = "CHECK"
			i.conf = netConf("1.0.0", apiDown, `"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.1/32"}]}`)
		}), 11, []string{"wren-cni CHECK pod default/web-0 (container ctr-x): " + apiMsg}},
		{"IPAM store unavailable", with(func(i *invocation) { i.conf = netConf("1.0.0", storeDown) }), 11,
			[]string{"wren-cni ADD pod default/web-0 (container ctr-x): the Kubernetes API server is unavailable: ", "the server is currently unable to handle the request"}},
		{"agent too slow", with(func(i *invocation) { i.conf = netConf("1.0.0", slow, `"timeout":"300ms"`) }), 11,
			[]string{"did not answer within 300ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.inv)
			if r.exit == 0 {
				t.Fatalf("exit 0, stdout %s; want a CNI error", r.stdout)
			}
			code, msg := r.cniError(t)
			if code != tt.code {
				t.Errorf("code %d, want %d (%s)", code, tt.code, msg)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(msg, m) {
					t.Errorf("message %q does not contain %q", msg, m)
				}
			}
			if strings.Contains(tt.name, "API server") && strings.Contains(msg, "wren agent") {
				t.Errorf("message %q blames the agent for the API server", msg)
			}
		})
	}
}

func TestBinaryVersion(t *testing.T) {
	r := run(t, invocation{command: "VERSION", conf: ""})
	if r.exit != 0 {
		t.Fatalf("VERSION exited %d: %s %s", r.exit, r.stdout, r.stderr)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(r.stdout, &v); err != nil {
		t.Fatalf("VERSION output %s: %v", r.stdout, err)
	}
	if diff := cmp.Diff([]string{"0.3.1", "0.4.0", "1.0.0"}, v.SupportedVersions); diff != "" {
		t.Errorf("supportedVersions (-want +got):\n%s", diff)
	}

	// Without CNI_COMMAND the plugin says what it is, on stderr.
	r = run(t, invocation{})
	if r.exit != 0 || !strings.Contains(r.stderr, "CNI plugin wren-cni") || !strings.Contains(r.stderr, "0.3.1, 0.4.0, 1.0.0") {
		t.Errorf("no CNI_COMMAND: exit %d, stderr %q; want the about text and versions", r.exit, r.stderr)
	}
}
