package cniserver

// Test addresses: pods use 10.244.0.0/16; nothing leaves the process but
// unix sockets under t.TempDir().

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	"github.com/wren-net/wren/pkg/ipam"
)

// fakeHandler records the requests it gets and answers with its funcs.
type fakeHandler struct {
	mu     sync.Mutex
	adds   []AddRequest
	dels   []DelRequest
	checks []CheckRequest

	add   func(AddRequest) (Result, error)
	del   func(DelRequest) error
	check func(CheckRequest) error
}

func (f *fakeHandler) Add(_ context.Context, req AddRequest) (Result, error) {
	f.mu.Lock()
	f.adds = append(f.adds, req)
	f.mu.Unlock()
	if f.add == nil {
		return Result{}, errors.New("no add func")
	}
	return f.add(req)
}

func (f *fakeHandler) Del(_ context.Context, req DelRequest) error {
	f.mu.Lock()
	f.dels = append(f.dels, req)
	f.mu.Unlock()
	if f.del == nil {
		return nil
	}
	return f.del(req)
}

func (f *fakeHandler) Check(_ context.Context, req CheckRequest) error {
	f.mu.Lock()
	f.checks = append(f.checks, req)
	f.mu.Unlock()
	if f.check == nil {
		return nil
	}
	return f.check(req)
}

// requests returns copies of the requests so far, read under the lock.
func (f *fakeHandler) requests() (adds []AddRequest, dels []DelRequest, checks []CheckRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.adds), slices.Clone(f.dels), slices.Clone(f.checks)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// socketPath returns a path for a socket in a fresh directory that does
// not exist yet (Listen must create it). t.TempDir paths can be long, so
// fall back to a short directory under /tmp when they would not fit.
func socketPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 60 {
		var err error
		dir, err = os.MkdirTemp("", "wrent-cni")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return filepath.Join(dir, "run", "wren.sock")
}

// startServer serves h on a fresh socket through Listen and Register and
// returns a client connected to it.
func startServer(t *testing.T, h Handler) cniv1.CNIClient {
	t.Helper()
	path := socketPath(t)
	lis, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	Register(srv, h, discard())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return dialClient(t, path)
}

func dialClient(t *testing.T, path string) cniv1.CNIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cniv1.NewCNIClient(conn)
}

func TestListenSocketMode(t *testing.T) {
	path := socketPath(t)
	lis, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("%s is %v, want a socket", path, fi.Mode())
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode %#o, want 0600", got)
	}
	// The temporary name it was bound under must be gone.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"wren.sock"}, names); diff != "" {
		t.Errorf("socket directory (-want +got):\n%s", diff)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect to the new socket: %v", err)
	}
	c.Close()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, stat %s: %v; want it removed", path, err)
	}
}

func TestListenRemovesStaleSocket(t *testing.T) {
	path := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket left behind by an agent that died: bound, nobody accepting.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	// A mode the new socket must not inherit.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatalf("stale socket not in place: %v", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Fatal("the stale socket accepts connections; the test needs a dead one")
	}

	lis, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer lis.Close()
	after, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %#o, want 0600", after.Mode().Perm())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect to the new socket: %v", err)
	}
	c.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := socketPath(t)
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	before, _ := os.Lstat(path)

	if l, err := Listen(path); err == nil {
		l.Close()
		t.Fatal("second Listen on a live socket succeeded; want an error")
	} else if !strings.Contains(err.Error(), "another process is serving") {
		t.Errorf("error %q does not say another process serves the socket", err)
	}
	after, err := os.Lstat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("the live socket was replaced or removed (stat err %v)", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(path)
	if err == nil || !strings.Contains(err.Error(), "regular file, not a socket") {
		t.Fatalf("Listen over a regular file: error %v; want one naming the regular file", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "not a socket" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
}

func TestListenRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"relative/wren.sock", "/tmp/../tmp/wren.sock", "/tmp/" + strings.Repeat("x", 100) + "/wren.sock"} {
		if l, err := Listen(p); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded; want an error", p)
		}
	}
}

// TestCloseKeepsReplacedSocket: an old listener's Close must not remove
// the socket a newer agent put in its place.
func TestCloseKeepsReplacedSocket(t *testing.T) {
	path := socketPath(t)
	old, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	newer, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the newer socket is gone after the old listener closed: %v", err)
	}
}

