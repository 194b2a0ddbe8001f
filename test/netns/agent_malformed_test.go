//go:build linux

package nstest_test

// Bad input from the network: a hostile BGP peer. The test runs a small
// raw-socket BGP speaker ("attacker", AS 65099) in its own namespace on the
// nodes' switch, makes node-1's wren-agent peer with it through a BGPPeer,
// and sends, one per session, UPDATE messages that GoBGP v3.37.0's public
// advisories (GHSA-4p9m-8gc4-rw2h and others) are about. For each it
// records what the agent does: NOTIFICATION or not, same PID or crash,
// panic in the log, kernel routes kept, pod ping, session to node-2. A
// crash must leave the kernel routes in place, and a restarted agent (the
// test restarts it, as the kubelet would) must recover. SECURITY.md has
// the results.
//
// Test addresses: nodes 198.18.0.11-12/24 and the attacker 198.18.0.50/24
// on one switch, pods 10.244.0.0/16; the attacker announces prefixes in
// 10.244.200.0/21 (inside the pool, so the import policy accepts them).
// Every socket lives in a namespace the test created; nothing is routed in
// the root namespace.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wren-net/wren/internal/nsexec"
	"github.com/wren-net/wren/pkg/agent"
	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	nstest "github.com/wren-net/wren/test/netns"
)

const (
	attackerAS   = 65099
	attackerAddr = "198.18.0.50"
	bgpMarker    = 0xff

	msgOpen         = 1
	msgUpdate       = 2
	msgNotification = 3
	msgKeepalive    = 4

	attrFlagOptional   = 0x80
	attrFlagTransitive = 0x40

	attrOrigin   = 1
	attrASPath   = 2
	attrNextHop  = 3
	attrMPReach  = 14
	attrAS4Path  = 17
	asPathSeq    = 2
	capMP        = 1
	capFourOctet = 65
)

// bgpMsg frames a BGP message: marker, length, type, body.
func bgpMsg(typ byte, body []byte) []byte {
	b := make([]byte, 19, 19+len(body))
	for i := range 16 {
		b[i] = bgpMarker
	}
	binary.BigEndian.PutUint16(b[16:18], uint16(19+len(body)))
	b[18] = typ
	return append(b, body...)
}

