package main

// The messages wren-cni exchanges with the agent, in protobuf's wire format
// (https://protobuf.dev/programming-guides/encoding/), written and read by
// hand: the wren.cni.v1 messages of api/cni/v1/cni.proto and the
// google.rpc.Status that carries an error's ErrorDetail.
//
// Why not the generated api/cni/v1 package: it and the protobuf runtime it
// needs, with google.golang.org/grpc, are most of what the plugin used to
// initialise before it could send its one request (issue 9: wren-cni
// started 8.5 ms slower than ptp). The messages are seven strings and an
// enum; wire_test.go checks every field against the generated descriptors
// and round-trips through proto.Marshal/Unmarshal, so a change to
// cni.proto that this file misses fails the tests.

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Wire types (protobuf encoding).
const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

// request is wren.cni.v1.AddRequest, DelRequest or CheckRequest: they share
// fields 1–7; CheckRequest adds ip = 8.
type request struct {
	ContainerID  string // 1 container_id
	NetNS        string // 2 netns
	IfName       string // 3 ifname
	PodNamespace string // 4 pod_namespace
	PodName      string // 5 pod_name
	PodUID       string // 6 pod_uid
	CNIVersion   string // 7 cni_version
	IP           string // 8 ip (CheckRequest only)
}

// requestFields names the fields of request by number, for errors and for
// the test that compares them with cni.proto.
var requestFields = [...]string{1: "container_id", 2: "netns", 3: "ifname", 4: "pod_namespace", 5: "pod_name", 6: "pod_uid", 7: "cni_version", 8: "ip"}

// marshal encodes r as proto.Marshal encodes the generated message: fields
// in number order, empty strings left out. Like proto.Marshal it refuses
// a string that is not UTF-8 (proto3 strings must be).
func (r *request) marshal() ([]byte, error) {
	vals := [...]string{1: r.ContainerID, 2: r.NetNS, 3: r.IfName, 4: r.PodNamespace, 5: r.PodName, 6: r.PodUID, 7: r.CNIVersion, 8: r.IP}
	n := 0
	for _, v := range vals {
		n += len(v) + 3 // tag, a length of up to two bytes
	}
	b := make([]byte, 0, n)
	for num, v := range vals {
		if v == "" {
			continue
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("request field %s is not valid UTF-8: %q", requestFields[num], v)
		}
		b = appendTag(b, num, wireLen)
		b = appendVarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b, nil
}

// addReply is wren.cni.v1.AddReply.
type addReply struct {
	IP        string // 1 ip: the pod's address in CIDR form
	Gateway   string // 2 gateway
	MTU       int32  // 3 mtu
	HostIface string // 4 host_iface
	MAC       string // 5 mac
	Pool      string // 6 pool
	Block     string // 7 block
}

// unmarshal decodes an AddReply. Fields it does not know (a newer agent)
// are skipped, as proto.Unmarshal keeps them as unknown fields; a later
// occurrence of a field wins.
func (r *addReply) unmarshal(b []byte) error {
	*r = addReply{}
	return eachField(b, func(num, typ int, v uint64, data []byte) error {
		switch {
		case num == 3 && typ == wireVarint:
			r.MTU = int32(v) // int32 is sign-extended to 64 bits on the wire
		case num >= 1 && num <= 7 && num != 3 && typ == wireLen:
			if !utf8.Valid(data) {
				return fmt.Errorf("AddReply field %d is not valid UTF-8", num)
			}
			s := string(data)
			switch num {
			case 1:
				r.IP = s
			case 2:
				r.Gateway = s
			case 4:
				r.HostIface = s
			case 5:
				r.MAC = s
			case 6:
				r.Pool = s
			case 7:
				r.Block = s
			}
		case num >= 1 && num <= 7:
			return fmt.Errorf("AddReply field %d has wire type %d", num, typ)
		}
		return nil
	})
}

// errorReason is wren.cni.v1.ErrorReason.
type errorReason int32

// The reasons, as numbered in cni.proto.
const (
	reasonUnspecified     errorReason = 0
	reasonInvalidArgument errorReason = 1
	reasonInvalidNetNS    errorReason = 2
	reasonNotFound        errorReason = 3
	reasonPoolExhausted   errorReason = 4
	reasonNotReady        errorReason = 5
	reasonMismatch        errorReason = 6
)

// errorDetailType is the full name of wren.cni.v1.ErrorDetail, the last
// element of the type URL of the Any that carries it.
const errorDetailType = "wren.cni.v1.ErrorDetail"

// rpcStatus is the status of a failed call: a gRPC code, a message and,
// if the agent attached one, the ErrorDetail reason. Failures of the
// connection itself are statuses too, with the codes gRPC gives them
// (Unavailable, DeadlineExceeded, Internal).
type rpcStatus struct {
	code     code
	message  string
	reason   errorReason
	detailed bool // an ErrorDetail was attached
}

// Error reads as a grpc-go status error does.
func (s *rpcStatus) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", s.code, s.message)
}