func TestServeLifecycle(t *testing.T) {
	path := socketPath(t)
	h := &fakeHandler{add: func(AddRequest) (Result, error) {
		return Result{IP: netip.MustParsePrefix("10.244.1.5/32"), MTU: 1450, HostIface: "cali0123456789a"}, nil
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, h, discard()) }()

	// Serve makes the socket before serving; wait for it to appear.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("socket mode %#o, want 0600", fi.Mode().Perm())
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("socket did not appear within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	reply, err := dialClient(t, path).Add(t.Context(), &cniv1.AddRequest{
		ContainerId: "c1", Netns: "/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: "web",
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.GetIp() != "10.244.1.5/32" {
		t.Errorf("ip %q, want 10.244.1.5/32", reply.GetIp())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v; want nil", err)
		}
	case <-time.After(2 * shutdownGrace):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Serve returned (stat: %v)", err)
	}
}

func TestServeFailsOnNonSocket(t *testing.T) {
	path := socketPath(t)
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, nil, 0o644)
	if err := Serve(t.Context(), path, &fakeHandler{}, discard()); err == nil {
		t.Fatal("Serve over a regular file returned nil")
	}
}

var validAdd = &cniv1.AddRequest{
	ContainerId: "0123456789abcdef", Netns: "/run/netns/cni-1", Ifname: "eth0",
	PodNamespace: "default", PodName: "web", PodUid: "uid-1", CniVersion: "1.0.0",
}

func TestAddConversion(t *testing.T) {
	h := &fakeHandler{add: func(AddRequest) (Result, error) {
		return Result{
			IP:        netip.MustParsePrefix("10.244.1.5/32"),
			MTU:       1450,
			HostIface: "cali0123456789a",
			MAC:       net.HardwareAddr{0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05},
			Pool:      netip.MustParsePrefix("10.244.0.0/16"),
			Block:     netip.MustParsePrefix("10.244.1.0/26"),
		}, nil
	}}
	c := startServer(t, h)
	reply, err := c.Add(t.Context(), validAdd)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"ip": reply.GetIp(), "gateway": reply.GetGateway(), "mtu": reply.GetMtu(), "host_iface": reply.GetHostIface(),
		"mac": reply.GetMac(), "pool": reply.GetPool(), "block": reply.GetBlock(),
	}
	want := map[string]any{
		"ip": "10.244.1.5/32", "gateway": "169.254.1.1", "mtu": int32(1450), "host_iface": "cali0123456789a",
		"mac": "0a:58:0a:f4:01:05", "pool": "10.244.0.0/16", "block": "10.244.1.0/26",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	wantReq := []AddRequest{{Pod: Pod{
		ContainerID: "0123456789abcdef", NetNS: "/run/netns/cni-1", IfName: "eth0",
		Namespace: "default", Name: "web", UID: "uid-1", CNIVersion: "1.0.0",
	}}}
	adds, _, _ := h.requests()
	if diff := cmp.Diff(wantReq, adds); diff != "" {
		t.Errorf("handler request (-want +got):\n%s", diff)
	}
}

// TestAddRejectsBadResult: a handler result the plugin could not use is
// an internal error, not a reply with garbage in it.
func TestAddRejectsBadResult(t *testing.T) {
	for _, r := range []Result{
		{IP: netip.MustParsePrefix("10.244.1.0/26"), MTU: 1450},
		{IP: netip.MustParsePrefix("fd00::5/128"), MTU: 1450},
		{MTU: 1450},
		{IP: netip.MustParsePrefix("10.244.1.5/32"), MTU: 0},
	} {
		c := startServer(t, &fakeHandler{add: func(AddRequest) (Result, error) { return r, nil }})
		_, err := c.Add(t.Context(), validAdd)
		if got := status.Code(err); got != codes.Internal {
			t.Errorf("result %+v: code %v, want Internal (err %v)", r, got, err)
		}
	}
}

