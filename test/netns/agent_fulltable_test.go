//go:build linux

package nstest_test

// The full-table test (issue 9): a BGP peer ("feeder", eBGP, AS 65098) in
// its own namespace on the nodes' switch sends node-1's wren-agent a full
// Internet-sized IPv4 table, 1,000,000 prefixes outside every IPPool,
// packed as many NLRIs per UPDATE as fit, as fast as TCP takes them. The
// import policy must reject every one: none reaches a kernel, the agent
// keeps its PID, its session with node-2 and the pods' traffic. Then the
// BGPPeer gets maxPrefixes: 1000 (the edit re-creates the session) and the
// feeder floods again: the session survives exactly 1000 prefixes and is
// cut with a NOTIFICATION Cease, subcode 1 "maximum number of prefixes
// reached" (RFC 4486), once more arrive. The test logs the send and ingest
// times and the agent's RSS (VmHWM and VmRSS from /proc/<pid>/status).
//
// Test addresses: nodes 198.18.0.11-12/24 and the feeder 198.18.0.60/24
// on one switch, pods 10.244.0.0/16. The feeder's prefixes are in
// 240.0.0.0/4 (reserved, RFC 1112 section 4, routed nowhere): slot i is
// 240.0.0.0 + i*256 with length 24 + i mod 9, so 2^20 distinct /24.../32
// prefixes fit, all outside 10.244.0.0/16 and 198.18.0.0/15. They exist
// only as NLRI in the feeder's UPDATEs: nothing is sent to them, and the
// test fails if any reaches a kernel. The route watch's canary is a
// blackhole for 198.19.255.248/30 inside each node's namespace. Every
// socket lives in a namespace the test created; nothing is routed in the
// root namespace.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/internal/nsexec"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/routes"
	nstest "github.com/wren-net/wren/test/netns"
)

const (
	feederAS   = 65098
	feederAddr = "198.18.0.60"
	// fullTablePrefixes is the size of the feed: about today's IPv4
	// Internet table.
	fullTablePrefixes = 1_000_000
	// fullTableLimit is the BGPPeer's maxPrefixes in the second phase.
	fullTableLimit = 1000

	// ROUTE-REFRESH (RFC 2918); the other message types are
	// agent_malformed_test.go's msg* constants.
	feedRouteRefresh = 5
	// feedMaxMessage is the largest BGP message without RFC 8654.
	feedMaxMessage = 4096
)

var (
	feedSpace = netip.MustParsePrefix("240.0.0.0/4")
	feedPool  = netip.MustParsePrefix("10.244.0.0/16")
)

// feedPrefix is the feed's i-th prefix (see the top of the file).
func feedPrefix(i int) netip.Prefix {
	base := feedSpace.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) + uint32(i)<<8
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), 24+i%9)
}

