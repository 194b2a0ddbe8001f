package main

// The plugin's one-call gRPC client (unary.go) against grpc-go's server
// on unix sockets in temporary directories: the real pkg/cniserver, and a
// raw server that records what arrives and answers with chosen bytes,
// statuses and failures. No root, no network namespace.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
)

// rawCodec passes messages through as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = bytes.Clone(data)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// seen is what the raw server received for one call.
type seen struct {
	method   string
	req      []byte
	md       metadata.MD
	deadline time.Time
}

// rawServer serves every method with handle on a new socket and returns
// the socket's path and the server.
func rawServer(t *testing.T, handle func(s seen, ss grpc.ServerStream) error) (string, *grpc.Server, <-chan seen) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "raw.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	calls := make(chan seen, 10)
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		var s seen
		s.method, _ = grpc.MethodFromServerStream(ss)
		s.md, _ = metadata.FromIncomingContext(ss.Context())
		s.deadline, _ = ss.Context().Deadline()
		if err := ss.RecvMsg(&s.req); err != nil {
			return err
		}
		calls <- s
		return handle(s, ss)
	}))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return path, srv, calls
}

// reply sends b as the call's reply.
func reply(b []byte) func(seen, grpc.ServerStream) error {
	return func(_ seen, ss grpc.ServerStream) error { return ss.SendMsg(&b) }
}

