package main

// A gRPC client for exactly one unary call on a unix socket, over HTTP/2
// without TLS ("h2c" with prior knowledge), as the gRPC protocol specifies
// it (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) and
// grpc-go's server (pkg/cniserver) speaks it.
//
// The plugin runs once per CNI command and makes one call, so it needs no
// channel, resolver, balancer, retries, keepalive or stream multiplexing:
// dial, send the preface, our SETTINGS, the request's HEADERS and its one
// DATA frame in a single write, then read frames until the response's
// trailers. It answers the server's SETTINGS and PINGs, returns the
// flow-control credit of what it reads, and reports every failure as the
// status grpc-go would (Unavailable for the connection, DeadlineExceeded
// for our deadline, Internal for a protocol violation).
//
// It replaces google.golang.org/grpc in the plugin, whose package
// initialisation (balancers, resolvers, channelz, binary logging,
// x/net/trace with html/template, net/http, crypto/tls) and protobuf
// registries made every start, VERSION included, about twice as expensive
// in CPU as ptp's. unary_test.go runs it against a grpc-go server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
)

// code is a gRPC status code (google.golang.org/grpc/codes).
type code uint32

// The codes the plugin tells apart or produces.
const (
	codeOK                 code = 0
	codeCanceled           code = 1
	codeUnknown            code = 2
	codeDeadlineExceeded   code = 4
	codeNotFound           code = 5
	codePermissionDenied   code = 7
	codeResourceExhausted  code = 8
	codeFailedPrecondition code = 9
	codeUnimplemented      code = 12
	codeInternal           code = 13
	codeUnavailable        code = 14
	codeUnauthenticated    code = 16
)

var codeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