// feedOpenMessage is the feeder's OPEN: AS 65098, hold time 90 s, BGP ID
// 198.18.0.60, capabilities IPv4 unicast, route refresh (the agent answers
// a ROUTE-REFRESH only from a peer that offered it) and 4-octet AS.
func feedOpenMessage() []byte {
	caps := []byte{1, 4, 0, 1, 0, 1, 2, 0, 65, 4, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(caps[len(caps)-4:], feederAS)
	params := append([]byte{2, byte(len(caps))}, caps...)
	body := []byte{4, 0, 0, 0, 90}
	binary.BigEndian.PutUint16(body[1:3], feederAS)
	body = append(body, netip.MustParseAddr(feederAddr).AsSlice()...)
	body = append(body, byte(len(params)))
	return bgpMsg(msgOpen, append(body, params...))
}

// feedAttrs are the path attributes of every feed UPDATE: ORIGIN IGP,
// AS_PATH 65098 (4-octet, both sides offered it), NEXT_HOP the feeder.
var feedAttrs = func() []byte {
	b := []byte{0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[9:13], feederAS)
	return append(b, append([]byte{0x40, 3, 4}, netip.MustParseAddr(feederAddr).AsSlice()...)...)
}()

// feedStream is prefixes [from, to) encoded as UPDATEs of at most
// feedMaxMessage octets, each with feedAttrs and as many NLRIs as fit.
type feedStream struct {
	buf  []byte
	ends []int // end offset of each message in buf
	upto []int // prefixes encoded up to the end of each message
}

func newFeedStream(from, to int) *feedStream {
	s := &feedStream{buf: make([]byte, 0, (to-from)*5)}
	head := 19 + 2 + 2 + len(feedAttrs)
	var nlri []byte
	flush := func(i int) {
		body := []byte{0, 0, 0, 0}
		binary.BigEndian.PutUint16(body[2:], uint16(len(feedAttrs)))
		body = append(append(body, feedAttrs...), nlri...)
		s.buf = append(s.buf, bgpMsg(msgUpdate, body)...)
		s.ends = append(s.ends, len(s.buf))
		s.upto = append(s.upto, i-from)
		nlri = nlri[:0]
	}
	for i := from; i < to; i++ {
		p := feedPrefix(i)
		a := p.Addr().As4()
		n := (p.Bits() + 7) / 8
		if head+len(nlri)+1+n > feedMaxMessage {
			flush(i)
		}
		nlri = append(append(nlri, byte(p.Bits())), a[:n]...)
	}
	if len(nlri) > 0 {
		flush(to)
	}
	return s
}

// feedNotice is a NOTIFICATION the agent sent.
type feedNotice struct {
	code, subcode byte
	at            time.Time
	written       int64 // prefixes the feeder had written when it arrived
}

// feedSession is the feeder's side of one established session.
type feedSession struct {
	conn    net.Conn
	wmu     sync.Mutex    // one writer at a time: the feed, keepalives, ROUTE-REFRESH
	written atomic.Int64  // prefixes of the current feed written so far
	adverts atomic.Int64  // UPDATEs with NLRI from the agent
	advert  chan struct{} // pulsed on each of them
	noticed chan struct{} // closed on the first NOTIFICATION
	done    chan struct{} // closed when the connection has ended

	mu     sync.Mutex
	notice *feedNotice
	endErr error
}

// feedHandshake reads the agent's OPEN, answers with OPEN and KEEPALIVE,
// waits for the agent's KEEPALIVE, then reads everything the agent sends
// and keeps the session alive with a KEEPALIVE every 5 s (a third of the
// shortest hold time the agent could negotiate with it here).
func feedHandshake(c net.Conn) (*feedSession, error) {
	if err := openSession(c, feedOpenMessage()); err != nil {
		return nil, err
	}
	s := &feedSession{conn: c, advert: make(chan struct{}, 1), noticed: make(chan struct{}), done: make(chan struct{})}
	go s.read()
	go func() {
		tick := time.NewTicker(5 * time.Second) // the protocol's keepalive timer, not a wait
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
				if s.write(bgpMsg(msgKeepalive, nil)) != nil {
					return
				}
			}
		}
	}()
	return s, nil
}

func (s *feedSession) read() {
	for {
		typ, body, err := readBGP(s.conn)
		if err != nil {
			s.mu.Lock()
			s.endErr = err
			s.mu.Unlock()
			close(s.done)
			return
		}
		switch typ {
		case msgUpdate:
			if len(body) < 4 {
				continue
			}
			wl := int(binary.BigEndian.Uint16(body[0:2]))
			if len(body) < 4+wl {
				continue
			}
			al := int(binary.BigEndian.Uint16(body[2+wl : 4+wl]))
			if len(body) > 4+wl+al {
				s.adverts.Add(1)
				select {
				case s.advert <- struct{}{}:
				default:
				}
			}
		case msgNotification:
			if len(body) < 2 {
				continue
			}
			s.mu.Lock()
			if s.notice == nil {
				s.notice = &feedNotice{code: body[0], subcode: body[1], at: time.Now(), written: s.written.Load()}
				close(s.noticed)
			}
			s.mu.Unlock()
		}
	}
}