// bgpOpen is the attacker's OPEN: version 4, AS 65099, hold 90 s, BGP ID
// 198.18.0.50, IPv4 unicast and (if fourOctet) the 4-octet AS capability.
func bgpOpen(fourOctet bool) []byte {
	caps := []byte{capMP, 4, 0, 1, 0, 1} // AFI 1 (IPv4), reserved, SAFI 1 (unicast)
	if fourOctet {
		caps = append(caps, capFourOctet, 4, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(caps[len(caps)-4:], attackerAS)
	}
	params := append([]byte{2, byte(len(caps))}, caps...) // parameter type 2: capabilities
	body := []byte{4, 0, 0, 0, 90}
	binary.BigEndian.PutUint16(body[1:3], attackerAS)
	body = append(body, netip.MustParseAddr(attackerAddr).AsSlice()...)
	body = append(body, byte(len(params)))
	return bgpMsg(msgOpen, append(body, params...))
}

// attr encodes one path attribute with a one-octet length field that
// says declared, whatever the value's real size.
func attr(flags, typ byte, declared int, value ...byte) []byte {
	return append([]byte{flags, typ, byte(declared)}, value...)
}

func wellKnown(typ byte, value ...byte) []byte {
	return attr(attrFlagTransitive, typ, len(value), value...)
}

// asSeq is an AS_SEQUENCE segment of the given ASes, size octets each,
// whose count octet says count.
func asSeq(count, size int, ases ...uint32) []byte {
	b := []byte{asPathSeq, byte(count)}
	for _, as := range ases {
		if size == 2 {
			b = binary.BigEndian.AppendUint16(b, uint16(as))
		} else {
			b = binary.BigEndian.AppendUint32(b, as)
		}
	}
	return b
}

func nlri24(p string) []byte {
	a := netip.MustParsePrefix(p).Addr().As4()
	return []byte{24, a[0], a[1], a[2]}
}

// bgpUpdate is an UPDATE with no withdrawn routes; attrLen < 0 means the
// real length of attrs.
func bgpUpdate(attrLen int, attrs []byte, nlri []byte) []byte {
	if attrLen < 0 {
		attrLen = len(attrs)
	}
	body := []byte{0, 0, 0, 0}
	binary.BigEndian.PutUint16(body[2:], uint16(attrLen))
	body = append(body, attrs...)
	return bgpMsg(msgUpdate, append(body, nlri...))
}

var (
	attackerNH = netip.MustParseAddr(attackerAddr).AsSlice()
	origin     = wellKnown(attrOrigin, 0) // IGP
	asPath4    = wellKnown(attrASPath, asSeq(1, 4, attackerAS)...)
	nextHop    = wellKnown(attrNextHop, attackerNH...)
)

// goodPrefix is announced well-formed on every session, so each session
// is proven to work before the malformed UPDATE.
const goodPrefix = "10.244.200.0/24"

// malformedVariant is one malformed UPDATE, sent on its own session.
type malformedVariant struct {
	name      string
	prefix    string // the prefix it tries to announce
	fourOctet bool   // the attacker's OPEN offers 4-octet AS numbers
	what      string
	update    func() []byte
}

func malformedVariants() []malformedVariant {
	cat := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	return []malformedVariant{{
		name: "nexthop-len-3", prefix: "10.244.201.0/24", fourOctet: true,
		what: "NEXT_HOP of length 3 (GHSA-4p9m-8gc4-rw2h), after ORIGIN and AS_PATH",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, wellKnown(attrNextHop, attackerNH[:3]...)), nlri24("10.244.201.0/24"))
		},
	}, {
		name: "nexthop-len-3-first", prefix: "10.244.202.0/24", fourOctet: true,
		what: "NEXT_HOP of length 3 before ORIGIN and AS_PATH (the advisory's order)",
		update: func() []byte {
			return bgpUpdate(-1, cat(wellKnown(attrNextHop, attackerNH[:3]...), origin, asPath4), nlri24("10.244.202.0/24"))
		},
	}, {
		name: "nexthop-len-1", prefix: "10.244.203.0/24", fourOctet: true,
		what: "NEXT_HOP of length 1, the last attribute",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, wellKnown(attrNextHop, attackerNH[:1]...)), nlri24("10.244.203.0/24"))
		},
	}, {
		name: "attr-len-overrun", prefix: "", fourOctet: true,
		what: "last attribute (NEXT_HOP) declares 40 octets, 4 follow (truncated attribute)",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, attr(attrFlagTransitive, attrNextHop, 40, attackerNH...)), nil)
		},
	}, {
		name: "total-attr-len-short", prefix: "10.244.204.0/24", fourOctet: true,
		what: "total path attribute length ends inside AS_PATH (attribute scan underflows into the NLRI)",
		update: func() []byte {
			return bgpUpdate(len(origin)+3, cat(origin, asPath4, nextHop), nlri24("10.244.204.0/24"))
		},
	}, {
		name: "aspath-seg-overrun", prefix: "10.244.205.0/24", fourOctet: true,
		what: "AS_PATH segment count 10 with one AS in the attribute",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, wellKnown(attrASPath, asSeq(10, 4, attackerAS)...), nextHop), nlri24("10.244.205.0/24"))
		},
	}, {
		name: "mpreach-nh-len-3", prefix: "10.244.206.0/24", fourOctet: true,
		what: "MP_REACH_NLRI IPv4 unicast with next-hop length 3",
		update: func() []byte {
			mp := cat([]byte{0, 1, 1, 3}, attackerNH[:3], []byte{0}, nlri24("10.244.206.0/24"))
			return bgpUpdate(-1, cat(origin, asPath4, attr(attrFlagOptional, attrMPReach, len(mp), mp...)), nil)
		},
	}, {
		name: "as4path-before-aspath", prefix: "10.244.207.0/24", fourOctet: false,
		what: "2-octet-AS session: AS4_PATH first, AS_PATH (2 ASes) last (UpdatePathAttrs4ByteAs index shift)",
		update: func() []byte {
			as4 := attr(attrFlagOptional|attrFlagTransitive, attrAS4Path, 6, asSeq(1, 4, attackerAS)...)
			as2 := wellKnown(attrASPath, asSeq(2, 2, attackerAS, attackerAS)...)
			return bgpUpdate(-1, cat(as4, origin, nextHop, as2), nlri24("10.244.207.0/24"))
		},
	}}
}