// TestUnaryWire: what the agent's gRPC server receives (method, request
// bytes, deadline, metadata) and replies of every size up to the limit,
// including ones far larger than the initial flow-control window.
func TestUnaryWire(t *testing.T) {
	for _, size := range []int{0, 1, 16384, 100 << 10, 1 << 20, maxReply} {
		want := bytes.Repeat([]byte{0x5a}, size)
		path, _, calls := rawServer(t, reply(want))
		req, _ := (&request{ContainerID: "ctr", PodName: "web-0", PodNamespace: "default"}).marshal()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		got, err := unary(ctx, path, methodAdd, req)
		cancel()
		if err != nil {
			t.Fatalf("%d-byte reply: %v", size, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d-byte reply: got %d bytes back", size, len(got))
		}
		s := <-calls
		if s.method != cniv1.CNI_Add_FullMethodName || !bytes.Equal(s.req, req) {
			t.Errorf("server got %s %x, want %s %x", s.method, s.req, cniv1.CNI_Add_FullMethodName, req)
		}
		if d := s.deadline.Sub(start); d < 19*time.Second || d > 21*time.Second {
			t.Errorf("the server's deadline is %s after the call started, want ≈20s (grpc-timeout)", d)
		}
		if ua := s.md.Get("user-agent"); len(ua) == 0 || !strings.HasPrefix(ua[0], "wren-cni/") {
			t.Errorf("user-agent %q", ua)
		}
		if a := s.md.Get(":authority"); len(a) != 1 || a[0] != "localhost" {
			t.Errorf(":authority %q, want localhost as grpc-go sends for unix targets", a)
		}
	}

	// Beyond grpc-go's default receive limit: ResourceExhausted.
	path, _, _ := rawServer(t, reply(make([]byte, maxReply+1)))
	_, err := unary(context.Background(), path, methodAdd, nil)
	if st, ok := statusOf(err); !ok || st.code != codeResourceExhausted {
		t.Errorf("a reply over %d bytes: %v; want ResourceExhausted", maxReply, err)
	}
}

// TestUnaryAgent: the three calls against the real pkg/cniserver and the
// fake agent, decoded as cmdAdd/cmdDel/cmdCheck do.
func TestUnaryAgent(t *testing.T) {
	f := &fakeAgent{}
	sock := serveAgent(t, f)
	c := &conf{socket: sock, timeout: 10 * time.Second}
	p := pod{containerID: "ctr-u", netns: "/var/run/netns/u", ifname: "eth0", namespace: "default", name: "web-0", uid: "u", cniVersion: "1.0.0"}

	b, err := call("ADD", c, p, methodAdd, p.request(), false)
	if err != nil {
		t.Fatal(err)
	}
	var r addReply
	if err := r.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	ip, _ := f.allocated("ctr-u")
	want := addReply{IP: ip.String() + "/32", Gateway: "169.254.1.1", MTU: 1450, HostIface: r.HostIface,
		MAC: podMAC(ip).String(), Pool: testPool.String(), Block: testBlock.String()}
	if r != want || !strings.HasPrefix(r.HostIface, "cali") {
		t.Errorf("ADD reply %+v, want %+v", r, want)
	}
	adds, _, _ := f.requests()
	if len(adds) != 1 || adds[0].ContainerID != "ctr-u" || adds[0].Name != "web-0" || adds[0].UID != "u" || adds[0].NetNS != "/var/run/netns/u" {
		t.Errorf("the agent got %+v", adds)
	}

	if _, err := call("CHECK", c, p, methodCheck, p.checkRequest(netip.MustParsePrefix(want.IP)), false); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	_, err = call("CHECK", c, p, methodCheck, p.checkRequest(netip.MustParsePrefix("10.244.1.60/32")), false)
	if code := cniCode(err); code != 999 || !strings.Contains(err.Error(), "differs from what ADD built") {
		t.Errorf("CHECK of another address: %v (code %d); want 999, mismatch", err, code)
	}
	if _, err := call("DEL", c, p, methodDel, p.request(), true); err != nil {
		t.Errorf("DEL: %v", err)
	}
	// Unknown now: NOT_FOUND, which DEL takes as success and CHECK not.
	if _, err := call("DEL", c, p, methodDel, p.request(), true); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	_, err = call("CHECK", c, p, methodCheck, p.checkRequest(netip.MustParsePrefix(want.IP)), false)
	if code := cniCode(err); code != 3 {
		t.Errorf("CHECK after DEL: %v (code %d); want 3", err, code)
	}
}

// TestUnaryStatuses: every way a call can end other than with a reply is
// the status grpc-go's client reports for it.
func TestUnaryStatuses(t *testing.T) {
	detail := func(c codes.Code, msg string, r cniv1.ErrorReason) error {
		st, err := status.New(c, msg).WithDetails(&cniv1.ErrorDetail{Reason: r})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	unimplemented := filepath.Join(shortTempDir(t), "empty.sock")
	lis, err := net.Listen("unix", unimplemented)
	if err != nil {
		t.Fatal(err)
	}
	empty := grpc.NewServer()
	go empty.Serve(lis)
	t.Cleanup(empty.Stop)

	for _, tc := range []struct {
		name   string
		path   string
		handle func(seen, grpc.ServerStream) error
		want   rpcStatus
	}{
		{name: "no such service", path: unimplemented,
			want: rpcStatus{code: codeUnimplemented, message: "unknown service wren.cni.v1.CNI"}},
		{name: "status, trailers only", handle: func(seen, grpc.ServerStream) error { return status.Error(codes.PermissionDenied, "no") },
			want: rpcStatus{code: codePermissionDenied, message: "no"}},
		{name: "detail, trailers only", handle: func(seen, grpc.ServerStream) error {
			return detail(codes.Unavailable, "wren agent is not ready: 100% \"soon\"\n", cniv1.ErrorReason_ERROR_REASON_NOT_READY)
		},
			want: rpcStatus{code: codeUnavailable, message: "wren agent is not ready: 100% \"soon\"\n", reason: reasonNotReady, detailed: true}},
		{name: "detail after headers", handle: func(_ seen, ss grpc.ServerStream) error {
			if err := ss.SendHeader(metadata.Pairs("x", "y")); err != nil {
				return err
			}
			return detail(codes.NotFound, "ünknown", cniv1.ErrorReason_ERROR_REASON_NOT_FOUND)
		},
			want: rpcStatus{code: codeNotFound, message: "ünknown", reason: reasonNotFound, detailed: true}},
		{name: "OK without a reply", handle: func(seen, grpc.ServerStream) error { return nil },
			want: rpcStatus{code: codeInternal}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path, _, _ = rawServer(t, tc.handle)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := unary(ctx, path, methodAdd, []byte{0x0a, 0x01, 'c'})
			st, ok := statusOf(err)
			if !ok {
				t.Fatalf("%v is not a status", err)
			}
			if tc.want.message == "" {
				tc.want.message = st.message // only the code is specified
			}
			if *st != tc.want {
				t.Errorf("status %+v, want %+v", *st, tc.want)
			}
		})
	}
}

// TestUnaryConnection: an agent that is slow, stops, goes away or is not
// there.
func TestUnaryConnection(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	blocking := func(_ seen, ss grpc.ServerStream) error {
		select {
		case <-ss.Context().Done():
			return ss.Context().Err()
		case <-release:
		}
		b := []byte{0x0a, 0x01, 'x'}
		return ss.SendMsg(&b)
	}

	t.Run("deadline", func(t *testing.T) {
		path, _, calls := rawServer(t, blocking)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := unary(ctx, path, methodAdd, nil)
		if st, ok := statusOf(err); !ok || st.code != codeDeadlineExceeded || !deadlinePassed(ctx, err) {
			t.Errorf("%v; want DeadlineExceeded, our deadline", err)
		}
		if s := <-calls; s.deadline.IsZero() {
			t.Error("the server saw no deadline")
		}
	})

	t.Run("graceful stop finishes the call", func(t *testing.T) {
		path, srv, calls := rawServer(t, blocking)
		done := make(chan error, 1)
		var got []byte
		go func() {
			var err error
			got, err = unary(context.Background(), path, methodAdd, nil)
			done <- err
		}()
		<-calls
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		time.Sleep(50 * time.Millisecond) // let GOAWAY reach the client
		unblock()
		if err := <-done; err != nil || !bytes.Equal(got, []byte{0x0a, 0x01, 'x'}) {
			t.Errorf("call during GracefulStop: %x, %v; want the reply", got, err)
		}
		<-stopped
	})

	t.Run("agent stops", func(t *testing.T) {
		path, srv, calls := rawServer(t, func(_ seen, ss grpc.ServerStream) error { <-ss.Context().Done(); return nil })
		done := make(chan error, 1)
		go func() { _, err := unary(context.Background(), path, methodAdd, nil); done <- err }()
		<-calls
		srv.Stop()
		err := <-done
		if st, ok := statusOf(err); !ok || st.code != codeUnavailable {
			t.Errorf("%v; want Unavailable", err)
		}
	})

	dir := shortTempDir(t)
	t.Run("nobody listening", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		_, err = unary(context.Background(), path, methodAdd, nil)
		if st, ok := statusOf(err); !ok || st.code != codeUnavailable || !strings.Contains(st.message, "connection refused") {
			t.Errorf("%v; want Unavailable, connection refused", err)
		}
	})

	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
		want  code
	}{
		{"closed at once", func(c net.Conn) { c.Close() }, codeUnavailable},
		{"HTTP/1.1 server", func(c net.Conn) {
			io.ReadFull(c, make([]byte, len(clientPreface))) // the request is written
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			io.Copy(io.Discard, c)
		}, codeInternal},
		{"frame too large", func(c net.Conn) {
			c.Write(appendFrame(nil, frameSettings, 0, 0, make([]byte, maxFrameSize+6)))
			io.Copy(io.Discard, c)
		}, codeInternal},
		{"HTTP 503 without gRPC", func(c net.Conn) {
			go io.Copy(io.Discard, c)
			var hb bytes.Buffer
			hpackFields(&hb, ":status", "503", "content-type", "text/plain")
			c.Write(appendFrame(nil, frameSettings, 0, 0, nil))
			c.Write(appendFrame(nil, frameHeaders, flagEndHeaders|flagEndStream, streamID, hb.Bytes()))
		}, codeUnavailable},
		{"RST_STREAM REFUSED_STREAM", func(c net.Conn) {
			go io.Copy(io.Discard, c)
			c.Write(appendFrame(nil, frameRSTStream, 0, streamID, []byte{0, 0, 0, 7}))
		}, codeUnavailable},
		{"GOAWAY before the stream", func(c net.Conn) {
			go io.Copy(io.Discard, c)
			c.Write(appendFrame(nil, frameGoAway, 0, 0, make([]byte, 8)))
			time.Sleep(20 * time.Millisecond)
			c.Close()
		}, codeUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "x.sock")
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err == nil {
					tc.serve(c)
					c.Close()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = unary(ctx, path, methodAdd, nil)
			if st, ok := statusOf(err); !ok || st.code != tc.want {
				t.Errorf("%v; want %s", err, tc.want)
			}
		})
	}
}

// TestEncodeTimeout: grpc-timeout values as grpc-go writes them.
func TestEncodeTimeout(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0n", -time.Second: "0n", time.Nanosecond: "1n", 99999999: "99999999n",
		100000000: "100000u", 30 * time.Second: "30000000u", 300 * time.Millisecond: "300000u",
		time.Hour: "3600000m", 1000 * time.Hour: "3600000S",
	} {
		if got := encodeTimeout(d); got != want {
			t.Errorf("encodeTimeout(%s) = %s, want %s", d, got, want)
		}
	}
}

// hpackFields encodes name/value pairs as a header block.
func hpackFields(w *bytes.Buffer, kv ...string) {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		// Literal without indexing, new name (RFC 7541 6.2.2), no Huffman.
		b = append(b, 0x00)
		b = appendHPACKString(b, kv[i])
		b = appendHPACKString(b, kv[i+1])
	}
	w.Write(b)
}

func appendHPACKString(b []byte, s string) []byte {
	if len(s) >= 127 {
		panic("long header in a test")
	}
	return append(append(b, byte(len(s))), s...)
}