func TestValidation(t *testing.T) {
	h := &fakeHandler{}
	c := startServer(t, h)
	ctx := t.Context()

	_, err := c.Add(ctx, &cniv1.AddRequest{ContainerId: "c1", Netns: "/run/netns/x", Ifname: "eth0", PodNamespace: "default"})
	wantStatus(t, "add without pod name", err, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "K8S_POD_NAME")
	_, err = c.Add(ctx, &cniv1.AddRequest{ContainerId: "c1", Ifname: "eth0", PodNamespace: "default", PodName: "web"})
	wantStatus(t, "add without netns", err, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_NETNS, "CNI_NETNS")
	_, err = c.Add(ctx, &cniv1.AddRequest{Netns: "/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: "web"})
	wantStatus(t, "add without container", err, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "CNI_CONTAINERID")
	_, err = c.Check(ctx, &cniv1.CheckRequest{ContainerId: "c1", Netns: "/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: "web", Ip: "10.244.1.300/32"})
	wantStatus(t, "check with a bad address", err, codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "10.244.1.300/32")
	if adds, _, checks := h.requests(); len(adds)+len(checks) != 0 {
		t.Errorf("handler called for invalid requests: %d adds, %d checks", len(adds), len(checks))
	}

	// DEL needs only the container: the sandbox and the pod may be gone.
	if _, err := c.Del(ctx, &cniv1.DelRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil {
		t.Errorf("del with container ID only: %v", err)
	}
	_, dels, _ := h.requests()
	if diff := cmp.Diff([]DelRequest{{Pod: Pod{ContainerID: "c1", IfName: "eth0"}}}, dels); diff != "" {
		t.Errorf("del requests (-want +got):\n%s", diff)
	}

	if _, err := c.Check(ctx, &cniv1.CheckRequest{ContainerId: "c1", Netns: "/run/netns/x", Ifname: "eth0", PodNamespace: "default", PodName: "web", Ip: "10.244.1.5/32"}); err != nil {
		t.Errorf("check: %v", err)
	}
	if _, _, checks := h.requests(); len(checks) != 1 || checks[0].IP != netip.MustParsePrefix("10.244.1.5/32") {
		t.Errorf("check requests %+v; want one with IP 10.244.1.5/32", checks)
	}
}

func TestErrorMapping(t *testing.T) {
	const apiMsg = "the Kubernetes API server https://198.18.0.2:6443 is unreachable (since 12:01:02: boom); node-1 cannot record the pod's address until it returns; the runtime will retry"
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason cniv1.ErrorReason
		msg    string // the exact message; "" checks only that it holds "boom"
	}{
		{"plain", errors.New("boom"), codes.Internal, cniv1.ErrorReason_ERROR_REASON_UNSPECIFIED, "boom"},
		{"invalid argument", Errorf(ReasonInvalidArgument, "boom"), codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "boom"},
		{"invalid netns", Errorf(ReasonInvalidNetNS, "boom"), codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_NETNS, "boom"},
		{"not found", Errorf(ReasonNotFound, "boom"), codes.NotFound, cniv1.ErrorReason_ERROR_REASON_NOT_FOUND, ""},
		{"exhausted", Errorf(ReasonPoolExhausted, "boom"), codes.ResourceExhausted, cniv1.ErrorReason_ERROR_REASON_POOL_EXHAUSTED, "boom"},
		{"ipam exhausted", fmt.Errorf("allocate for default/web: boom: %w", ipam.ErrExhausted), codes.ResourceExhausted, cniv1.ErrorReason_ERROR_REASON_POOL_EXHAUSTED, ""},
		{"not ready", NewError(ReasonNotReady, errors.New("boom")), codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY,
			"wren agent is not ready: boom (the runtime retries; the agent's log says what it waits for)"},
		{"deadline", fmt.Errorf("boom: %w", context.DeadlineExceeded), codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY,
			"wren agent is not ready: boom: context deadline exceeded (the runtime retries; the agent's log says what it waits for)"},
		// The handler names the API server: its words go as they are, and
		// nothing blames the agent.
		{"api unavailable", Errorf(ReasonAPIUnavailable, "%s", apiMsg), codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY, apiMsg},
		{"ipam unavailable", fmt.Errorf("allocate: %w: dial tcp 127.0.0.1:6443: connect: boom", ipam.ErrUnavailable), codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY,
			"the Kubernetes API server is unavailable: allocate: IPAM store unavailable: dial tcp 127.0.0.1:6443: connect: boom (the runtime retries)"},
		{"mismatch", Errorf(ReasonMismatch, "boom"), codes.FailedPrecondition, cniv1.ErrorReason_ERROR_REASON_MISMATCH, "boom"},
		// A pod's own choice that IPAM cannot meet: the message as it is
		// (it names the address, the annotation and who holds it).
		{"refused", fmt.Errorf("%w: 10.244.0.9 (annotation wren.network/ipAddrs of pod default/web) is held by pod default/db-0 boom", ipam.ErrAddressTaken),
			codes.FailedPrecondition, cniv1.ErrorReason_ERROR_REASON_UNSPECIFIED,
			"requested address is taken: 10.244.0.9 (annotation wren.network/ipAddrs of pod default/web) is held by pod default/db-0 boom"},
		{"wrapped", fmt.Errorf("outer: %w", Errorf(ReasonNotFound, "boom")), codes.NotFound, cniv1.ErrorReason_ERROR_REASON_NOT_FOUND, ""},
		{"wrapped unavailable", fmt.Errorf("pod default/web: %w", Errorf(ReasonAPIUnavailable, "%s", apiMsg)), codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY,
			"pod default/web: " + apiMsg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHandler{
				add:   func(AddRequest) (Result, error) { return Result{}, tt.err },
				del:   func(DelRequest) error { return tt.err },
				check: func(CheckRequest) error { return tt.err },
			}
			c := startServer(t, h)
			check := func(what string, err error) {
				t.Helper()
				wantStatus(t, what, err, tt.code, tt.reason, "boom")
				if st, _ := status.FromError(err); tt.msg != "" && st.Message() != tt.msg {
					t.Errorf("%s: message\n%q\nwant\n%q", what, st.Message(), tt.msg)
				}
			}
			_, err := c.Add(t.Context(), validAdd)
			check("add", err)
			_, err = c.Del(t.Context(), &cniv1.DelRequest{ContainerId: "c1", Ifname: "eth0"})
			check("del", err)
			_, err = c.Check(t.Context(), &cniv1.CheckRequest{ContainerId: "c1", Netns: "/x", Ifname: "eth0", PodNamespace: "default", PodName: "web"})
			check("check", err)
		})
	}
}

// TestReasonOf: errors from the API store while the API server is
// unreachable are "try again later" without the handler wrapping them;
// an explicit reason wins over a sentinel further down the chain.
func TestReasonOf(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want Reason
	}{
		{fmt.Errorf("update ipamblock x: %w: connection refused", ipam.ErrUnavailable), ReasonAPIUnavailable},
		{fmt.Errorf("pod a/b: %w", fmt.Errorf("list: %w", ipam.ErrUnavailable)), ReasonAPIUnavailable},
		{Errorf(ReasonInvalidNetNS, "x: %w", ipam.ErrUnavailable), ReasonInvalidNetNS},
		{fmt.Errorf("x: %w", ipam.ErrExhausted), ReasonPoolExhausted},
		{fmt.Errorf("x: %w", ipam.ErrAddressReserved), ReasonRefused},
		{fmt.Errorf("x: %w", ipam.ErrPoolChoice), ReasonRefused},
		{fmt.Errorf("annotation x: %w", ipam.ErrRefused), ReasonRefused},
		{fmt.Errorf("x: %w", ipam.ErrConflict), ReasonInternal},
		{context.DeadlineExceeded, ReasonNotReady},
		{errors.New("x"), ReasonInternal},
	} {
		if got := ReasonOf(tt.err); got != tt.want {
			t.Errorf("ReasonOf(%q) = %s; want %s", tt.err, got, tt.want)
		}
	}
}

// wantStatus asserts the gRPC code, the ErrorDetail reason and a part of
// the message of err.
func wantStatus(t *testing.T, what string, err error, code codes.Code, reason cniv1.ErrorReason, msgPart string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok {
		t.Errorf("%s: error %v; want status %v", what, err, code)
		return
	}
	if st.Code() != code {
		t.Errorf("%s: code %v, want %v (%s)", what, st.Code(), code, st.Message())
	}
	var got []cniv1.ErrorReason
	for _, d := range st.Details() {
		if ed, ok := d.(*cniv1.ErrorDetail); ok {
			got = append(got, ed.GetReason())
		}
	}
	if diff := cmp.Diff([]cniv1.ErrorReason{reason}, got); diff != "" {
		t.Errorf("%s: ErrorDetail reasons (-want +got):\n%s", what, diff)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Errorf("%s: message %q does not contain %q", what, st.Message(), msgPart)
	}
}