// bgpEvent is one message the agent sent, or the end of the connection.
type bgpEvent struct {
	typ           byte
	code, subcode byte
	err           error // read error: EOF or reset
}

func (e bgpEvent) String() string {
	switch {
	case e.err != nil:
		return "connection closed (" + e.err.Error() + ")"
	case e.typ == msgNotification:
		return fmt.Sprintf("NOTIFICATION %d/%d (%s)", e.code, e.subcode, notificationName(e.code, e.subcode))
	default:
		return fmt.Sprintf("message type %d", e.typ)
	}
}

func notificationName(code, sub byte) string {
	switch code {
	case 1:
		return "message header error"
	case 2:
		return "OPEN message error"
	case 3:
		if n, ok := map[byte]string{1: "malformed attribute list", 2: "unrecognized well-known attribute", 3: "missing well-known attribute",
			4: "attribute flags error", 5: "attribute length error", 6: "invalid ORIGIN", 8: "invalid NEXT_HOP", 9: "optional attribute error",
			10: "invalid network field", 11: "malformed AS_PATH"}[sub]; ok {
			return "UPDATE message error: " + n
		}
		return "UPDATE message error"
	case 4:
		return "hold timer expired"
	case 5:
		return "FSM error"
	case 6:
		return "cease"
	}
	return "unknown"
}

// readBGP reads one message and returns its type and body.
func readBGP(r io.Reader) (byte, []byte, error) {
	var h [19]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	l := int(binary.BigEndian.Uint16(h[16:18]))
	if l < 19 || l > 4096 {
		return 0, nil, fmt.Errorf("bad BGP length %d", l)
	}
	body := make([]byte, l-19)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h[18], body, nil
}

// attackerSession is one accepted connection from the agent.
type attackerSession struct {
	conn      net.Conn
	fourOctet bool
	events    chan bgpEvent // everything after the handshake, then the end
}

// handshake reads the agent's OPEN, answers with OPEN and KEEPALIVE, waits
// for the agent's KEEPALIVE (the session is then established on both
// sides) and starts a reader that reports what the agent sends.
func handshake(c net.Conn, fourOctet bool) (*attackerSession, error) {
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	typ, _, err := readBGP(c)
	if err != nil || typ != msgOpen {
		return nil, fmt.Errorf("agent's OPEN: type %d, %v", typ, err)
	}
	if _, err := c.Write(append(bgpOpen(fourOctet), bgpMsg(msgKeepalive, nil)...)); err != nil {
		return nil, err
	}
	for {
		typ, body, err := readBGP(c)
		if err != nil {
			return nil, fmt.Errorf("waiting for the agent's KEEPALIVE: %w", err)
		}
		if typ == msgNotification && len(body) >= 2 {
			return nil, fmt.Errorf("agent refused the OPEN: %s", bgpEvent{typ: typ, code: body[0], subcode: body[1]})
		}
		if typ == msgKeepalive {
			break
		}
	}
	_ = c.SetDeadline(time.Time{})
	s := &attackerSession{conn: c, fourOctet: fourOctet, events: make(chan bgpEvent, 64)}
	go func() {
		defer close(s.events)
		for {
			typ, body, err := readBGP(c)
			if err != nil {
				s.events <- bgpEvent{err: err}
				return
			}
			e := bgpEvent{typ: typ}
			if typ == msgNotification && len(body) >= 2 {
				e.code, e.subcode = body[0], body[1]
			}
			select {
			case s.events <- e:
			default: // UPDATEs and KEEPALIVEs nobody reads
			}
		}
	}()
	return s, nil
}