// String names c as codes.Code.String does.
func (c code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// HTTP/2 (RFC 9113) frame types, flags, settings and error codes used here.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingEnablePush = 0x2

	// maxFrameSize is the largest frame either side may send before the
	// peer raises it (we never do): SETTINGS_MAX_FRAME_SIZE's default.
	maxFrameSize = 16384
	// initialWindow is the flow-control window each side starts with.
	initialWindow = 65535
	// maxReply bounds the reply, as grpc-go's default receive limit.
	maxReply = 4 << 20
	// streamID is our one stream: the first a client opens.
	streamID = 1

	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// http2Codes maps an RST_STREAM error code to the status grpc-go reports
// (its http2ErrConvTab); a code not listed is Unknown.
var http2Codes = map[uint32]code{
	0x0: codeInternal,          // NO_ERROR
	0x1: codeInternal,          // PROTOCOL_ERROR
	0x2: codeInternal,          // INTERNAL_ERROR
	0x3: codeResourceExhausted, // FLOW_CONTROL_ERROR
	0x4: codeInternal,          // SETTINGS_TIMEOUT
	0x5: codeInternal,          // STREAM_CLOSED
	0x6: codeInternal,          // FRAME_SIZE_ERROR
	0x7: codeUnavailable,       // REFUSED_STREAM
	0x8: codeCanceled,          // CANCEL
	0x9: codeInternal,          // COMPRESSION_ERROR
	0xa: codeInternal,          // CONNECT_ERROR
	0xb: codeResourceExhausted, // ENHANCE_YOUR_CALM
	0xc: codePermissionDenied,  // INADEQUATE_SECURITY
	0xd: codeInternal,          // HTTP_1_1_REQUIRED
}

// httpCodes maps the HTTP status of a response without grpc-status to the
// gRPC code, as grpc-go does (HTTPStatusConvTab); others are Unknown.
var httpCodes = map[int]code{400: codeInternal, 401: codeUnauthenticated, 403: codePermissionDenied,
	404: codeUnimplemented, 429: codeUnavailable, 502: codeUnavailable, 503: codeUnavailable, 504: codeUnavailable}

// userAgent identifies the plugin in the agent's request metadata.
var userAgent = "wren-cni/" + version

// unary calls method ("/wren.cni.v1.CNI/Add") on the gRPC server at the
// unix socket path with the encoded request and returns the encoded reply.
// ctx's deadline travels with the request (grpc-timeout) and bounds the
// whole call. A failure is an *rpcStatus.
func unary(ctx context.Context, path, method string, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextStatus(err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, transportStatus(ctx, "dial the agent", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancellation (ours has none but the deadline) ends blocked I/O.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c := &h2conn{conn: conn, r: bufio.NewReaderSize(conn, 2*maxFrameSize)}
	c.dec = hpack.NewDecoder(4096, nil)
	c.dec.SetMaxStringLength(maxReply)
	first, err := c.request(ctx, method, req)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(first); err != nil {
		return nil, transportStatus(ctx, "write to the agent", err)
	}
	reply, err := c.response(ctx)
	if err != nil {
		if _, ok := statusOf(err); ok {
			return nil, err
		}
		return nil, transportStatus(ctx, "read from the agent", err)
	}
	return reply, nil
}

// h2conn is the client side of one HTTP/2 connection with one stream.
type h2conn struct {
	conn net.Conn
	r    *bufio.Reader
	dec  *hpack.Decoder
	hdr  [9]byte
	// goAway is set when the server sent GOAWAY without processing our
	// stream; the connection's end is then reported as Unavailable.
	goAway bool
}

// request builds what the client sends first: the connection preface, its
// SETTINGS (no server push), and the call's HEADERS and DATA frames.
func (c *h2conn) request(ctx context.Context, method string, msg []byte) ([]byte, error) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	// grpc-go's client sends these, in this order (createHeaderFields);
	// for a unix socket target its :authority is "localhost".
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method},
		{Name: ":authority", Value: "localhost"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "user-agent", Value: userAgent},
		{Name: "te", Value: "trailers"},
	}
	if dl, ok := ctx.Deadline(); ok {
		fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: encodeTimeout(time.Until(dl))})
	}
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			return nil, err
		}
	}
	// A gRPC message: compressed flag 0, length, bytes. Our requests are
	// a few hundred bytes; one that did not fit the peer's initial window
	// would need a flow-control wait this client does not implement.
	if len(msg)+5 > initialWindow {
		return nil, &rpcStatus{code: codeInternal, message: fmt.Sprintf("request of %d bytes is larger than this client sends", len(msg))}
	}
	if hb.Len() > maxFrameSize {
		return nil, &rpcStatus{code: codeInternal, message: "request headers too large"}
	}
	data := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(data[1:], uint32(len(msg)))
	data = append(data, msg...)

	b := make([]byte, 0, len(clientPreface)+9+6+9+hb.Len()+len(data)+9*(len(data)/maxFrameSize+1))
	b = append(b, clientPreface...)
	b = appendFrame(b, frameSettings, 0, 0, binary.BigEndian.AppendUint32([]byte{0, settingEnablePush}, 0))
	b = appendFrame(b, frameHeaders, flagEndHeaders, streamID, hb.Bytes())
	for len(data) > maxFrameSize {
		b = appendFrame(b, frameData, 0, streamID, data[:maxFrameSize])
		data = data[maxFrameSize:]
	}
	return appendFrame(b, frameData, flagEndStream, streamID, data), nil
}

// appendFrame appends an HTTP/2 frame: 24-bit length, type, flags, stream.
func appendFrame(b []byte, typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags)
	b = binary.BigEndian.AppendUint32(b, stream&0x7fffffff)
	return append(b, payload...)
}

// readFrame reads the next frame; its payload is valid until the next call.
func (c *h2conn) readFrame(buf []byte) (typ, flags byte, stream uint32, payload []byte, err error) {
	if _, err = io.ReadFull(c.r, c.hdr[:]); err != nil {
		return
	}
	n := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	typ, flags = c.hdr[3], c.hdr[4]
	stream = binary.BigEndian.Uint32(c.hdr[5:]) & 0x7fffffff
	if n > maxFrameSize {
		err = protocolError("frame of %d bytes exceeds the maximum frame size %d", n, maxFrameSize)
		return
	}
	payload = buf[:n]
	_, err = io.ReadFull(c.r, payload)
	return
}

