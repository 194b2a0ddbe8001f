package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/wren-net/wren/internal/nlsock"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultBatch is how many route messages go into one sendmsg. The kernel
// handles every message of a send in one pass and acks each; 64-256 per
// send reaches the kernel's route-insert ceiling on a small VM (about
// 200k routes/s against about 100k/s for one RouteReplace per route).
const DefaultBatch = 128

// dumpRetries bounds re-dumps when the kernel flags a dump as interrupted
// (NLM_F_DUMP_INTR: the table changed while it was being read).
const dumpRetries = 5

// NetlinkKernel is the Linux Kernel: one long-lived NETLINK_ROUTE socket
// with strict dump checking (so the kernel filters dumps by table and
// protocol) for dumps and batched writes, and a netlink.Handle for links.
type NetlinkKernel struct {
	mu      sync.Mutex
	fd      int // dumps
	seq     uint32
	batch   int
	links   *netlink.Handle
	rbuf    []byte
	writers []*writer

	interrupts int      // dumps restarted because NLM_F_DUMP_INTR was set
	out        []KRoute // dump buffer reused across List calls
}

// Interrupts returns how many dumps were restarted because the table
// changed while it was read.
func (k *NetlinkKernel) Interrupts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.interrupts
}

// NewKernel opens the sockets inside ns (netns.None() or a value <= 0 means
// the caller's namespace). batch <= 0 means DefaultBatch.
func NewKernel(ns netns.NsHandle, batch int) (*NetlinkKernel, error) {
	if batch <= 0 {
		batch = DefaultBatch
	}
	fd, err := nlsock.Open(ns, 0, 30*time.Second)
	if err != nil {
		return nil, err
	}
	k := &NetlinkKernel{fd: fd, batch: batch, rbuf: make([]byte, 1<<20)}
	for i := 0; i < Writers; i++ {
		wfd, err := nlsock.Open(ns, 0, 30*time.Second)
		if err != nil {
			k.closeFDs()
			return nil, err
		}
		k.writers = append(k.writers, &writer{fd: wfd, rbuf: make([]byte, 256<<10)})
	}
	var h *netlink.Handle
	if ns > 0 {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		k.closeFDs()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	k.links = h
	return k, nil
}

func (k *NetlinkKernel) closeFDs() {
	unix.Close(k.fd)
	for _, w := range k.writers {
		unix.Close(w.fd)
	}
}

// Close releases the sockets.
func (k *NetlinkKernel) Close() error {
	k.links.Close()
	k.closeFDs()
	return nil
}

// PortIDs returns the netlink port ids of the write sockets. A watcher
// given them (netwatch.Config.IgnorePorts) does not see the echoes of
// Wren's own route writes, so a 100k-route sync does not wake it 100k
// times nor poke a needless resync.
func (k *NetlinkKernel) PortIDs() ([]uint32, error) {
	var ids []uint32
	for _, w := range k.writers {
		id, err := nlsock.PortID(w.fd)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Links implements Kernel.
func (k *NetlinkKernel) Links() (map[string]int, error) {
	var ls []netlink.Link
	var err error
	for i := 0; i < dumpRetries; i++ {
		ls, err = k.links.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	m := make(map[string]int, len(ls))
	for _, l := range ls {
		m[l.Attrs().Name] = l.Attrs().Index
	}
	return m, nil
}

var errInterrupted = errors.New("route dump interrupted")

// List implements Kernel. The kernel filters by table and protocol (strict
// checking), so a node with a million foreign routes costs us nothing.
// An interrupted dump is retried from scratch; fn sees only complete dumps
// because routes are buffered per attempt.
func (k *NetlinkKernel) List(table uint32, proto uint8, fn func(KRoute)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var n int
	var err error
	k.out, n, err = retryDump(k.out[:0], dumpRetries, func(emit func(KRoute)) error { return k.dump(table, proto, emit) }, fn)
	k.interrupts += n
	return err
}

// retryDump runs dump until it completes without interruption (at most
// tries times) and hands fn the routes of the first complete attempt
// only, so callers never diff against a torn listing. It returns the
// number of interrupted attempts.
// out is a reusable buffer, returned for the next call.
func retryDump(out []KRoute, tries int, dump func(emit func(KRoute)) error, fn func(KRoute)) ([]KRoute, int, error) {
	var err error
	interrupted := 0
	for i := 0; i < tries; i++ {
		out = out[:0]
		err = dump(func(r KRoute) { out = append(out, r) })
		if !errors.Is(err, errInterrupted) {
			break
		}
		interrupted++
	}
	if err != nil {
		return out, interrupted, fmt.Errorf("after %d attempts: %w", interrupted+1, err)
	}
	for _, r := range out {
		fn(r)
	}
	return out, interrupted, nil
}

func (k *NetlinkKernel) dump(table uint32, proto uint8, fn func(KRoute)) error {
	k.seq++
	seq := k.seq
	b := make([]byte, 0, 64)
	b = appendHdr(b, unix.RTM_GETROUTE, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b = appendRtmsg(b, rtmsg{family: unix.AF_INET, table: tableByte(table), protocol: proto})
	b = appendAttrU32(b, unix.RTA_TABLE, table)
	finishMsg(b, 0)
	if err := unix.Sendto(k.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send route dump: %w", err)
	}
	st := dumpState{seq: seq, table: table, proto: proto}
	for {
		n, _, err := unix.Recvfrom(k.fd, k.rbuf, 0)
		if err != nil {
			return fmt.Errorf("read route dump: %w", err)
		}
		if done, err := st.walk(k.rbuf[:n], fn); done || err != nil {
			return err
		}
	}
}

// dumpState follows one route dump across reads.
type dumpState struct {
	seq         uint32
	table       uint32
	proto       uint8
	interrupted bool
}

// walk consumes one read of a dump. It reports done at NLMSG_DONE, with
// errInterrupted if any part carried NLM_F_DUMP_INTR (the table changed
// while the kernel walked it, so the listing may be torn).
func (d *dumpState) walk(data []byte, fn func(KRoute)) (bool, error) {
	for len(data) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(data[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(data) {
			return true, fmt.Errorf("read route dump: bad message length %d", l)
		}
		typ := binary.NativeEndian.Uint16(data[4:6])
		flags := binary.NativeEndian.Uint16(data[6:8])
		mseq := binary.NativeEndian.Uint32(data[8:12])
		msg := data[unix.NLMSG_HDRLEN:l]
		data = data[nlmAlign(l):]
		if mseq != d.seq {
			continue // stale reply of an earlier, abandoned request
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			d.interrupted = true
		}
		switch typ {
		case unix.NLMSG_DONE:
			if d.interrupted {
				return true, errInterrupted
			}
			return true, nil
		case unix.NLMSG_ERROR:
			return true, parseAck(msg)
		case unix.RTM_NEWROUTE:
			if r, ok := parseRoute(msg); ok && r.Table == d.table && r.Protocol == d.proto {
				fn(r)
			}
		}
	}
	return false, nil
}

// Writers is the number of sockets that write in parallel. The kernel
// serialises route changes, but with two sockets one batch is being built,
// copied and acked while the kernel inserts the other, which keeps both
// cores of a small node busy.
const Writers = 2

// writer is one write socket with its own sequence space.
type writer struct {
	fd   int
	seq  uint32
	buf  []byte
	rbuf []byte
}

// Write implements Kernel: ops are packed k.batch per sendmsg, the last of
// each with NLM_F_ACK, failures matched back by sequence number. Additions
// and changes all complete before any delete starts (make before break);
// within each group batches are spread over the writers (a single batch
// is sent without starting a goroutine).
func (k *NetlinkKernel) Write(ops []Op) []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	errs := make([]error, len(ops))
	split := 0
	for split < len(ops) && !ops[split].Delete {
		split++
	}
	k.writeParallel(ops[:split], errs[:split])
	k.writeParallel(ops[split:], errs[split:])
	return errs
}

func (k *NetlinkKernel) writeParallel(ops []Op, errs []error) {
	nb := (len(ops) + k.batch - 1) / k.batch
	if nb == 0 {
		return
	}
	if nb == 1 {
		k.writers[0].writeBatch(ops, errs)
		return
	}
	var wg sync.WaitGroup
	for wi, w := range k.writers {
		if wi >= nb {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := wi; b < nb; b += len(k.writers) {
				start, end := b*k.batch, min((b+1)*k.batch, len(ops))
				w.writeBatch(ops[start:end], errs[start:end])
			}
		}()
	}
	wg.Wait()
}

func (w *writer) writeBatch(ops []Op, errs []error) {
	b := w.buf[:0]
	first := w.seq + 1
	for i, op := range ops {
		w.seq++
		b = appendRouteMsg(b, op, w.seq, i == len(ops)-1)
	}
	w.buf = b
	if err := unix.Sendto(w.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("netlink send: %w", err)
		}
		return
	}
	// Only the last message asks for an ack. The kernel handles a send's
	// messages in order and answers the others only when they fail, so
	// the last ack means every answer of the batch has arrived.
	last := len(ops) - 1
	for {
		n, _, err := unix.Recvfrom(w.fd, w.rbuf, 0)
		if err != nil {
			for i := range errs {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("netlink ack: %w", err)
				}
			}
			return
		}
		data := w.rbuf[:n]
		for len(data) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(data[0:4]))
			if l < unix.NLMSG_HDRLEN || l > len(data) {
				break
			}
			typ := binary.NativeEndian.Uint16(data[4:6])
			mseq := binary.NativeEndian.Uint32(data[8:12])
			msg := data[unix.NLMSG_HDRLEN:l]
			data = data[nlmAlign(l):]
			i := int(mseq - first)
			if typ != unix.NLMSG_ERROR || mseq < first || i >= len(ops) {
				continue
			}
			e := parseAck(msg)
			if ops[i].Delete && errors.Is(e, unix.ESRCH) {
				e = nil // already gone: the goal holds
			}
			errs[i] = e
			if i == last {
				return
			}
		}
	}
}

// appendRouteMsg encodes one RTM_NEWROUTE / RTM_DELROUTE; with ack, the
// kernel answers even when it succeeds.
func appendRouteMsg(b []byte, op Op, seq uint32, ack bool) []byte {
	r := op.Route
	typ := uint16(unix.RTM_NEWROUTE)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_CREATE)
	switch {
	case op.Delete:
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_REQUEST
	case op.Replace:
		flags |= unix.NLM_F_REPLACE
	default:
		flags |= unix.NLM_F_EXCL
	}
	if ack {
		flags |= unix.NLM_F_ACK
	}
	start := len(b)
	b = appendHdr(b, typ, flags, seq)
	m := rtmsg{family: unix.AF_INET, dstLen: uint8(r.Dst.Bits()), tos: r.Tos, table: tableByte(r.Table), protocol: r.Protocol}
	if op.Delete {
		// Naming the protocol makes the kernel refuse to delete a route
		// somebody else installed with the same key meanwhile.
		m.scope = unix.RT_SCOPE_NOWHERE
	} else {
		m.scope, m.typ, m.flags = r.Scope, r.Type, r.Flags&FlagOnLink
	}
	b = appendRtmsg(b, m)
	a4 := r.Dst.Addr().As4()
	b = appendAttr(b, unix.RTA_DST, a4[:])
	b = appendAttrU32(b, unix.RTA_TABLE, r.Table)
	if r.Priority != 0 {
		b = appendAttrU32(b, unix.RTA_PRIORITY, r.Priority)
	}
	if !op.Delete {
		if r.Gw.IsValid() {
			g := r.Gw.As4()
			b = appendAttr(b, unix.RTA_GATEWAY, g[:])
		}
		if r.Oif != 0 {
			b = appendAttrU32(b, unix.RTA_OIF, uint32(r.Oif))
		}
		if r.MTU != 0 {
			var mtu []byte
			mtu = appendAttrU32(mtu, unix.RTAX_MTU, r.MTU)
			b = appendAttr(b, unix.RTA_METRICS, mtu)
		}
	}
	return finishMsg(b, start)
}