// waitEnd waits up to d for a NOTIFICATION or the end of the connection.
func (s *attackerSession) waitEnd(d time.Duration) (notif *bgpEvent, closed bool) {
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return notif, true
			}
			if e.typ == msgNotification {
				n := e
				notif = &n
			}
			if e.err != nil {
				return notif, true
			}
		case <-timeout:
			return notif, false
		}
	}
}

func learned(v agent.BGPView, prefix string) bool {
	return slices.ContainsFunc(v.Learned, func(l string) bool { return strings.HasPrefix(l, prefix+" ") })
}

// logFrom returns the lines the agent logged from byte offset off on.
func logFrom(t *testing.T, path string, off int64) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out
}

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// attackerRange holds every prefix the attacker announces; the routes to
// them come and go with its sessions.
var attackerRange = netip.MustParsePrefix("10.244.200.0/21")

// deletionsOutsideAttacker is routeWatch.deletions without the attacker's
// own prefixes.
func deletionsOutsideAttacker(t *testing.T, w *routeWatch) []string {
	var out []string
	for _, d := range w.deletions(t) {
		if p, err := netip.ParsePrefix(strings.Fields(d)[0]); err == nil && attackerRange.Contains(p.Addr()) {
			continue
		}
		out = append(out, d)
	}
	return out
}

type malformedOutcome struct {
	variant      string
	reply        string // NOTIFICATION, kept, closed without NOTIFICATION
	accepted     bool   // the malformed prefix was learned
	goodKept     string // the earlier well-formed prefix is still learned
	crashed      string // "" or the exit status
	panicLine    string
	routesKept   bool
	pingOK       bool
	node2Session string // "kept", "reset" or "-" after a crash
	recovered    string // after a crash: the restarted agent's result
	logLine      string // the agent's own account (first WARN/ERROR)
}