func (s *feedSession) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.conn.Write(b)
	return err
}

// end describes how the session ended so far.
func (s *feedSession) end() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	if s.notice != nil {
		parts = append(parts, fmt.Sprintf("NOTIFICATION %d/%d", s.notice.code, s.notice.subcode))
	}
	select {
	case <-s.done:
		parts = append(parts, "connection closed ("+s.endErr.Error()+")")
	default:
	}
	if len(parts) == 0 {
		return "session up"
	}
	return strings.Join(parts, ", ")
}

// waitAdvert waits until the agent has sent an UPDATE with NLRI (its
// blocks): the session's initial advertisement, which fence relies on.
func (s *feedSession) waitAdvert(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for s.adverts.Load() == 0 {
		select {
		case <-s.advert:
		case <-s.done:
			return fmt.Errorf("session ended: %s", s.end())
		case <-timer.C:
			return fmt.Errorf("no UPDATE with NLRI from the agent within %s", d)
		}
	}
	return nil
}

// fence sends a ROUTE-REFRESH and waits for the agent's answer, its
// Adj-RIB-Out sent again. GoBGP handles a session's messages in order in
// one goroutine, so the answer proves that every UPDATE written before it
// has been read, parsed and run through the import policy.
func (s *feedSession) fence(d time.Duration) error {
	n := s.adverts.Load()
	if err := s.write(bgpMsg(feedRouteRefresh, []byte{0, 1, 0, 1})); err != nil {
		return fmt.Errorf("send ROUTE-REFRESH: %w", err)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for s.adverts.Load() <= n {
		select {
		case <-s.advert:
		case <-s.done:
			return fmt.Errorf("session ended before the ROUTE-REFRESH was answered: %s", s.end())
		case <-timer.C:
			return fmt.Errorf("ROUTE-REFRESH not answered within %s (%s)", d, s.end())
		}
	}
	return nil
}

// feed writes the stream in chunks of 64 messages, counting the prefixes
// written in s.written. It returns at the first write error.
func (s *feedSession) feed(st *feedStream) error {
	s.written.Store(0)
	off := 0
	for m := 63; ; m += 64 {
		m = min(m, len(st.ends)-1)
		if err := s.write(st.buf[off:st.ends[m]]); err != nil {
			return err
		}
		off = st.ends[m]
		s.written.Store(int64(st.upto[m]))
		if m == len(st.ends)-1 {
			return nil
		}
	}
}

// feederListener listens on the feeder's :179 (explicit peerings are
// dialled by the agent) and hands over node-1's connections.
type feederListener struct {
	t     *testing.T
	from  netip.Addr
	conns chan net.Conn
}

func listenFeeder(t *testing.T, ns *nstest.NS, from netip.Addr) *feederListener {
	t.Helper()
	var l net.Listener
	if err := nsexec.Do(ns.Handle, func() error {
		var err error
		l, err = net.Listen("tcp4", feederAddr+":179")
		return err
	}); err != nil {
		t.Fatalf("feeder: listen: %v", err)
	}
	fl := &feederListener{t: t, from: from, conns: make(chan net.Conn, 16)}
	go func() {
		defer close(fl.conns)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fl.conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close() // ends the accept loop, which closes conns
		for c := range fl.conns {
			c.Close()
		}
	})
	return fl
}

// accept completes the handshake on the agent's next connection.
func (fl *feederListener) accept(d time.Duration) *feedSession {
	t := fl.t
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case c, ok := <-fl.conns:
			if !ok {
				t.Fatal("feeder listener closed")
			}
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err != nil || ap.Addr() != fl.from {
				c.Close()
				continue
			}
			s, err := feedHandshake(c)
			if err != nil {
				t.Logf("feeder: handshake with %s failed (the agent retries): %v", c.RemoteAddr(), err)
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close() })
			return s
		case <-timeout:
			t.Fatalf("node-1's agent did not connect to the feeder within %s", d)
		}
	}
}

