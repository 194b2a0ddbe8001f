package main

// The hand-written protobuf codec of wire.go against the generated code of
// api/cni/v1 and grpc-go's google.rpc.Status: same field numbers and
// types, byte-identical requests, equal decoded replies. Pure: no socket.

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
)

// TestWireMatchesProto fails when cni.proto changes in a way wire.go does
// not follow: a field added, renumbered or retyped, a reason added, a
// method or the package renamed.
func TestWireMatchesProto(t *testing.T) {
	fieldsOf := func(m proto.Message) map[int]string {
		out := map[int]string{}
		fs := m.ProtoReflect().Descriptor().Fields()
		for i := range fs.Len() {
			f := fs.Get(i)
			if f.Cardinality() == protoreflect.Repeated {
				t.Errorf("%s: repeated field %s: wire.go handles singular fields only", m.ProtoReflect().Descriptor().FullName(), f.Name())
			}
			out[int(f.Number())] = string(f.Name()) + " " + f.Kind().String()
		}
		return out
	}
	reqFields := func(n int) map[int]string {
		out := map[int]string{}
		for num := 1; num <= n; num++ {
			out[num] = requestFields[num] + " string"
		}
		return out
	}
	for _, tc := range []struct {
		msg  proto.Message
		want map[int]string
	}{
		{&cniv1.AddRequest{}, reqFields(7)},
		{&cniv1.DelRequest{}, reqFields(7)},
		{&cniv1.CheckRequest{}, reqFields(8)},
		{&cniv1.AddReply{}, map[int]string{1: "ip string", 2: "gateway string", 3: "mtu int32", 4: "host_iface string",
			5: "mac string", 6: "pool string", 7: "block string"}},
		{&cniv1.DelReply{}, map[int]string{}},
		{&cniv1.CheckReply{}, map[int]string{}},
		{&cniv1.ErrorDetail{}, map[int]string{1: "reason enum"}},
	} {
		if diff := cmp.Diff(tc.want, fieldsOf(tc.msg)); diff != "" {
			t.Errorf("%s fields (-wire.go +cni.proto):\n%s", tc.msg.ProtoReflect().Descriptor().FullName(), diff)
		}
	}
	if got := string((&cniv1.ErrorDetail{}).ProtoReflect().Descriptor().FullName()); got != errorDetailType {
		t.Errorf("ErrorDetail is %s, wire.go looks for %s", got, errorDetailType)
	}

	reasons := map[string]errorReason{}
	vs := cniv1.ErrorReason(0).Descriptor().Values()
	for i := range vs.Len() {
		reasons[string(vs.Get(i).Name())] = errorReason(vs.Get(i).Number())
	}
	want := map[string]errorReason{
		"ERROR_REASON_UNSPECIFIED": reasonUnspecified, "ERROR_REASON_INVALID_ARGUMENT": reasonInvalidArgument,
		"ERROR_REASON_INVALID_NETNS": reasonInvalidNetNS, "ERROR_REASON_NOT_FOUND": reasonNotFound,
		"ERROR_REASON_POOL_EXHAUSTED": reasonPoolExhausted, "ERROR_REASON_NOT_READY": reasonNotReady,
		"ERROR_REASON_MISMATCH": reasonMismatch,
	}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("ErrorReason values (-wire.go +cni.proto):\n%s", diff)
	}

	for got, want := range map[string]string{
		methodAdd: cniv1.CNI_Add_FullMethodName, methodDel: cniv1.CNI_Del_FullMethodName, methodCheck: cniv1.CNI_Check_FullMethodName,
	} {
		if got != want {
			t.Errorf("method %s, the service has %s", got, want)
		}
	}
	for c := range codes.Code(17) {
		if code(c).String() != c.String() {
			t.Errorf("code %d is %q here, %q in grpc-go", c, code(c), c)
		}
	}
}