// response reads frames until our stream ends and returns the reply
// message, or the call's status.
func (c *h2conn) response(ctx context.Context) ([]byte, error) {
	buf := make([]byte, maxFrameSize)
	var (
		block      []byte // header block being collected (HEADERS + CONTINUATION)
		blockEnd   bool   // END_STREAM of the HEADERS that started block
		gotHeaders bool   // the response headers arrived
		body       []byte
	)
	for {
		typ, flags, stream, p, err := c.readFrame(buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if c.goAway {
					return nil, &rpcStatus{code: codeUnavailable, message: "the agent closed the connection (GOAWAY) before handling the call"}
				}
				return nil, &rpcStatus{code: codeUnavailable, message: "the agent closed the connection before answering: " + err.Error()}
			}
			return nil, err
		}
		if block != nil && typ != frameContinuation {
			return nil, protocolError("frame type %d inside a header block", typ)
		}
		switch typ {
		case frameSettings:
			if flags&flagAck == 0 {
				if len(p)%6 != 0 || stream != 0 {
					return nil, protocolError("malformed SETTINGS frame")
				}
				if err := c.write(appendFrame(nil, frameSettings, flagAck, 0, nil)); err != nil {
					return nil, err
				}
			}
		case framePing:
			if flags&flagAck == 0 {
				if len(p) != 8 || stream != 0 {
					return nil, protocolError("malformed PING frame")
				}
				if err := c.write(appendFrame(nil, framePing, flagAck, 0, p)); err != nil {
					return nil, err
				}
			}
		case frameGoAway:
			if len(p) < 8 {
				return nil, protocolError("malformed GOAWAY frame")
			}
			// The server finishes the streams up to the last it names;
			// if ours is not among them it will not answer.
			if binary.BigEndian.Uint32(p)&0x7fffffff < streamID {
				c.goAway = true
			}
		case frameRSTStream:
			if stream != streamID {
				continue
			}
			if len(p) != 4 {
				return nil, protocolError("malformed RST_STREAM frame")
			}
			ec := binary.BigEndian.Uint32(p)
			cd, ok := http2Codes[ec]
			if !ok {
				cd = codeUnknown
			}
			if dl, ok := ctx.Deadline(); ok && cd == codeCanceled && !dl.After(time.Now()) {
				// The server cancelled because the deadline we sent
				// passed: ours has too (grpc-go does the same).
				cd = codeDeadlineExceeded
			}
			return nil, &rpcStatus{code: cd, message: fmt.Sprintf("stream terminated by RST_STREAM with error code: %s", http2ErrName(ec))}
		case framePushPromise:
			return nil, protocolError("PUSH_PROMISE although push is disabled")
		case frameHeaders, frameContinuation:
			if stream != streamID {
				return nil, protocolError("header block on stream %d", stream)
			}
			if typ == frameHeaders {
				if block != nil {
					return nil, protocolError("HEADERS inside a header block")
				}
				if p, err = unpad(flags, p); err != nil {
					return nil, err
				}
				if flags&flagPriority != 0 {
					if len(p) < 5 {
						return nil, protocolError("HEADERS frame too short for its priority")
					}
					p = p[5:]
				}
				block, blockEnd = append([]byte{}, p...), flags&flagEndStream != 0
			} else {
				if block == nil {
					return nil, protocolError("CONTINUATION without HEADERS")
				}
				block = append(block, p...)
			}
			if len(block) > maxReply {
				return nil, &rpcStatus{code: codeInternal, message: "header list from the agent too large"}
			}
			if flags&flagEndHeaders == 0 {
				continue
			}
			fields, err := c.dec.DecodeFull(block)
			if err != nil {
				return nil, protocolError("decode headers: %s", err)
			}
			block = nil
			if !blockEnd {
				if gotHeaders {
					return nil, &rpcStatus{code: codeInternal, message: "a HEADERS frame cannot appear in the middle of a stream"}
				}
				if err := checkResponseHeaders(fields); err != nil {
					return nil, err
				}
				gotHeaders = true
				continue
			}
			// Trailers, or a trailers-only response: the call's end.
			if st := trailerStatus(fields, gotHeaders); st.code != codeOK {
				return nil, st
			}
			return message(body)
		case frameData:
			if stream != streamID {
				continue
			}
			if !gotHeaders {
				return nil, protocolError("DATA before the response headers")
			}
			n := len(p)
			if p, err = unpad(flags, p); err != nil {
				return nil, err
			}
			if len(body)+len(p) > maxReply+5 {
				return nil, &rpcStatus{code: codeResourceExhausted, message: fmt.Sprintf("reply from the agent larger than %d bytes", maxReply)}
			}
			body = append(body, p...)
			if flags&flagEndStream != 0 {
				return nil, &rpcStatus{code: codeInternal, message: "server closed the stream without sending trailers"}
			}
			// Give the credit back at once, to the connection and the
			// stream: the reply is small, the window never the limit.
			if n > 0 {
				var wu []byte
				wu = appendFrame(wu, frameWindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(n)))
				wu = appendFrame(wu, frameWindowUpdate, 0, streamID, binary.BigEndian.AppendUint32(nil, uint32(n)))
				if err := c.write(wu); err != nil {
					return nil, err
				}
			}
		}
	}
}