// TestAgentMalformedUpdate: see the top of the file.
func TestAgentMalformedUpdate(t *testing.T) {
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
	ac.addBinaryPod(n1, p1, "node-1-web")
	ac.addBinaryPod(n2, p2, "node-2-web")
	ac.pingMatrix(30 * time.Second)
	ac.assertBGPRoutes("BGP routes match the API on both nodes")

	// The attacker: its own namespace on the switch, listening on :179
	// (node-1's agent is the active side of an explicit peering).
	att := nstest.New(t, "attacker")
	ac.sw1.Attach(t, att, "eth0", attackerAddr+"/24", 0)
	var l net.Listener
	if err := nsexec.Do(att.Handle, func() error {
		var err error
		l, err = net.Listen("tcp4", attackerAddr+":179")
		return err
	}); err != nil {
		t.Fatalf("attacker: listen: %v", err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(conns)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close() // ends the accept loop, which closes conns
		for c := range conns {
			c.Close()
		}
	})
	// Peering with node-1 only: node-2 stays the witness whose session
	// with node-1 must not suffer.
	as := v1alpha1.ASNumber(attackerAS)
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "attacker"},
		Spec: v1alpha1.BGPPeerSpec{Node: "node-1", PeerIP: attackerAddr, ASNumber: &as}}
	if err := ac.c.Create(context.Background(), peer); err != nil {
		t.Fatal(err)
	}

	w1, w2 := watchRoutes(t, n1.ns), watchRoutes(t, n2.ns)
	node2 := n2.ip.Addr().String()

	// accept takes the agent's next connection and completes the
	// handshake, closing connections from anyone else.
	accept := func(fourOctet bool, deadline time.Duration) *attackerSession {
		t.Helper()
		timeout := time.After(deadline)
		for {
			select {
			case c, ok := <-conns:
				if !ok {
					t.Fatal("attacker listener closed")
				}
				if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err != nil || ap.Addr() != n1.ip.Addr() {
					c.Close()
					continue
				}
				s, err := handshake(c, fourOctet)
				if err != nil {
					t.Logf("attacker: handshake with %s failed (agent retries): %v", c.RemoteAddr(), err)
					c.Close()
					continue
				}
				t.Cleanup(func() { c.Close() })
				return s
			case <-timeout:
				t.Fatalf("node-1's agent did not connect to the attacker within %s", deadline)
			}
		}
	}
	// announceGood sends the well-formed UPDATE and waits until node-1
	// has learned the prefix and routes it via the attacker.
	announceGood := func(s *attackerSession) {
		t.Helper()
		if _, err := s.conn.Write(bgpUpdate(-1, slices.Concat(origin, asPath4Or2(s), nextHop), nlri24(goodPrefix))); err != nil {
			t.Fatalf("attacker: send the good UPDATE: %v", err)
		}
		nstest.Poll(t, 10*time.Second, "node-1 learns "+goodPrefix+" from the attacker and routes it", func() error {
			v, err := p1.bgpDebug()
			if err != nil {
				return err
			}
			if !learned(v, goodPrefix) {
				return fmt.Errorf("/debug/bgp learned: %v", v.Learned)
			}
			rs, err := n1.ns.Run(context.Background(), "ip", "route", "show", goodPrefix)
			if err != nil {
				return err
			}
			if !strings.Contains(rs, "via "+attackerAddr) {
				return fmt.Errorf("node-1 route to %s: %q", goodPrefix, rs)
			}
			return nil
		})
	}

	var outcomes []malformedOutcome
	for i, v := range malformedVariants() {
		s := accept(v.fourOctet, 60*time.Second)
		announceGood(s)
		if i == 0 {
			t.Logf("attacker session established; node-1 learned %s via %s", goodPrefix, attackerAddr)
		}
		dbg, err := p1.bgpDebug()
		if err != nil {
			t.Fatal(err)
		}
		n2Before, ok := peerView(dbg, node2)
		if !ok || n2Before.State != "established" {
			t.Fatalf("node-1's session with node-2 before %s: %+v", v.name, n2Before)
		}
		pid := p1.cmd.Process.Pid
		off := logSize(t, p1.log)

		o := malformedOutcome{variant: v.name, node2Session: "-", recovered: "-"}
		if _, err := s.conn.Write(v.update()); err != nil {
			t.Fatalf("%s: send: %v", v.name, err)
		}
		notif, closed := s.waitEnd(5 * time.Second)
		switch {
		case notif != nil:
			o.reply = notif.String()
		case closed:
			o.reply = "connection closed, no NOTIFICATION"
		default:
			o.reply = "session kept"
		}
		select {
		case <-p1.exited:
			o.crashed = p1.cmd.ProcessState.String()
		case <-time.After(500 * time.Millisecond):
		}
		for _, line := range logFrom(t, p1.log, off) {
			if o.panicLine == "" && (strings.HasPrefix(line, "panic:") || strings.Contains(line, "runtime error")) {
				o.panicLine = line
			}
			if o.logLine == "" && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
				o.logLine = line
			}
		}

		o.goodKept = "-"
		if o.crashed == "" {
			if dbg, err := p1.bgpDebug(); err == nil {
				o.accepted = v.prefix != "" && learned(dbg, v.prefix)
				o.goodKept = fmt.Sprint(learned(dbg, goodPrefix))
			}
			if dbg, err := p1.bgpDebug(); err != nil {
				t.Errorf("%s: /debug/bgp after the malformed UPDATE: %v", v.name, err)
			} else if n2, ok := peerView(dbg, node2); ok && n2.State == "established" && n2.Since.Equal(n2Before.Since) {
				o.node2Session = "kept"
			} else {
				o.node2Session = fmt.Sprintf("reset (%+v)", n2)
				t.Errorf("%s: node-1's session with node-2 did not survive: %+v (before %+v)", v.name, n2, n2Before)
			}
			if p1.cmd.Process.Pid != pid {
				t.Errorf("%s: agent PID changed", v.name)
			}
		}

		// Kernel routes: no Wren route other than the attacker's went away,
		// on either node, and both nodes still route each other's blocks.
		dels := append(deletionsOutsideAttacker(t, w1), deletionsOutsideAttacker(t, w2)...)
		o.routesKept = len(dels) == 0
		for _, d := range dels {
			t.Errorf("%s: a node deleted its route %s", v.name, d)
		}
		for _, n := range ac.nodes {
			if err := ac.checkBGPRoutesIgnoring(n, attackerRange, netip.MustParseAddr(attackerAddr)); err != nil {
				o.routesKept = false
				t.Errorf("%s: %v", v.name, err)
			}
		}
		o.pingOK = pingOnce(ac) == nil

		if o.crashed != "" {
			t.Logf("%s: node-1's agent (pid %d) died: %s; %s", v.name, pid, o.crashed, o.panicLine)
			// The orchestrator's part: start it again. It must become
			// ready, keep the routes and the pods reachable. Readiness
			// waits for the attacker's session during the first 30 s,
			// so a benign attacker session serves it meanwhile.
			p1.start()
			benign := make(chan *attackerSession, 1)
			go func() {
				defer close(benign)
				select {
				case c, ok := <-conns:
					if !ok {
						return
					}
					if s, err := handshake(c, true); err == nil {
						benign <- s
					} else {
						c.Close()
					}
				case <-time.After(45 * time.Second):
				}
			}()
			ready := p1.waitReady(45 * time.Second)
			p1.checkInNS()
			if b, ok := <-benign; ok && b != nil {
				b.conn.Close()
			}
			dels := append(deletionsOutsideAttacker(t, w1), deletionsOutsideAttacker(t, w2)...)
			for _, d := range dels {
				t.Errorf("%s: a node deleted its route %s across the crash and restart", v.name, d)
			}
			ac.assertBGPRoutesIgnoring("routes after the restart of node-1's agent", attackerRange, netip.MustParseAddr(attackerAddr))
			ac.pingMatrix(10 * time.Second)
			o.recovered = fmt.Sprintf("pid %d ready in %s, %d route deletions, ping ok", p1.cmd.Process.Pid, ready.Round(time.Millisecond), len(dels))
		} else if !o.pingOK {
			t.Errorf("%s: pod ping failed after the malformed UPDATE", v.name)
		}
		if o.panicLine != "" && o.crashed == "" {
			t.Errorf("%s: the agent logged a panic but kept running: %s", v.name, o.panicLine)
		}
		outcomes = append(outcomes, o)
		// Next variant, next session.
		s.conn.Close()
	}

	// Whatever happened, the agent is up and everything works.
	select {
	case <-p1.exited:
		t.Fatalf("node-1's agent is not running at the end: %s", p1.cmd.ProcessState)
	default:
	}
	ac.assertBGPRoutesIgnoring("BGP routes match the API at the end", attackerRange, netip.MustParseAddr(attackerAddr))
	ac.pingMatrix(10 * time.Second)

	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\tagent's reply\tprefix learned\tgood prefix kept\tagent crashed\tpanic\tkernel routes kept\tping\tnode-1<->node-2\trestart")
	for _, o := range outcomes {
		crashed, panicked := "no", "no"
		if o.crashed != "" {
			crashed = "yes: " + o.crashed
		}
		if o.panicLine != "" {
			panicked = o.panicLine
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%v\t%v\t%s\t%s\n", o.variant, o.reply, o.accepted, o.goodKept, crashed, panicked, o.routesKept, o.pingOK, o.node2Session, o.recovered)
	}
	tw.Flush()
	t.Logf("GoBGP v3.37.0 against malformed UPDATEs from an eBGP peer:\n%s", sb.String())
	for _, o := range outcomes {
		if o.logLine != "" {
			t.Logf("%s: agent log: %s", o.variant, o.logLine)
		}
	}
	for _, v := range malformedVariants() {
		t.Logf("%s: %s", v.name, v.what)
	}
}

// asPath4Or2 is the attacker's AS_PATH in the session's AS encoding.
func asPath4Or2(s *attackerSession) []byte {
	if s.fourOctet {
		return asPath4
	}
	return wellKnown(attrASPath, asSeq(1, 2, attackerAS)...)
}

// pingOnce pings every pod from every other, once each.
func pingOnce(ac *agentCluster) error {
	var pods []*agentPod
	for _, n := range ac.nodes {
		pods = append(pods, n.pods...)
	}
	var errs []error
	for _, s := range pods {
		for _, d := range pods {
			if s != d {
				if err := s.ns.Ping(d.ip, 2); err != nil {
					errs = append(errs, fmt.Errorf("%s -> %s: %w", s.name, d.name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