// statusOf returns the status in err, if it is one.
func statusOf(err error) (*rpcStatus, bool) {
	var s *rpcStatus
	ok := errors.As(err, &s)
	return s, ok
}

// parseStatus decodes a google.rpc.Status (code = 1, message = 2,
// repeated google.protobuf.Any details = 3) and the first ErrorDetail
// among its details, as status.FromError + Details() did.
func parseStatus(b []byte) (*rpcStatus, error) {
	s := &rpcStatus{}
	err := eachField(b, func(num, typ int, v uint64, data []byte) error {
		switch {
		case num == 1 && typ == wireVarint:
			s.code = code(uint32(v))
		case num == 2 && typ == wireLen:
			s.message = string(data)
		case num == 3 && typ == wireLen:
			if s.detailed {
				return nil // the first ErrorDetail counts
			}
			typeURL, value, err := parseAny(data)
			if err != nil {
				return err
			}
			if fullName(typeURL) != errorDetailType {
				return nil
			}
			r, err := parseErrorDetail(value)
			if err != nil {
				return err
			}
			s.reason, s.detailed = r, true
		case num >= 1 && num <= 3:
			return fmt.Errorf("google.rpc.Status field %d has wire type %d", num, typ)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// parseAny decodes a google.protobuf.Any (type_url = 1, value = 2).
func parseAny(b []byte) (typeURL string, value []byte, err error) {
	err = eachField(b, func(num, typ int, _ uint64, data []byte) error {
		switch {
		case num == 1 && typ == wireLen:
			typeURL = string(data)
		case num == 2 && typ == wireLen:
			value = data
		case num == 1 || num == 2:
			return fmt.Errorf("google.protobuf.Any field %d has wire type %d", num, typ)
		}
		return nil
	})
	return typeURL, value, err
}

// fullName is the message name in a type URL: what follows the last '/'
// ("type.googleapis.com/wren.cni.v1.ErrorDetail"), as anypb resolves it.
func fullName(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '/' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

// parseErrorDetail decodes a wren.cni.v1.ErrorDetail (reason = 1).
func parseErrorDetail(b []byte) (errorReason, error) {
	var r errorReason
	err := eachField(b, func(num, typ int, v uint64, _ []byte) error {
		switch {
		case num == 1 && typ == wireVarint:
			r = errorReason(int32(v))
		case num == 1:
			return fmt.Errorf("ErrorDetail field 1 has wire type %d", typ)
		}
		return nil
	})
	return r, err
}

var errTruncated = errors.New("protobuf message truncated")

// eachField calls fn for every field of the message b in order: its
// number, wire type, and the varint value (wireVarint) or the bytes
// (wireLen). Fixed-size fields are skipped; groups, deprecated and absent
// from proto3, are an error.
func eachField(b []byte, fn func(num, typ int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		tag, n := consumeVarint(b)
		if n == 0 {
			return errTruncated
		}
		b = b[n:]
		num, typ := tag>>3, int(tag&7)
		if num == 0 || num > 1<<29-1 {
			return fmt.Errorf("invalid protobuf field number %d", num)
		}
		var v uint64
		var data []byte
		switch typ {
		case wireVarint:
			v, n = consumeVarint(b)
			if n == 0 {
				return errTruncated
			}
			b = b[n:]
		case wireI64, wireI32:
			size := 8
			if typ == wireI32 {
				size = 4
			}
			if len(b) < size {
				return errTruncated
			}
			b = b[size:]
			continue
		case wireLen:
			l, n := consumeVarint(b)
			if n == 0 || l > uint64(len(b)-n) {
				return errTruncated
			}
			data = b[n : n+int(l)]
			b = b[n+int(l):]
		default:
			return fmt.Errorf("unsupported protobuf wire type %d (field %d)", typ, num)
		}
		if err := fn(int(num), typ, v, data); err != nil {
			return err
		}
	}
	return nil
}

func appendTag(b []byte, num, typ int) []byte {
	return appendVarint(b, uint64(num)<<3|uint64(typ))
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// consumeVarint decodes a varint at the start of b and returns it with
// its length, or a length of 0 if b does not start with a valid one.
func consumeVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		if i == 9 && c > 1 {
			return 0, 0 // more than 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}