func (c *h2conn) write(b []byte) error {
	_, err := c.conn.Write(b)
	return err
}

// unpad strips the padding of a DATA or HEADERS frame.
func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, protocolError("padding longer than the frame")
	}
	return p[1 : len(p)-int(p[0])], nil
}

// checkResponseHeaders accepts response headers that start a gRPC reply.
func checkResponseHeaders(fields []hpack.HeaderField) error {
	var status, ctype string
	for _, f := range fields {
		switch f.Name {
		case ":status":
			status = f.Value
		case "content-type":
			ctype = f.Value
		}
	}
	if st := notGRPC(status, ctype); st != nil {
		return st
	}
	return nil
}

// notGRPC is the status of a response whose headers say it is not gRPC
// (grpc-go goes by the content type, then by the HTTP status), or nil.
func notGRPC(status, ctype string) *rpcStatus {
	switch {
	case isGRPCContentType(ctype):
		return nil
	case status != "200":
		return httpStatus(status, ctype)
	}
	return &rpcStatus{code: codeInternal, message: fmt.Sprintf("transport: received unexpected content-type %q", ctype)}
}

// trailerStatus is the status in the trailers (or a trailers-only
// response): grpc-status-details-bin if its code agrees with grpc-status,
// else grpc-status and grpc-message, as grpc-go reads them.
func trailerStatus(fields []hpack.HeaderField, afterHeaders bool) *rpcStatus {
	var (
		httpSt, ctype, msg, details, rawCode string
		hasDetails                           bool
	)
	for _, f := range fields {
		switch f.Name {
		case ":status":
			httpSt = f.Value
		case "content-type":
			ctype = f.Value
		case "grpc-status":
			rawCode = f.Value
		case "grpc-message":
			msg = decodeGRPCMessage(f.Value)
		case "grpc-status-details-bin":
			details, hasDetails = f.Value, true
		}
	}
	if !afterHeaders {
		if st := notGRPC(httpSt, ctype); st != nil {
			return st
		}
	}
	cd := codeUnknown
	if rawCode != "" {
		n, err := strconv.ParseInt(rawCode, 10, 32)
		if err != nil {
			return &rpcStatus{code: codeUnknown, message: fmt.Sprintf("transport: malformed grpc-status: %s", err)}
		}
		cd = code(uint32(n))
	}
	if hasDetails {
		if b, err := decodeBinHeader(details); err == nil {
			if st, err := parseStatus(b); err == nil {
				if st.code == cd {
					return st
				}
				return &rpcStatus{code: codeInternal, message: fmt.Sprintf(
					"grpc-status-details-bin mismatch: grpc-status=%s, grpc-message=%q, details code=%s", cd, msg, st.code)}
			}
		}
	}
	return &rpcStatus{code: cd, message: msg}
}