// TestRequestMarshal: the plugin's requests are byte for byte what
// proto.Marshal makes of the generated messages, for empty, long (two- and
// three-byte lengths) and non-ASCII values.
func TestRequestMarshal(t *testing.T) {
	long := strings.Repeat("/var/run/netns/cni-", 10)  // 190 bytes: two-byte length
	longer := strings.Repeat("0123456789abcdef", 1100) // 17600 bytes: three-byte length
	for _, r := range []request{
		{},
		{ContainerID: "c"},
		{ContainerID: "0123456789abcdef", NetNS: "/var/run/netns/cni-1", IfName: "eth0", PodNamespace: "default",
			PodName: "web-0", PodUID: "u-1", CNIVersion: "1.0.0"},
		{ContainerID: longer, NetNS: long, PodName: "wéb-ü", CNIVersion: "0.3.1"},
		{ContainerID: "c", IP: "10.244.1.5/32"},
		{IP: "10.244.1.5/32", PodUID: "x"},
	} {
		got, err := r.marshal()
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		gen := &cniv1.CheckRequest{ContainerId: r.ContainerID, Netns: r.NetNS, Ifname: r.IfName, PodNamespace: r.PodNamespace,
			PodName: r.PodName, PodUid: r.PodUID, CniVersion: r.CNIVersion, Ip: r.IP}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(gen)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("request %.60q...: plugin encodes\n%x\nproto.Marshal\n%x", r.ContainerID, got, want)
		}
		if r.IP == "" {
			// Without ip it is also a valid AddRequest and DelRequest.
			var add cniv1.AddRequest
			if err := proto.Unmarshal(got, &add); err != nil || add.PodName != r.PodName || add.ContainerId != r.ContainerID {
				t.Errorf("as AddRequest: %v %v", &add, err)
			}
		}
	}
	if _, err := (&request{NetNS: "/x\xff"}).marshal(); err == nil || !strings.Contains(err.Error(), "netns is not valid UTF-8") {
		t.Errorf("invalid UTF-8: %v; want an error naming netns", err)
	}
}

// TestAddReplyUnmarshal decodes what proto.Marshal makes of AddReplies,
// with fields a newer agent might add in between.
func TestAddReplyUnmarshal(t *testing.T) {
	for _, gen := range []*cniv1.AddReply{
		{},
		{Ip: "10.244.1.5/32"},
		{Ip: "10.244.1.5/32", Gateway: "169.254.1.1", Mtu: 1450, HostIface: "cali0123456789a",
			Mac: "0a:58:0a:f4:01:05", Pool: "10.244.0.0/16", Block: "10.244.1.0/26"},
		{Mtu: -1}, // ten-byte varint
		{Mtu: 2147483647, Block: strings.Repeat("b", 300)},
	} {
		b, err := proto.Marshal(gen)
		if err != nil {
			t.Fatal(err)
		}
		want := addReply{IP: gen.Ip, Gateway: gen.Gateway, MTU: gen.Mtu, HostIface: gen.HostIface, MAC: gen.Mac, Pool: gen.Pool, Block: gen.Block}
		// Unknown fields of every wire type, before and after.
		var unknown []byte
		unknown = protowire.AppendTag(unknown, 20, protowire.VarintType)
		unknown = protowire.AppendVarint(unknown, 1<<40)
		unknown = protowire.AppendTag(unknown, 21, protowire.BytesType)
		unknown = protowire.AppendBytes(unknown, []byte("future"))
		unknown = protowire.AppendTag(unknown, 22, protowire.Fixed32Type)
		unknown = protowire.AppendFixed32(unknown, 7)
		unknown = protowire.AppendTag(unknown, 23, protowire.Fixed64Type)
		unknown = protowire.AppendFixed64(unknown, 7)
		for _, in := range [][]byte{b, append(append([]byte{}, unknown...), b...), append(append([]byte{}, b...), unknown...)} {
			var got addReply
			if err := got.unmarshal(in); err != nil {
				t.Errorf("unmarshal %x: %v", in, err)
				continue
			}
			if got != want {
				t.Errorf("unmarshal %x: %+v, want %+v", in, got, want)
			}
		}
		if len(b) > 0 {
			var got addReply
			if err := got.unmarshal(b[:len(b)-1]); err == nil {
				t.Errorf("unmarshal of a truncated reply %x succeeded", b[:len(b)-1])
			}
		}
	}
	var r addReply
	if err := r.unmarshal([]byte{0x0a, 0x02, 0xff, 0xfe}); err == nil {
		t.Error("an ip that is not UTF-8 was accepted")
	}
	if err := r.unmarshal([]byte{0x18, 0x01, 0x0a}); err == nil {
		t.Error("a truncated field was accepted")
	}
	if err := r.unmarshal([]byte{0x1a, 0x00}); err == nil { // mtu as bytes
		t.Error("mtu with the wrong wire type was accepted")
	}
}

