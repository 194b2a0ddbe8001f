package main

// Test addresses: pods use 10.244.0.0/16. These tests are pure: no
// socket, no namespace.

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
)

func TestParseCNIArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    podArgs
		wantErr bool
	}{
		{in: "", want: podArgs{}},
		{
			in:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5678",
			want: podArgs{Namespace: "default", Name: "web-0", UID: "1234-5678"},
		},
		// Unknown keys are ignored even without IgnoreUnknown.
		{in: "FOO=bar;K8S_POD_NAME=web-0", want: podArgs{Name: "web-0"}},
		// A trailing separator is harmless.
		{in: "K8S_POD_NAMESPACE=kube-system;", want: podArgs{Namespace: "kube-system"}},
		{in: "K8S_POD_NAME", wantErr: true},
		{in: "=web", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseCNIArgs(tt.in)
		if tt.wantErr {
			if code := cniCode(err); code != types.ErrInvalidEnvironmentVariables {
				t.Errorf("parseCNIArgs(%q): error %v (code %d); want code 4", tt.in, err, code)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseCNIArgs(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(podArgs{})); diff != "" {
			t.Errorf("parseCNIArgs(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

// cniCode returns the CNI code of err, or 0 if err is not a *types.Error.
func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestLoadConf(t *testing.T) {
	c, err := loadConf([]byte(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"wren-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.socket != "/var/run/wren/wren.sock" || c.timeout != defaultTimeout || c.CNIVersion != "1.0.0" {
		t.Errorf("defaults: socket %q timeout %v version %q", c.socket, c.timeout, c.CNIVersion)
	}
	c, err = loadConf([]byte(`{"cniVersion":"0.4.0","name":"n","type":"wren-cni","agent_socket":"/run/x/a.sock","timeout":"2s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.socket != "/run/x/a.sock" || c.timeout != 2*time.Second {
		t.Errorf("overrides: socket %q timeout %v", c.socket, c.timeout)
	}

	for _, tt := range []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"name":`, types.ErrDecodingFailure, "decode network configuration"},
		{`{"cniVersion":"1.0.0","name":"n","agent_socket":"run/wren.sock"}`, types.ErrInvalidNetworkConfig, "must be an absolute path"},
		{`{"cniVersion":"1.0.0","name":"n","timeout":"soon"}`, types.ErrInvalidNetworkConfig, `timeout "soon"`},
		{`{"cniVersion":"1.0.0","name":"n","timeout":"-1s"}`, types.ErrInvalidNetworkConfig, `timeout "-1s"`},
	} {
		_, err := loadConf([]byte(tt.conf))
		if code := cniCode(err); code != tt.code || err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("loadConf(%s): %v (code %d); want code %d with %q", tt.conf, err, code, tt.code, tt.msg)
		}
	}
}

func TestRequests(t *testing.T) {
	args := &skel.CmdArgs{
		ContainerID: "0123456789abcdef0123", Netns: "/var/run/netns/cni-1", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
	}
	a, err := parseCNIArgs(args.Args)
	if err != nil {
		t.Fatal(err)
	}
	p := podOf(args, a, &conf{NetConf: NetConf{NetConf: types.NetConf{CNIVersion: "0.4.0"}}})
	if got, want := p.String(), "pod default/web-0 (container 0123456789ab)"; got != want {
		t.Errorf("pod name in messages %q, want %q", got, want)
	}

	wantAdd := &cniv1.AddRequest{
		ContainerId: "0123456789abcdef0123", Netns: "/var/run/netns/cni-1", Ifname: "eth0",
		PodNamespace: "default", PodName: "web-0", PodUid: "u-1", CniVersion: "0.4.0",
	}
	if diff := cmp.Diff(wantAdd, decodeAs(t, p.request(), &cniv1.AddRequest{}), protocmp.Transform()); diff != "" {
		t.Errorf("add request (-want +got):\n%s", diff)
	}
	wantDel := &cniv1.DelRequest{
		ContainerId: "0123456789abcdef0123", Netns: "/var/run/netns/cni-1", Ifname: "eth0",
		PodNamespace: "default", PodName: "web-0", PodUid: "u-1", CniVersion: "0.4.0",
	}
	if diff := cmp.Diff(wantDel, decodeAs(t, p.request(), &cniv1.DelRequest{}), protocmp.Transform()); diff != "" {
		t.Errorf("del request (-want +got):\n%s", diff)
	}
	wantCheck := &cniv1.CheckRequest{
		ContainerId: "0123456789abcdef0123", Netns: "/var/run/netns/cni-1", Ifname: "eth0",
		PodNamespace: "default", PodName: "web-0", PodUid: "u-1", CniVersion: "0.4.0", Ip: "10.244.1.5/32",
	}
	if diff := cmp.Diff(wantCheck, decodeAs(t, p.checkRequest(netip.MustParsePrefix("10.244.1.5/32")), &cniv1.CheckRequest{}), protocmp.Transform()); diff != "" {
		t.Errorf("check request (-want +got):\n%s", diff)
	}

	// ADD and CHECK need the pod; the error names what is missing.
	err = podArgs{Namespace: "default"}.requirePod("ADD", args)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_ARGS lacks K8S_POD_NAME") {
		t.Errorf("requirePod without a name: %v; want code 4 naming K8S_POD_NAME", err)
	}
	if err := a.requirePod("ADD", args); err != nil {
		t.Errorf("requirePod with both: %v", err)
	}
}

var testReply = &addReply{
	IP: "10.244.1.5/32", Gateway: "169.254.1.1", MTU: 1450, HostIface: "cali0123456789a",
	MAC: "0A:58:0A:F4:01:05", Pool: "10.244.0.0/16", Block: "10.244.1.0/26",
}

// TestResultPerVersion compares the printed result of each supported
// version with the JSON the spec of that version prescribes: 0.3.1 and
// 0.4.0 carry "version" per address and an empty "dns" object; 1.0.0
// drops both.
func TestResultPerVersion(t *testing.T) {
	want := map[string]string{
		"1.0.0": `{
			"cniVersion": "1.0.0",
			"interfaces": [{"name": "cali0123456789a"}, {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1"}],
			"ips": [{"interface": 1, "address": "10.244.1.5/32", "gateway": "169.254.1.1"}],
			"routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
		}`,
		"0.4.0": `{
			"cniVersion": "0.4.0",
			"interfaces": [{"name": "cali0123456789a"}, {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1"}],
			"ips": [{"version": "4", "interface": 1, "address": "10.244.1.5/32", "gateway": "169.254.1.1"}],
			"routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
			"dns": {}
		}`,
		"0.3.1": `{
			"cniVersion": "0.3.1",
			"interfaces": [{"name": "cali0123456789a"}, {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1"}],
			"ips": [{"version": "4", "interface": 1, "address": "10.244.1.5/32", "gateway": "169.254.1.1"}],
			"routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
			"dns": {}
		}`,
	}
	for _, v := range supportedVersions {
		t.Run(v, func(t *testing.T) {
			res, err := resultFor(testReply, "eth0", "/var/run/netns/cni-1", v)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version() != v {
				t.Errorf("result version %q, want %q", res.Version(), v)
			}
			got, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(jsonValue(t, want[v]), jsonValue(t, string(got))); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

// jsonValue decodes s into a generic value for comparison.
func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

// TestResultDefaults: without a MAC, host interface or gateway the pod
// interface is the only one, and the gateway is 169.254.1.1.
func TestResultDefaults(t *testing.T) {
	res, err := resultFor(&addReply{IP: "10.244.1.6/32", MTU: 1450}, "eth0", "/proc/42/ns/net", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(res)
	want := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],
		"ips":[{"interface":0,"address":"10.244.1.6/32","gateway":"169.254.1.1"}],
		"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]}`
	if diff := cmp.Diff(jsonValue(t, want), jsonValue(t, string(got))); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestResultRejectsBadReplies(t *testing.T) {
	for _, r := range []*addReply{
		{IP: "10.244.1.5"},
		{IP: "fd00::5/128"},
		{IP: "10.244.1.5/32", Gateway: "gw"},
		{IP: "10.244.1.5/32", Gateway: "fe80::1"},
		{IP: "10.244.1.5/32", MAC: "zz:zz"},
	} {
		if _, err := resultFor(r, "eth0", "/x", "1.0.0"); err == nil {
			t.Errorf("resultFor(%v) succeeded; want an error", r)
		}
	}
}

// decodeAs encodes r and decodes it into the generated message m, as the
// agent's gRPC server does.
func decodeAs[M proto.Message](t *testing.T, r *request, m M) M {
	t.Helper()
	b, err := r.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("proto.Unmarshal of the plugin's request: %v", err)
	}
	return m
}

// detailed builds the status the agent returns for reason, as the plugin
// decodes it.
func detailed(t *testing.T, code codes.Code, reason cniv1.ErrorReason, msg string) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(&cniv1.ErrorDetail{Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	return fromGRPC(t, st.Err())
}

// grpcError is status.Error as the plugin decodes it.
func grpcError(t *testing.T, code codes.Code, msg string) error {
	t.Helper()
	return fromGRPC(t, status.Error(code, msg))
}

// fromGRPC turns a grpc-go status error into the plugin's *rpcStatus the
// way it travels: the google.rpc.Status in grpc-status-details-bin.
func fromGRPC(t *testing.T, err error) error {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a status", err)
	}
	b, err := proto.Marshal(st.Proto())
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseStatus(b)
	if err != nil {
		t.Fatalf("parseStatus: %v", err)
	}
	return got
}

func TestRPCErrorMapping(t *testing.T) {
	c := &conf{socket: "/var/run/wren/wren.sock", timeout: 30 * time.Second}
	p := pod{containerID: "0123456789abcdef", namespace: "default", name: "web-0"}
	tests := []struct {
		name string
		err  error
		code uint
		msgs []string
	}{
		{"transport", grpcError(t, codes.Unavailable, "connection error: connect: connection refused"), types.ErrTryAgainLater,
			[]string{"pod default/web-0 (container 0123456789ab)", "wren agent socket /var/run/wren/wren.sock unreachable: is the wren-agent pod running on this node?"}},
		{"deadline", grpcError(t, codes.DeadlineExceeded, "context deadline exceeded"), types.ErrTryAgainLater,
			[]string{"did not answer within 30s"}},
		{"unimplemented", grpcError(t, codes.Unimplemented, "unknown service"), types.ErrInternal,
			[]string{"same release"}},
		{"other", grpcError(t, codes.PermissionDenied, "nope"), types.ErrInternal, []string{"nope"}},
		{"not a status", errors.New("weird"), types.ErrInternal, []string{"weird"}},
		{"invalid argument", detailed(t, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "bad ifname"), types.ErrInvalidEnvironmentVariables,
			[]string{"wren-cni ADD pod default/web-0", "bad ifname"}},
		{"invalid netns", detailed(t, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_NETNS, "netns gone"), types.ErrInvalidNetNS, []string{"netns gone"}},
		{"not found", detailed(t, codes.NotFound, cniv1.ErrorReason_ERROR_REASON_NOT_FOUND, "no such container"), types.ErrUnknownContainer, []string{"no such container"}},
		{"exhausted", detailed(t, codes.ResourceExhausted, cniv1.ErrorReason_ERROR_REASON_POOL_EXHAUSTED, "IP pools exhausted"), types.ErrInternal,
			[]string{"no free pod address: IP pools exhausted", "add an IPPool"}},
		// The agent's message says who is not ready (pkg/cniserver frames
		// it); the plugin adds only the command and the pod.
		{"not ready", detailed(t, codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY, "wren agent is not ready: waiting for the API"), types.ErrTryAgainLater,
			[]string{"wren-cni ADD pod default/web-0 (container 0123456789ab): wren agent is not ready: waiting for the API"}},
		{"API server unreachable", detailed(t, codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY, "the Kubernetes API server https://198.18.0.2:6443 is unreachable"), types.ErrTryAgainLater,
			[]string{"wren-cni ADD pod default/web-0 (container 0123456789ab): the Kubernetes API server https://198.18.0.2:6443 is unreachable"}},
		{"mismatch", detailed(t, codes.FailedPrecondition, cniv1.ErrorReason_ERROR_REASON_MISMATCH, "address differs"), types.ErrInternal,
			[]string{"differs from what ADD built: address differs"}},
		{"unspecified", detailed(t, codes.Internal, cniv1.ErrorReason_ERROR_REASON_UNSPECIFIED, "disk on fire"), types.ErrInternal, []string{"disk on fire"}},
	}
	for _, tt := range tests {
		got := rpcError("ADD", c, p, tt.err)
		if got.Code != tt.code {
			t.Errorf("%s: code %d, want %d (%s)", tt.name, got.Code, tt.code, got.Msg)
		}
		for _, m := range tt.msgs {
			if !strings.Contains(got.Msg, m) {
				t.Errorf("%s: message %q does not contain %q", tt.name, got.Msg, m)
			}
		}
	}

	if !isNotFound(detailed(t, codes.NotFound, cniv1.ErrorReason_ERROR_REASON_NOT_FOUND, "x")) || !isNotFound(grpcError(t, codes.NotFound, "x")) {
		t.Error("isNotFound misses a NotFound status")
	}
	if isNotFound(detailed(t, codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY, "x")) || isNotFound(errors.New("x")) || isNotFound(nil) {
		t.Error("isNotFound accepts a status that is not NotFound")
	}
}

func TestPrevAddress(t *testing.T) {
	tests := []struct {
		name string
		conf string
		want string // "" means an error
	}{
		{"1.0.0", `{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0",
			"interfaces":[{"name":"cali0123456789a"},{"name":"eth0","sandbox":"/x"}],
			"ips":[{"interface":1,"address":"10.244.1.5/32","gateway":"169.254.1.1"}]}}`, "10.244.1.5/32"},
		{"0.4.0", `{"cniVersion":"0.4.0","name":"n","prevResult":{
			"interfaces":[{"name":"eth0","sandbox":"/x"}],
			"ips":[{"version":"4","interface":0,"address":"10.244.1.7/32"}]}}`, "10.244.1.7/32"},
		{"no interface index", `{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0",
			"ips":[{"address":"10.244.1.8/32"}]}}`, "10.244.1.8/32"},
		{"other interface", `{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0",
			"interfaces":[{"name":"net1","sandbox":"/x"}],
			"ips":[{"interface":0,"address":"10.244.1.5/32"}]}}`, ""},
		{"two addresses", `{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0",
			"ips":[{"address":"10.244.1.5/32"},{"address":"10.244.1.6/32"}]}}`, ""},
		{"no prevResult", `{"cniVersion":"1.0.0","name":"n"}`, ""},
	}
	for _, tt := range tests {
		c, err := loadConf([]byte(tt.conf))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got, err := prevAddress(&c.NetConf.NetConf, "eth0")
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%s: got %s; want an error", tt.name, got)
		case tt.want != "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestShippedConflist: deploy/cni/10-wren.conflist loads with libcni (as
// the runtime reads it) and its plugin entry with loadConf.
func TestShippedConflist(t *testing.T) {
	list, err := libcni.ConfListFromFile("../../deploy/cni/10-wren.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "wren-cni" {
		t.Fatalf("conflist: version %q, %d plugins; want 1.0.0 with one wren-cni", list.CNIVersion, len(list.Plugins))
	}
	// The runtime injects name and cniVersion into each plugin's config.
	var m map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = list.Name, list.CNIVersion
	b, _ := json.Marshal(m)
	c, err := loadConf(b)
	if err != nil {
		t.Fatal(err)
	}
	if defaultSocket != cniv1.DefaultSocket {
		t.Errorf("the plugin's default socket %s is not the agent's %s", defaultSocket, cniv1.DefaultSocket)
	}
	if c.socket != cniv1.DefaultSocket || c.timeout != 30*time.Second {
		t.Errorf("shipped config: socket %q timeout %v; want %s and 30s", c.socket, c.timeout, cniv1.DefaultSocket)
	}
}

// TestDeadlinePassed: every shape in which gRPC reports our own deadline
// is a timeout; an error with time left is not.
func TestDeadlinePassed(t *testing.T) {
	live, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-expired.Done()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"our context expired", expired, grpcError(t, codes.Unavailable, "connection refused"), true},
		{"agent side gave up first", live, grpcError(t, codes.DeadlineExceeded, "deadline"), true},
		{"connection setup ran out", live, grpcError(t, codes.Unavailable, "context deadline exceeded"), true},
		{"refused with time left", live, grpcError(t, codes.Unavailable, "connection refused"), false},
		{"agent error with time left", live, grpcError(t, codes.Internal, "boom"), false},
	} {
		if got := deadlinePassed(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: deadlinePassed = %v, want %v", tc.name, got, tc.want)
		}
	}
}