// httpStatus is the status of a response that is not gRPC.
func httpStatus(status, ctype string) *rpcStatus {
	n, err := strconv.Atoi(status)
	if err != nil {
		return &rpcStatus{code: codeInternal, message: fmt.Sprintf("transport: malformed http-status %q", status)}
	}
	cd, ok := httpCodes[n]
	if !ok {
		cd = codeUnknown
	}
	msg := fmt.Sprintf("unexpected HTTP status code received from server: %d", n)
	if !isGRPCContentType(ctype) {
		msg += fmt.Sprintf("; transport: received unexpected content-type %q", ctype)
	}
	return &rpcStatus{code: cd, message: msg}
}

// isGRPCContentType accepts "application/grpc" and "application/grpc+..."
// or ";..." variants.
func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// message extracts the one reply message from the stream's data.
func message(body []byte) ([]byte, error) {
	if len(body) < 5 {
		// An OK status without a reply message.
		return nil, &rpcStatus{code: codeInternal, message: "cardinality violation: expected <Message> for non server-streaming RPCs, but received <EOF>"}
	}
	if body[0] != 0 {
		return nil, &rpcStatus{code: codeInternal, message: "grpc: the agent sent a compressed message although none was accepted"}
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if uint64(n) != uint64(len(body)-5) {
		return nil, &rpcStatus{code: codeInternal, message: fmt.Sprintf("reply framing: message of %d bytes in %d bytes of data", n, len(body)-5)}
	}
	return body[5:], nil
}

// decodeBinHeader decodes a "-bin" header: base64, padded or not.
func decodeBinHeader(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// decodeGRPCMessage undoes the percent-encoding of grpc-message.
func decodeGRPCMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// encodeTimeout formats a grpc-timeout value: at most eight digits and a
// unit, rounded up (grpc-go's grpcutil.EncodeDuration).
func encodeTimeout(t time.Duration) string {
	if t <= 0 {
		return "0n"
	}
	const maxValue = 1e8 - 1
	for _, u := range []struct {
		d    time.Duration
		unit string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if v := ceilDiv(t, u.d); v <= maxValue {
			return strconv.FormatInt(v, 10) + u.unit
		}
	}
	return strconv.FormatInt(ceilDiv(t, time.Hour), 10) + "H"
}

func ceilDiv(d, r time.Duration) int64 {
	if d%r > 0 {
		return int64(d/r + 1)
	}
	return int64(d / r)
}

// protocolError is a violation of HTTP/2 or gRPC by the server.
func protocolError(format string, a ...any) *rpcStatus {
	return &rpcStatus{code: codeInternal, message: "transport: " + fmt.Sprintf(format, a...)}
}

// transportStatus turns a connection failure into the status grpc-go
// gives it: our context's end if that is the cause, else Unavailable.
func transportStatus(ctx context.Context, op string, err error) *rpcStatus {
	if ctx.Err() != nil {
		return contextStatus(ctx.Err())
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		// The connection's deadline is ctx's; its timer can fire first.
		return contextStatus(context.DeadlineExceeded)
	}
	return &rpcStatus{code: codeUnavailable, message: fmt.Sprintf("connection error: %s: %s", op, err)}
}

// contextStatus is the status of a call whose context ended.
func contextStatus(err error) *rpcStatus {
	if errors.Is(err, context.DeadlineExceeded) {
		return &rpcStatus{code: codeDeadlineExceeded, message: err.Error()}
	}
	return &rpcStatus{code: codeCanceled, message: err.Error()}
}

// http2ErrName names an HTTP/2 error code as grpc-go's messages do.
func http2ErrName(c uint32) string {
	names := [...]string{"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
		"STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
		"ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("unknown error code 0x%x", c)
}