// outsideWatch records, from its start, every route added in a namespace
// that lies in the feed's space, or is Wren's and outside the pool.
type outsideWatch struct {
	ns      *nstest.NS
	updates chan netlink.RouteUpdate
	stop    chan struct{}
	canary  chan struct{}
	ended   chan struct{}

	mu    sync.Mutex
	count int
	first []string
}

// The canary route proves the watch has read every earlier update
// (nstest.RouteWatch uses 198.19.255.252/30 with protocol 200).
var outsideCanary = &net.IPNet{IP: net.IPv4(198, 19, 255, 248), Mask: net.CIDRMask(30, 32)}

const outsideCanaryProto = 201

func watchOutside(t *testing.T, ns *nstest.NS) *outsideWatch {
	t.Helper()
	w := &outsideWatch{ns: ns, updates: make(chan netlink.RouteUpdate, 1<<12), stop: make(chan struct{}),
		canary: make(chan struct{}, 1), ended: make(chan struct{})}
	if err := netlink.RouteSubscribeWithOptions(w.updates, w.stop, netlink.RouteSubscribeOptions{Namespace: &ns.Handle}); err != nil {
		t.Fatalf("watch routes in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { close(w.stop) })
	go func() {
		defer close(w.ended)
		for u := range w.updates {
			if u.Dst == nil {
				continue
			}
			if u.Type == unix.RTM_DELROUTE && u.Protocol == outsideCanaryProto && u.Dst.String() == outsideCanary.String() {
				select {
				case w.canary <- struct{}{}:
				default:
				}
				continue
			}
			d, ok := netip.AddrFromSlice(u.Dst.IP)
			if u.Type != unix.RTM_NEWROUTE || !ok {
				continue
			}
			d = d.Unmap()
			if feedSpace.Contains(d) || (u.Protocol == routes.Protocol && !feedPool.Contains(d)) {
				w.mu.Lock()
				w.count++
				if len(w.first) < 5 {
					w.first = append(w.first, fmt.Sprintf("%s proto %d type %d", u.Dst, u.Protocol, u.Route.Type))
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// check reads every update up to now and fails the test for each route
// added outside.
func (w *outsideWatch) check(t *testing.T, what string) {
	t.Helper()
	r := &netlink.Route{Dst: outsideCanary, Type: unix.RTN_BLACKHOLE, Protocol: outsideCanaryProto}
	if err := w.ns.NL.RouteAdd(r); err != nil {
		t.Fatalf("canary route in %s: %v", w.ns.Name, err)
	}
	if err := w.ns.NL.RouteDel(r); err != nil {
		t.Fatalf("canary route in %s: %v", w.ns.Name, err)
	}
	select {
	case <-w.canary:
	case <-w.ended:
		t.Fatalf("route watch on %s ended", w.ns.Name)
	case <-time.After(10 * time.Second):
		t.Fatalf("route watch on %s: the canary's deletion never arrived", w.ns.Name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count > 0 {
		t.Errorf("%s: %s's kernel got %d routes outside the pool or in %s, first %q", what, w.ns.Name, w.count, feedSpace, w.first)
	}
}

// kernelOutside is nil when no route in any table of n's kernel lies in
// the feed's space and every Wren route is inside the pool.
func kernelOutside(n *agentNode) (wren int, err error) {
	all, err := n.ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, err
	}
	for _, r := range all {
		if r.Dst == nil {
			continue
		}
		d, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		d = d.Unmap()
		if feedSpace.Contains(d) {
			return wren, fmt.Errorf("%s: kernel route %s (proto %d, table %d) in the feeder's %s", n.name, r.Dst, r.Protocol, r.Table, feedSpace)
		}
		if r.Protocol == routes.Protocol {
			wren++
			if !feedPool.Contains(d) {
				return wren, fmt.Errorf("%s: Wren route %s (table %d) outside the pool %s", n.name, r.Dst, r.Table, feedPool)
			}
		}
	}
	return wren, nil
}

// procMem returns a process's peak and current resident set size in
// bytes (VmHWM, VmRSS).
func procMem(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmHWM:":
			hwm = kb << 10
		case "VmRSS:":
			rss = kb << 10
		}
	}
	if hwm == 0 || rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmHWM or VmRSS", pid)
	}
	return hwm, rss, nil
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// fullTableDebug asks node's debug API for Status and Routes, with a
// timeout that allows for an agent holding a million rejected paths, and
// says how long it took.
func fullTableDebug(p *agentProc) (nstest.AgentBGP, time.Duration, error) {
	start := time.Now()
	v, err := nstest.DebugBGP(p.socket, time.Minute)
	return v, time.Since(start), err
}

// TestAgentFullTable: see the top of the file.
func TestAgentFullTable(t *testing.T) {
	testStart := time.Now()
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	ac.pool(v1alpha1.EncapNever)
	n1, p1 := ac.addBinaryNodeInNS("node-1", ac.sw1, "198.18.0.11/24", bin)
	n2, p2 := ac.addBinaryNodeInNS("node-2", ac.sw1, "198.18.0.12/24", bin)
	t.Cleanup(func() {
		if t.Failed() {
			ac.dumpBGPState()
		}
	})
	pod1, _ := ac.addBinaryPod(n1, p1, "node-1-web")
	pod2, _ := ac.addBinaryPod(n2, p2, "node-2-web")
	ac.pingMatrix(30 * time.Second)
	ac.assertBGPRoutes("BGP routes match the API on both nodes")

	// Encoded before any clock starts: the feed measures TCP and the
	// agent, not the encoder.
	full := newFeedStream(0, fullTablePrefixes)
	upToLimit, beyond := newFeedStream(0, fullTableLimit), newFeedStream(fullTableLimit, fullTablePrefixes)
	t.Logf("feed: %d prefixes (/24.../32 in %s) in %d UPDATEs, %.1f MiB", fullTablePrefixes, feedSpace, len(full.ends), float64(len(full.buf))/(1<<20))

	feederNS := nstest.New(t, "feeder")
	ac.sw1.Attach(t, feederNS, "eth0", feederAddr+"/24", 0)
	fl := listenFeeder(t, feederNS, n1.ip.Addr())
	// Peering with node-1 only: node-2 is the witness whose session with
	// node-1 must not suffer.
	as := v1alpha1.ASNumber(feederAS)
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "feeder"},
		Spec: v1alpha1.BGPPeerSpec{Node: "node-1", PeerIP: feederAddr, ASNumber: &as}}
	ctx := context.Background()
	if err := ac.c.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	s1 := fl.accept(60 * time.Second)
	if err := s1.waitAdvert(30 * time.Second); err != nil {
		t.Fatalf("feeder session 1: %v", err)
	}

	pid := p1.cmd.Process.Pid
	node2 := n2.ip.Addr().String()
	dbg, err := p1.bgpDebug()
	if err != nil {
		t.Fatal(err)
	}
	n2Before, ok := dbg.Peer(node2)
	if !ok || n2Before.GetState() != "established" {
		t.Fatalf("node-1's session with node-2 before the feed: %+v", n2Before)
	}
	if f, ok := dbg.Peer(feederAddr); !ok || f.GetState() != "established" {
		t.Fatalf("node-1's session with the feeder before the feed: %+v", f)
	}
	hwm0, rss0, err := procMem(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node-1's agent (pid %d) before the feed: VmHWM %s, VmRSS %s", pid, mib(hwm0), mib(rss0))

	// The state that must hold throughout: no Wren route deleted, none
	// added outside the pool, pods pinging both ways every 50 ms.
	w1, w2 := watchRoutes(t, n1.ns), watchRoutes(t, n2.ns)
	o1, o2 := watchOutside(t, n1.ns), watchOutside(t, n2.ns)
	pingers := map[string]*nstest.Pinger{}
	for name, pair := range map[string][2]*agentPod{"node-1 -> node-2": {pod1, pod2}, "node-2 -> node-1": {pod2, pod1}} {
		pg, err := nstest.StartPinger(pair[0].ns.Handle, pair[1].ip, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Stop() })
		pingers[name] = pg
	}
	// unharmed checks what must hold after each phase.
	unharmed := func(phase string) {
		t.Helper()
		select {
		case <-p1.exited:
			t.Fatalf("%s: node-1's agent exited: %s", phase, p1.cmd.ProcessState)
		default:
		}
		if p1.cmd.Process.Pid != pid {
			t.Errorf("%s: node-1's agent PID changed from %d to %d", phase, pid, p1.cmd.Process.Pid)
		}
		for _, n := range ac.nodes {
			if wren, err := kernelOutside(n); err != nil {
				t.Errorf("%s: %v", phase, err)
			} else {
				t.Logf("%s: %s's kernel has %d Wren routes, all inside %s, none in %s", phase, n.name, wren, feedPool, feedSpace)
			}
		}
		o1.check(t, phase)
		o2.check(t, phase)
		for _, d := range append(w1.deletions(t), w2.deletions(t)...) {
			t.Errorf("%s: a node deleted its route %s", phase, d)
		}
		for name, pg := range pingers {
			st := pg.Stats()
			if len(st.Lost) > 0 || st.Received == 0 {
				t.Errorf("%s: pod ping %s: %s", phase, name, st)
			} else {
				t.Logf("%s: pod ping %s every 50 ms: %s", phase, name, st)
			}
		}
		ac.assertBGPRoutes(phase + ": BGP routes match the API on both nodes")
	}
	// node2Kept checks node-1's session with node-2 in what the debug API
	// says.
	node2Kept := func(phase string, v nstest.AgentBGP) {
		t.Helper()
		if n2, ok := v.Peer(node2); !ok || n2.GetState() != "established" || !nstest.PeerSince(n2).Equal(nstest.PeerSince(n2Before)) {
			t.Errorf("%s: node-1's session with node-2 is %+v; want established since %s", phase, n2, nstest.PeerSince(n2Before))
		}
	}

	// Phase 1: the full table, no limit.
	start := time.Now()
	if err := s1.feed(full); err != nil {
		t.Fatalf("feed: after %d prefixes: %v (%s)", s1.written.Load(), err, s1.end())
	}
	sent := time.Since(start)
	if err := s1.write(bgpMsg(msgUpdate, []byte{0, 0, 0, 0})); err != nil { // End-of-RIB (RFC 4724)
		t.Fatalf("End-of-RIB: %v", err)
	}
	if err := s1.fence(2 * time.Minute); err != nil {
		t.Fatalf("after the feed: %v", err)
	}
	ingested := time.Since(start)
	t.Logf("phase 1: %d prefixes written in %s; the agent had read and filtered them all %s after the first (%.0f prefixes/s)",
		fullTablePrefixes, sent.Round(time.Millisecond), ingested.Round(time.Millisecond), fullTablePrefixes/ingested.Seconds())
	hwm1, rss1, err := procMem(pid)
	if err != nil {
		t.Fatalf("node-1's agent after the feed: %v", err)
	}
	t.Logf("phase 1: node-1's agent holding %d rejected paths: VmHWM %s, VmRSS %s (before the feed %s)", fullTablePrefixes, mib(hwm1), mib(rss1), mib(rss0))

	v, took, err := fullTableDebug(p1)
	if err != nil {
		t.Fatalf("node-1's debug API after the feed (%s): %v", took, err)
	}
	hwm1b, rss1b, _ := procMem(pid)
	t.Logf("phase 1: node-1's debug API (Status and Routes) took %s (GoBGP counts the feeder's Adj-RIB-In for it); the agent's VmHWM %s, VmRSS %s after it",
		took.Round(time.Millisecond), mib(hwm1b), mib(rss1b))
	// Rejected is received minus accepted by the import policy (GoBGP's
	// counters).
	if f, ok := v.Peer(feederAddr); !ok || f.GetState() != "established" || f.GetReceived() != fullTablePrefixes || f.GetRejected() != fullTablePrefixes {
		t.Errorf("phase 1: node-1's session with the feeder: %+v; want established, %d received, %d rejected", f, fullTablePrefixes, fullTablePrefixes)
	} else {
		t.Logf("phase 1: feeder session established, %d received, %d rejected by the import policy", f.GetReceived(), f.GetRejected())
	}
	node2Kept("phase 1", v)
	for _, l := range v.Learned {
		if p, err := netip.ParsePrefix(strings.Fields(l)[0]); err != nil || !feedPool.Contains(p.Addr()) {
			t.Errorf("phase 1: node-1 learned %q, outside the pool", l)
		}
	}
	if s1.end() != "session up" {
		t.Errorf("phase 1: the feeder's session: %s", s1.end())
	}
	unharmed("phase 1")

	// Phase 2: maxPrefixes 1000. The edit re-creates the session, which
	// drops the million rejected paths; the new session is cut once the
	// feeder has sent more than 1000.
	resetHWM := func() {
		t.Helper()
		// "5" resets the peak RSS to the current RSS (proc(5), Linux 4.0).
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("reset node-1's agent's VmHWM: %v", err)
		}
	}
	resetHWM()
	if err := ac.c.Get(ctx, keyOf("feeder"), peer); err != nil {
		t.Fatal(err)
	}
	limit := int32(fullTableLimit)
	peer.Spec.MaxPrefixes = &limit
	edited := time.Now()
	if err := ac.c.Update(ctx, peer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s1.done:
		t.Logf("phase 2: session 1 ended %s after the edit: %s", time.Since(edited).Round(time.Millisecond), s1.end())
	case <-time.After(60 * time.Second):
		t.Fatalf("phase 2: the BGPPeer edit did not end session 1 within 60 s: %s", s1.end())
	}
	s2 := fl.accept(60 * time.Second)
	if err := s2.waitAdvert(30 * time.Second); err != nil {
		t.Fatalf("feeder session 2: %v", err)
	}
	t.Logf("phase 2: session 2 established %s after the edit", time.Since(edited).Round(time.Millisecond))
	hwm2a, rss2a, _ := procMem(pid)
	t.Logf("phase 2: node-1's agent while the session was re-created (the million paths dropped): VmHWM %s; VmRSS %s now", mib(hwm2a), mib(rss2a))
	resetHWM()

	// Exactly the limit is allowed: the session is up after it.
	if err := s2.feed(upToLimit); err != nil {
		t.Fatalf("phase 2: the first %d prefixes: %v (%s)", fullTableLimit, err, s2.end())
	}
	if err := s2.fence(30 * time.Second); err != nil {
		t.Fatalf("phase 2: with exactly %d prefixes sent: %v", fullTableLimit, err)
	}
	// One more is too many. The flood goes on until the agent closes.
	start = time.Now()
	fed := make(chan error, 1)
	go func() { fed <- s2.feed(beyond) }()
	var notice *feedNotice
	select {
	case <-s2.noticed:
		s2.mu.Lock()
		notice = s2.notice
		s2.mu.Unlock()
	case <-s2.done:
		t.Fatalf("phase 2: the agent closed the session without a NOTIFICATION: %s", s2.end())
	case <-time.After(30 * time.Second):
		t.Fatalf("phase 2: no NOTIFICATION within 30 s of prefix %d; %d more written (%s)", fullTableLimit+1, s2.written.Load(), s2.end())
	}
	if notice.code != 6 || notice.subcode != 1 {
		t.Errorf("phase 2: NOTIFICATION %d/%d; want 6/1 (Cease, maximum number of prefixes reached)", notice.code, notice.subcode)
	}
	t.Logf("phase 2: NOTIFICATION %d/%d %s after prefix %d was written (the feeder had written %d beyond the limit, most still in socket buffers)",
		notice.code, notice.subcode, notice.at.Sub(start).Round(time.Millisecond), fullTableLimit+1, notice.written)
	select {
	case <-s2.done:
	case <-time.After(10 * time.Second):
		t.Errorf("phase 2: the agent did not close the connection within 10 s of its NOTIFICATION")
	}
	s2.conn.Close() // ends the feed if it still writes
	if err := <-fed; err == nil {
		t.Logf("phase 2: the feeder wrote all %d prefixes before the close", fullTablePrefixes-fullTableLimit)
	} else {
		t.Logf("phase 2: the feeder's writes failed after %d more prefixes: %v", s2.written.Load(), err)
	}
	hwm2, rss2, err := procMem(pid)
	if err != nil {
		t.Fatalf("node-1's agent after the cut: %v", err)
	}
	t.Logf("phase 2: node-1's agent during the flood and the cut: VmHWM %s, VmRSS %s after the cut", mib(hwm2), mib(rss2))

	// The connection closes right after the NOTIFICATION; GoBGP's own
	// state follows a moment later.
	nstest.PollEvery(t, 100*time.Millisecond, 10*time.Second, "node-1's debug API shows the feeder's session down", func() error {
		v, _, err = fullTableDebug(p1)
		if err != nil {
			return err
		}
		if f, ok := v.Peer(feederAddr); !ok || f.GetState() == "established" {
			return fmt.Errorf("session with the feeder: %+v", f)
		}
		return nil
	})
	node2Kept("phase 2", v)
	unharmed("phase 2")

	// The limit keeps the session down: the agent does not dial again.
	// An absence needs a window: two and a half connect-retry intervals
	// (5 s, pkg/bgpspeaker's default), with the pings still running.
	const window = 12500 * time.Millisecond
	select {
	case c, ok := <-fl.conns:
		if !ok {
			t.Fatal("feeder listener closed")
		}
		t.Errorf("phase 2: node-1's agent connected to the feeder again (%s) after the cut", c.RemoteAddr())
		c.Close()
	case <-time.After(window):
	}
	v, _, err = fullTableDebug(p1)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := v.Peer(feederAddr); !ok || f.GetState() == "established" {
		t.Errorf("phase 2: %s after the cut node-1's session with the feeder is %+v; want it down", window, f)
	} else {
		t.Logf("phase 2: %s after the cut node-1's session with the feeder is %s (no reconnect)", window, f.GetState())
	}
	node2Kept("phase 2, after the window", v)
	hwm3, rss3, _ := procMem(pid)
	t.Logf("phase 2: node-1's agent %s after the cut: VmRSS %s (VmHWM since session 2 %s)", window, mib(rss3), mib(hwm3))
	if len(logLinesContaining(t, p1.log, "prefix limit reached")) == 0 {
		t.Errorf("phase 2: node-1's agent did not log the prefix limit")
	}
	for name, pg := range pingers {
		if st := pg.Stop(); len(st.Lost) > 0 {
			t.Errorf("pod ping %s over both phases: %s", name, st)
		} else {
			t.Logf("pod ping %s over both phases: %s", name, st)
		}
	}
	t.Logf("full-table test took %s", time.Since(testStart).Round(time.Millisecond))
}

// logLinesContaining returns the agent log's lines that contain s.
func logLinesContaining(t *testing.T, path, s string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