// FuzzAddReplyUnmarshal: whatever the plugin decodes, proto.Unmarshal
// decodes the same way; no input makes it panic.
func FuzzAddReplyUnmarshal(f *testing.F) {
	b, _ := proto.Marshal(&cniv1.AddReply{Ip: "10.244.1.5/32", Gateway: "169.254.1.1", Mtu: 1450, HostIface: "cali0123456789a", Mac: "m", Pool: "p", Block: "b"})
	f.Add(b)
	f.Add([]byte{0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0xa0, 0x01, 0x01, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		var got addReply
		if got.unmarshal(in) != nil {
			return
		}
		var gen cniv1.AddReply
		if err := proto.Unmarshal(in, &gen); err != nil {
			t.Fatalf("plugin decoded %x as %+v, proto.Unmarshal fails: %v", in, got, err)
		}
		want := addReply{IP: gen.Ip, Gateway: gen.Gateway, MTU: gen.Mtu, HostIface: gen.HostIface, MAC: gen.Mac, Pool: gen.Pool, Block: gen.Block}
		if got != want {
			t.Fatalf("%x: plugin %+v, proto.Unmarshal %+v", in, got, want)
		}
	})
}

// TestParseStatus decodes the google.rpc.Status that grpc-go puts in
// grpc-status-details-bin: code, message and the ErrorDetail among other
// details.
func TestParseStatus(t *testing.T) {
	marshal := func(st *status.Status) []byte {
		b, err := proto.Marshal(st.Proto())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withDetails := func(st *status.Status, d ...protoadapt.MessageV1) *status.Status {
		st, err := st.WithDetails(d...)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want rpcStatus
	}{
		{"no details", marshal(status.New(codes.NotFound, "no such container")), rpcStatus{code: codeNotFound, message: "no such container"}},
		{"OK", marshal(status.New(codes.OK, "")), rpcStatus{}},
		{"error detail", marshal(withDetails(status.New(codes.Unavailable, "not ready: ü"), &cniv1.ErrorDetail{Reason: cniv1.ErrorReason_ERROR_REASON_NOT_READY})),
			rpcStatus{code: codeUnavailable, message: "not ready: ü", reason: reasonNotReady, detailed: true}},
		{"unspecified reason", marshal(withDetails(status.New(codes.Internal, "x"), &cniv1.ErrorDetail{})),
			rpcStatus{code: codeInternal, message: "x", reason: reasonUnspecified, detailed: true}},
		{"after another detail", marshal(withDetails(status.New(codes.FailedPrecondition, "m"), durationpb.New(time.Second),
			&cniv1.ErrorDetail{Reason: cniv1.ErrorReason_ERROR_REASON_MISMATCH}, &cniv1.ErrorDetail{Reason: cniv1.ErrorReason_ERROR_REASON_NOT_FOUND})),
			rpcStatus{code: codeFailedPrecondition, message: "m", reason: reasonMismatch, detailed: true}},
		{"other detail only", marshal(withDetails(status.New(codes.Internal, "m"), durationpb.New(time.Second))),
			rpcStatus{code: codeInternal, message: "m"}},
	} {
		got, err := parseStatus(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if *got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, *got, tc.want)
		}
	}
	for _, bad := range [][]byte{{0x08}, {0x12, 0x05, 'a'}, {0x1a, 0x03, 0x0a, 0x05, 'x'}, {0x0b}} {
		if st, err := parseStatus(bad); err == nil {
			t.Errorf("parseStatus(%x) = %+v; want an error", bad, st)
		}
	}
	st := &rpcStatus{code: codeUnavailable, message: "m"}
	if got, want := st.Error(), status.Error(codes.Unavailable, "m").Error(); got != want {
		t.Errorf("Error() = %q, grpc-go says %q", got, want)
	}
}