type rtmsg struct {
	family, dstLen, srcLen, tos, table, protocol, scope, typ uint8
	flags                                                    uint32
}

func tableByte(t uint32) uint8 {
	if t < 256 {
		return uint8(t)
	}
	return unix.RT_TABLE_UNSPEC // the RTA_TABLE attribute carries it
}

func appendHdr(b []byte, typ, flags uint16, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0) // length, fixed by finishMsg
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0) // port id: kernel fills
}

func appendRtmsg(b []byte, m rtmsg) []byte {
	b = append(b, m.family, m.dstLen, m.srcLen, m.tos, m.table, m.protocol, m.scope, m.typ)
	return binary.NativeEndian.AppendUint32(b, m.flags)
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	l := unix.SizeofRtAttr + len(v)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for i := l; i < rtaAlign(l); i++ {
		b = append(b, 0)
	}
	return b
}

func appendAttrU32(b []byte, typ uint16, v uint32) []byte {
	var x [4]byte
	binary.NativeEndian.PutUint32(x[:], v)
	return appendAttr(b, typ, x[:])
}

func finishMsg(b []byte, start int) []byte {
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func rtaAlign(l int) int { return (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// parseAck decodes an NLMSG_ERROR payload: nil for an ack, else the errno
// with the kernel's extended-ack message when it sent one.
func parseAck(msg []byte) error {
	if len(msg) < 4 {
		return errors.New("short netlink ack")
	}
	code := int32(binary.NativeEndian.Uint32(msg[0:4]))
	if code == 0 {
		return nil
	}
	errno := unix.Errno(-code)
	// With NETLINK_CAP_ACK the original header (16 bytes) follows, then
	// NLMSGERR_ATTR_* TLVs.
	if len(msg) > 4+unix.NLMSG_HDRLEN {
		attrs := msg[4+unix.NLMSG_HDRLEN:]
		for len(attrs) >= 4 {
			l := int(binary.NativeEndian.Uint16(attrs[0:2]))
			t := binary.NativeEndian.Uint16(attrs[2:4])
			if l < 4 || l > len(attrs) {
				break
			}
			if t == unix.NLMSGERR_ATTR_MSG {
				s := attrs[4:l]
				for len(s) > 0 && s[len(s)-1] == 0 {
					s = s[:len(s)-1]
				}
				return fmt.Errorf("%s: %w", s, errno)
			}
			attrs = attrs[rtaAlign(l):]
		}
	}
	return errno
}

// parseRoute decodes the attributes Wren compares from an RTM_NEWROUTE
// payload. Multipath routes are reported with no gateway and no oif, so
// they never compare equal to a desired route and get rewritten.
func parseRoute(msg []byte) (KRoute, bool) {
	if len(msg) < unix.SizeofRtMsg {
		return KRoute{}, false
	}
	if msg[0] != unix.AF_INET {
		return KRoute{}, false
	}
	r := KRoute{Table: uint32(msg[4]), Protocol: msg[5], Scope: msg[6], Type: msg[7], Tos: msg[3],
		Flags: binary.NativeEndian.Uint32(msg[8:12]) & FlagOnLink}
	dstLen := int(msg[1])
	dst := [4]byte{}
	attrs := msg[unix.SizeofRtMsg:]
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		t := binary.NativeEndian.Uint16(attrs[2:4])
		if l < 4 || l > len(attrs) {
			break
		}
		v := attrs[4:l]
		switch t {
		case unix.RTA_DST:
			if len(v) == 4 {
				copy(dst[:], v)
			}
		case unix.RTA_TABLE:
			if len(v) == 4 {
				r.Table = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_GATEWAY:
			if len(v) == 4 {
				r.Gw = netip.AddrFrom4([4]byte(v))
			}
		case unix.RTA_OIF:
			if len(v) == 4 {
				r.Oif = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_PRIORITY:
			if len(v) == 4 {
				r.Priority = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_METRICS:
			for m := v; len(m) >= 4; {
				ml := int(binary.NativeEndian.Uint16(m[0:2]))
				if ml < 4 || ml > len(m) {
					break
				}
				if binary.NativeEndian.Uint16(m[2:4]) == unix.RTAX_MTU && ml >= 8 {
					r.MTU = binary.NativeEndian.Uint32(m[4:8])
				}
				m = m[rtaAlign(ml):]
			}
		}
		attrs = attrs[rtaAlign(l):]
	}
	p, err := netip.AddrFrom4(dst).Prefix(dstLen)
	if err != nil {
		return KRoute{}, false
	}
	r.Dst = p
	return r, true
}

// Dump lists the routes of one table and protocol in ns (<= 0: the
// caller's) through a socket of its own, for readers outside the loop
// (the debug API): it neither waits for the writers' lock nor holds it.
func Dump(ns netns.NsHandle, table uint32, proto uint8) ([]KRoute, error) {
	fd, err := nlsock.Open(ns, 0, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	k := &NetlinkKernel{fd: fd, rbuf: make([]byte, 256<<10)}
	var out []KRoute
	err = k.List(table, proto, func(r KRoute) { out = append(out, r) })
	return out, err
}
