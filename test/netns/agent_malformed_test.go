//go:build linux

package nstest_test

// Bad input from the network: a hostile BGP peer. The test runs a small
// raw-socket BGP speaker ("attacker", AS 65099) in its own namespace on the
// nodes' switch, makes node-1's wren-agent peer with it through a BGPPeer
// (eBGP), and sends, one per session, the malformed UPDATE messages of
// GoBGP's public advisories that an IPv4 unicast session can carry (each
// variant names its advisory), plus a few neighbours of them. Every
// variant must end in treat-as-withdraw (RFC 7606: session kept, the
// malformed prefix not learned) or a session reset (NOTIFICATION or
// close), and the agent must then open a new session with the attacker.
// Two are learned instead: one is a valid UPDATE (wellFormed), one a check
// the speaker does not make (tolerated, with the reason).
// A crash, a panic in the agent's log, a changed PID, a deleted kernel
// route (other than the attacker's own prefixes), a reset of node-1's
// session with node-2 or a failed pod ping fails the variant. SECURITY.md
// has the results.
//
// Test addresses: nodes 198.18.0.11-12/24 and the attacker 198.18.0.50/24
// on one switch, pods 10.244.0.0/16 (the nodes' blocks are the lowest
// /26s); the attacker announces prefixes in 10.244.192.0/19 (inside the
// pool, so the import policy accepts them); the IPv6 prefix 2001:db8::/32
// in one variant's MP_REACH_NLRI is documentation space on a session
// without IPv6, never installed. Every socket lives in a namespace the
// test created; nothing is routed in the root namespace.

import (
	"bufio"
	"context"
	"debug/buildinfo"
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
	attrFlagExtLen     = 0x10

	attrOrigin    = 1
	attrASPath    = 2
	attrNextHop   = 3
	attrLocalPref = 5
	attrMPReach   = 14
	attrAS4Path   = 17
	asPathSeq     = 2
	capMP         = 1
	capFourOctet  = 65
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

// bgpUpdateLens is an UPDATE whose two length fields say withdrawnLen
// and attrLen; a negative length means the real length of withdrawn or
// attrs.
func bgpUpdateLens(withdrawnLen int, withdrawn []byte, attrLen int, attrs, nlri []byte) []byte {
	if withdrawnLen < 0 {
		withdrawnLen = len(withdrawn)
	}
	if attrLen < 0 {
		attrLen = len(attrs)
	}
	body := binary.BigEndian.AppendUint16(nil, uint16(withdrawnLen))
	body = append(body, withdrawn...)
	body = binary.BigEndian.AppendUint16(body, uint16(attrLen))
	body = append(body, attrs...)
	return bgpMsg(msgUpdate, append(body, nlri...))
}

// bgpUpdate is an UPDATE with no withdrawn routes; attrLen < 0 means the
// real length of attrs.
func bgpUpdate(attrLen int, attrs []byte, nlri []byte) []byte {
	return bgpUpdateLens(-1, nil, attrLen, attrs, nlri)
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
	prefix    string // the prefix it tries to announce, "" for none
	fourOctet bool   // the attacker's OPEN offers 4-octet AS numbers
	// wellFormed marks an UPDATE that is valid, only unusual: its prefix
	// must be learned on a kept session.
	wellFormed bool
	// tolerated, when set, says why learning the prefix of this wrong
	// UPDATE on a kept session is not (yet) a failure: a check the speaker
	// does not make. SECURITY.md lists it under residual risks.
	tolerated string
	what      string // the advisory it reproduces, and how
	update    func() []byte
}

// malformedVariants lists the UPDATEs, grouped by advisory. The advisory
// texts are on github.com/osrg/gobgp/security/advisories; where one has no
// public payload, the variants are our reading of it and say so.
func malformedVariants() []malformedVariant {
	cat := func(bs ...[]byte) []byte { return slices.Concat(bs...) }
	return []malformedVariant{{
		name: "nexthop-len-3", prefix: "10.244.201.0/24", fourOctet: true,
		what: "GHSA-4p9m-8gc4-rw2h (NEXT_HOP of length 0-3): NEXT_HOP of length 3, flags right, after ORIGIN and AS_PATH",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, wellKnown(attrNextHop, attackerNH[:3]...)), nlri24("10.244.201.0/24"))
		},
	}, {
		name: "nexthop-len-3-first", prefix: "10.244.202.0/24", fourOctet: true,
		what: "GHSA-4p9m-8gc4-rw2h: NEXT_HOP of length 3 before ORIGIN and AS_PATH",
		update: func() []byte {
			return bgpUpdate(-1, cat(wellKnown(attrNextHop, attackerNH[:3]...), origin, asPath4), nlri24("10.244.202.0/24"))
		},
	}, {
		name: "nexthop-len-1", prefix: "10.244.203.0/24", fourOctet: true,
		what: "GHSA-4p9m-8gc4-rw2h: NEXT_HOP of length 1, the last attribute",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, wellKnown(attrNextHop, attackerNH[:1]...)), nlri24("10.244.203.0/24"))
		},
	}, {
		name: "nexthop-noflag-len-0", prefix: "10.244.208.0/24", fourOctet: true,
		what: "GHSA-4p9m-8gc4-rw2h as osrg/gobgp#3305 reports it: NEXT_HOP with the transitive flag cleared (flags 0x00) and length 0, first",
		update: func() []byte {
			return bgpUpdate(-1, cat(attr(0, attrNextHop, 0), origin, asPath4), nlri24("10.244.208.0/24"))
		},
	}, {
		name: "nexthop-noflag-len-3", prefix: "10.244.209.0/24", fourOctet: true,
		what: "GHSA-4p9m-8gc4-rw2h (osrg/gobgp#3305): NEXT_HOP with flags 0x00 and length 3, first",
		update: func() []byte {
			return bgpUpdate(-1, cat(attr(0, attrNextHop, 3, attackerNH[:3]...), origin, asPath4), nlri24("10.244.209.0/24"))
		},
	}, {
		name: "mpreach-nh-len-3", prefix: "10.244.206.0/24", fourOctet: true,
		what: "no advisory of its own: MP_REACH_NLRI IPv4 unicast with next-hop length 3, the MP_REACH_NLRI form of GHSA-4p9m-8gc4-rw2h (RFC 7606 §7.11)",
		update: func() []byte {
			mp := cat([]byte{0, 1, 1, 3}, attackerNH[:3], []byte{0}, nlri24("10.244.206.0/24"))
			return bgpUpdate(-1, cat(origin, asPath4, attr(attrFlagOptional, attrMPReach, len(mp), mp...)), nil)
		},
	}, {
		name: "total-attr-len-short", prefix: "10.244.204.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (length underflow; our reading, the pathlen half of its fix): total path attribute length ends inside AS_PATH, so AS_PATH overruns it",
		update: func() []byte {
			return bgpUpdate(len(origin)+3, cat(origin, asPath4, nextHop), nlri24("10.244.204.0/24"))
		},
	}, {
		name: "attr-len-overrun", prefix: "", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading): the last attribute (NEXT_HOP) declares 40 octets, 4 follow: it overruns the total path attribute length and the message (RFC 7606 §4, first case)",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, attr(attrFlagTransitive, attrNextHop, 40, attackerNH...)), nil)
		},
	}, {
		name: "total-attr-len-overrun", prefix: "10.244.210.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading): total path attribute length 16 octets past the end of the message",
		update: func() []byte {
			attrs, nlri := cat(origin, asPath4, nextHop), nlri24("10.244.210.0/24")
			return bgpUpdate(len(attrs)+len(nlri)+16, attrs, nlri)
		},
	}, {
		name: "withdrawn-len-overrun", prefix: "10.244.211.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading): withdrawn routes length 1024, longer than the whole message",
		update: func() []byte {
			return bgpUpdateLens(1024, nil, -1, cat(origin, asPath4, nextHop), nlri24("10.244.211.0/24"))
		},
	}, {
		name: "withdrawn-len-short", prefix: "10.244.212.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading, the routelen half of its fix): withdrawn routes length 1, followed by a 4-octet /24 withdrawal",
		update: func() []byte {
			return bgpUpdateLens(1, nlri24("10.244.212.0/24"), -1, cat(origin, asPath4, nextHop), nlri24("10.244.212.0/24"))
		},
	}, {
		name: "attr-header-short", prefix: "10.244.213.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading): 2 octets left inside the total path attribute length after NEXT_HOP, fewer than an attribute header (RFC 7606 §4, second case)",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, nextHop, []byte{attrFlagTransitive, attrLocalPref}), nlri24("10.244.213.0/24"))
		},
	}, {
		name: "attr-header-short-ext", prefix: "10.244.214.0/24", fourOctet: true,
		what: "GHSA-pw7p-7fqv-hpj8 (our reading): 3 octets left after NEXT_HOP, an attribute header with the extended-length flag needs 4 (RFC 7606 §4, second case)",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, nextHop, []byte{attrFlagTransitive | attrFlagExtLen, attrLocalPref, 0}), nlri24("10.244.214.0/24"))
		},
	}, {
		name: "aspath-seg-overrun", prefix: "10.244.205.0/24", fourOctet: true,
		what: "no advisory: AS_PATH segment count 10 with one AS (RFC 7606 §7.2 malformed segment), a control for the AS_PATH decoder the AS_PATH advisories go through",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, wellKnown(attrASPath, asSeq(10, 4, attackerAS)...), nextHop), nlri24("10.244.205.0/24"))
		},
	}, {
		name: "aspath-empty", prefix: "10.244.215.0/24", fourOctet: true,
		what: "GHSA-frrj-87jh-2772: zero-length AS_PATH from the eBGP attacker (the advisory's panic needs a confederation eBGP peer, which Wren never configures); GoBGP parses it, Wren's import policy rejects it (an eBGP peer must put its own AS first, RFC 4271 §5.1.2)",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, wellKnown(attrASPath), nextHop), nlri24("10.244.215.0/24"))
		},
	}, {
		name: "as4path-before-aspath", prefix: "10.244.207.0/24", fourOctet: false, wellFormed: true,
		what: "GHSA-8rxh-r2p6-7f2q (CVE-2026-41643), well-formed: 2-octet-AS session, AS4_PATH first, AS_PATH (2 ASes) last, the index shift in UpdatePathAttrs4ByteAs; valid (RFC 4271 §5: attributes may come in any order), so learning it is right",
		update: func() []byte {
			as4 := attr(attrFlagOptional|attrFlagTransitive, attrAS4Path, 6, asSeq(1, 4, attackerAS)...)
			as2 := wellKnown(attrASPath, asSeq(2, 2, attackerAS, attackerAS)...)
			return bgpUpdate(-1, cat(as4, origin, nextHop, as2), nlri24("10.244.207.0/24"))
		},
	}, {
		name: "as4path-malformed-first", prefix: "", fourOctet: false,
		what: "GHSA-8rxh-r2p6-7f2q (CVE-2026-41643), osrg/gobgp#3308's payload byte for byte: 2-octet-AS session, AS4_PATH with flags 0x40 and length 1 (40 11 01 02), then AS_PATH 40 02 04 ff ff de ad; no NLRI",
		update: func() []byte {
			return bgpUpdate(-1, cat(attr(attrFlagTransitive, attrAS4Path, 1, 0x02), attr(attrFlagTransitive, attrASPath, 4, 0xff, 0xff, 0xde, 0xad)), nil)
		},
	}, {
		name: "unknown-wellknown-attr", prefix: "10.244.216.0/24", fourOctet: true,
		what: "GHSA-7235-89m6-f4px (CVE-2026-41642): unrecognized attribute type 0xf0 marked well-known (flags 0x40), after a valid ORIGIN, AS_PATH and NEXT_HOP",
		update: func() []byte {
			return bgpUpdate(-1, cat(origin, asPath4, nextHop, attr(attrFlagTransitive, 0xf0, 2, 0xde, 0xad)), nlri24("10.244.216.0/24"))
		},
	}, {
		name: "origin-noflag", prefix: "10.244.217.0/24", fourOctet: true,
		what: "osrg/gobgp#3392 (nil pointer in v4.0.0): ORIGIN with the transitive flag cleared (flags 0x00); the reporter's session also had ADD-PATH, which Wren never negotiates",
		update: func() []byte {
			return bgpUpdate(-1, cat(attr(0, attrOrigin, 1, 0), asPath4, nextHop), nlri24("10.244.217.0/24"))
		},
	}, {
		name: "mpreach-ipv6-withdraw", prefix: "10.244.218.0/24", fourOctet: true,
		what: "GHSA-p3w2-64xm-833j (CVE-2026-42285): an UPDATE treated as withdraw (NEXT_HOP of length 3) that also carries MP_REACH_NLRI for IPv6 unicast, a family the session never negotiated (nil table in AdjRib.Update)",
		update: func() []byte {
			nh6 := netip.MustParseAddr("2001:db8::50").AsSlice()
			mp := cat([]byte{0, 2, 1, 16}, nh6, []byte{0, 32, 0x20, 0x01, 0x0d, 0xb8}) // 2001:db8::/32
			return bgpUpdate(-1, cat(origin, asPath4, wellKnown(attrNextHop, attackerNH[:3]...), attr(attrFlagOptional, attrMPReach, len(mp), mp...)), nlri24("10.244.218.0/24"))
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

// openSession is the test speaker's side of session set-up on an accepted
// connection from the agent: read the agent's OPEN, answer with open and
// a KEEPALIVE, and wait for the agent's KEEPALIVE (the session is then
// established on both sides), all within 15 s.
func openSession(c net.Conn, open []byte) error {
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	defer c.SetDeadline(time.Time{})
	if typ, _, err := readBGP(c); err != nil || typ != msgOpen {
		return fmt.Errorf("agent's OPEN: type %d, %v", typ, err)
	}
	if _, err := c.Write(append(open, bgpMsg(msgKeepalive, nil)...)); err != nil {
		return err
	}
	for {
		typ, body, err := readBGP(c)
		if err != nil {
			return fmt.Errorf("waiting for the agent's KEEPALIVE: %w", err)
		}
		if typ == msgNotification && len(body) >= 2 {
			return fmt.Errorf("agent refused the OPEN: %s", bgpEvent{typ: typ, code: body[0], subcode: body[1]})
		}
		if typ == msgKeepalive {
			return nil
		}
	}
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
	if err := openSession(c, bgpOpen(fourOctet)); err != nil {
		return nil, err
	}
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
var attackerRange = netip.MustParsePrefix("10.244.192.0/19")

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

// The outcomes a variant can have. RFC 7606 wants treat-as-withdraw for
// most malformed attributes and keeps the session reset for errors that
// leave the rest of the message unreadable.
const (
	outcomeWithdraw = "treat-as-withdraw"
	outcomeReset    = "session reset"
	outcomeAccepted = "accepted"
	outcomeTolerate = "accepted (tolerated)"
	outcomeCrash    = "CRASH"
	outcomeOther    = "other"
)

type malformedOutcome struct {
	variant     string
	outcome     string // one of the outcome* constants
	reply       string // NOTIFICATION, session kept, closed without NOTIFICATION
	accepted    bool   // the malformed prefix was learned
	goodKept    string // the earlier well-formed prefix is still learned
	attSession  string // node-1's session with the attacker afterwards
	crashed     string // "" or the exit status
	panicLine   string
	routesKept  bool
	pingOK      bool
	node2       string // node-1's session with node-2: "kept" or what it became
	reconnected string // how long until the agent's next session with the attacker
	logLine     string // the agent's own account (first WARN/ERROR)
}

// TestAgentMalformedUpdate: see the top of the file. Each variant is a
// subtest, so -run 'TestAgentMalformedUpdate/^aspath-empty$' runs one.
func TestAgentMalformedUpdate(t *testing.T) {
	ac := newAgentCluster(t)
	bin := buildAgent(t)
	gobgp := gobgpVersion(t, bin)
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
	// Each connection with the time it came, to measure how long the agent
	// takes to come back after a session ends.
	type arrival struct {
		c  net.Conn
		at time.Time
	}
	conns := make(chan arrival, 16)
	go func() {
		defer close(conns)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- arrival{c, time.Now()}
		}
	}()
	t.Cleanup(func() {
		l.Close() // ends the accept loop, which closes conns
		for a := range conns {
			a.c.Close()
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
	pid := p1.cmd.Process.Pid

	// accept takes the agent's next connection and completes the
	// handshake, closing connections from anyone else; it returns the
	// session and when the agent connected. after says what the previous
	// session ended with, for the failure message.
	accept := func(t *testing.T, fourOctet bool, deadline time.Duration, after string) (*attackerSession, time.Time) {
		t.Helper()
		timeout := time.After(deadline)
		for {
			select {
			case a, ok := <-conns:
				if !ok {
					t.Fatal("attacker listener closed")
				}
				c := a.c
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
				return s, a.at
			case <-p1.exited:
				t.Fatalf("node-1's agent is gone (%s) while the attacker waits for it, %s", p1.cmd.ProcessState, after)
			case <-timeout:
				t.Fatalf("node-1's agent did not open a new session with the attacker within %s, %s", deadline, after)
			}
		}
	}
	// announceGood sends the well-formed UPDATE and waits until node-1
	// has learned the prefix and routes it via the attacker.
	announceGood := func(t *testing.T, s *attackerSession) {
		t.Helper()
		if _, err := s.conn.Write(bgpUpdate(-1, slices.Concat(origin, asPath4Or2(s), nextHop), nlri24(goodPrefix))); err != nil {
			t.Fatalf("attacker: send the good UPDATE: %v", err)
		}
		nstest.Poll(t, 10*time.Second, "node-1 learns "+goodPrefix+" from the attacker and routes it", func() error {
			v, err := p1.bgpDebug()
			if err != nil {
				return err
			}
			if !v.HasLearned(goodPrefix) {
				return fmt.Errorf("debug API: learned %v", v.Learned)
			}
			return routedViaAttacker(n1, goodPrefix)
		})
	}

	var outcomes []malformedOutcome
	// The table is logged however the test ends, crash included.
	defer func() { logMalformedOutcomes(t, gobgp, outcomes) }()

	after := "at the start" // how the previous session ended
	var ended time.Time     // when it ended, from the agent's side
	// reconnected records, in the previous variant's row, how long the
	// agent took to connect again.
	reconnected := func(at time.Time) {
		if len(outcomes) > 0 && !ended.IsZero() {
			outcomes[len(outcomes)-1].reconnected = at.Sub(ended).Round(100 * time.Millisecond).String()
		}
	}
	for _, v := range malformedVariants() {
		var o malformedOutcome
		ran := false
		t.Run(v.name, func(t *testing.T) {
			ran = true
			o = malformedOutcome{variant: v.name, outcome: outcomeOther, node2: "-", attSession: "-", goodKept: "-", reconnected: "-"}
			defer func() { outcomes = append(outcomes, o) }()

			s, at := accept(t, v.fourOctet, 60*time.Second, after)
			reconnected(at)
			announceGood(t, s)
			dbg, err := p1.bgpDebug()
			if err != nil {
				t.Fatal(err)
			}
			n2Before, ok := dbg.Peer(node2)
			if !ok || n2Before.GetState() != "established" {
				t.Fatalf("node-1's session with node-2 before the malformed UPDATE: %+v", n2Before)
			}
			attBefore, ok := dbg.Peer(attackerAddr)
			if !ok || attBefore.GetState() != "established" {
				t.Fatalf("node-1's session with the attacker before the malformed UPDATE: %+v", attBefore)
			}
			off := logSize(t, p1.log)

			if _, err := s.conn.Write(v.update()); err != nil {
				t.Fatalf("send: %v", err)
			}
			notif, closed := s.waitEnd(5 * time.Second)
			if closed {
				ended = time.Now()
			}
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
				o.outcome = outcomeCrash
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
			if o.crashed != "" {
				t.Errorf("node-1's agent (pid %d) died: %s; %s", pid, o.crashed, o.panicLine)
			} else if o.panicLine != "" {
				t.Errorf("the agent logged a panic: %s", o.panicLine)
			}

			if o.crashed == "" {
				if err := sameAgent(p1, pid); err != nil {
					t.Error(err)
				}
				dbg, err := p1.bgpDebug()
				if err != nil {
					t.Fatalf("debug API after the malformed UPDATE: %v", err)
				}
				o.accepted = v.prefix != "" && dbg.HasLearned(v.prefix)
				good := dbg.HasLearned(goodPrefix)
				o.goodKept = fmt.Sprint(good)
				attAfter, _ := dbg.Peer(attackerAddr)
				attKept := attAfter.GetState() == "established" && nstest.PeerSince(attAfter).Equal(nstest.PeerSince(attBefore))
				o.attSession = attAfter.GetState()
				if attKept {
					o.attSession = "kept"
				}
				if n2, ok := dbg.Peer(node2); ok && n2.GetState() == "established" && nstest.PeerSince(n2).Equal(nstest.PeerSince(n2Before)) {
					o.node2 = "kept"
				} else {
					o.node2 = fmt.Sprintf("reset (%+v)", n2)
					t.Errorf("node-1's session with node-2 did not survive: %+v (before %+v)", n2, n2Before)
				}

				// What the agent made of it: treat-as-withdraw keeps the
				// session and what it learned before, and learns nothing
				// from the UPDATE; a reset ends the session.
				switch {
				case notif != nil || closed:
					o.outcome = outcomeReset
					if attAfter.GetState() == "established" {
						t.Errorf("the agent ended the attacker's TCP session (%s) but the debug API still shows it established: %+v", o.reply, attAfter)
					}
				case !attKept:
					t.Errorf("no NOTIFICATION and no close, yet node-1's session with the attacker changed: %+v (before %+v)", attAfter, attBefore)
				case o.accepted && v.wellFormed:
					o.outcome = outcomeAccepted
				case o.accepted && v.tolerated != "":
					o.outcome = outcomeTolerate
					t.Logf("the malformed prefix %s was learned; tolerated: %s", v.prefix, v.tolerated)
				case o.accepted:
					t.Errorf("session kept and the malformed prefix %s was learned: neither treat-as-withdraw nor a reset", v.prefix)
				case v.wellFormed && v.prefix != "":
					t.Errorf("the well-formed UPDATE's prefix %s was not learned", v.prefix)
				case !good:
					t.Errorf("session kept, but %s (announced well-formed before) is gone: more than treat-as-withdraw", goodPrefix)
				default:
					o.outcome = outcomeWithdraw
				}
				if o.outcome == outcomeWithdraw || o.outcome == outcomeAccepted || o.outcome == outcomeTolerate {
					if err := routedViaAttacker(n1, goodPrefix); err != nil {
						t.Errorf("session kept, but the kernel route of the earlier good prefix: %v", err)
					}
				}
				if o.outcome == outcomeReset && o.accepted {
					t.Errorf("the session was reset but %s is learned", v.prefix)
				}
			}

			// Kernel routes: no Wren route other than the attacker's went
			// away, on either node, and both nodes still route each other's
			// blocks; pods still reach each other.
			dels := append(deletionsOutsideAttacker(t, w1), deletionsOutsideAttacker(t, w2)...)
			o.routesKept = len(dels) == 0
			for _, d := range dels {
				t.Errorf("a node deleted its route %s", d)
			}
			for _, n := range ac.nodes {
				if err := ac.checkBGPRoutesIgnoring(n, attackerRange, netip.MustParseAddr(attackerAddr)); err != nil {
					o.routesKept = false
					t.Error(err)
				}
			}
			if err := pingOnce(ac); err != nil {
				t.Errorf("pod ping after the malformed UPDATE: %v", err)
			} else {
				o.pingOK = true
			}
			// Next variant, next session.
			s.conn.Close()
			if !closed {
				ended = time.Now()
			}
		})
		if !ran {
			continue // not selected by -run
		}
		select {
		case <-p1.exited:
			t.Fatalf("node-1's agent is gone (%s): the remaining variants cannot run", p1.cmd.ProcessState)
		default:
		}
		if o.reply == "" {
			t.Fatalf("%s failed before its malformed UPDATE went out: the remaining variants would fail the same way", v.name)
		}
		after = fmt.Sprintf("after %s (%s, %s)", v.name, o.outcome, o.reply)
	}

	// The agent still talks to the attacker after the last variant, and
	// everything else works.
	s, at := accept(t, true, 60*time.Second, after)
	reconnected(at)
	announceGood(t, s)
	s.conn.Close()
	if err := sameAgent(p1, pid); err != nil {
		t.Fatal(err)
	}
	ac.assertBGPRoutesIgnoring("BGP routes match the API at the end", attackerRange, netip.MustParseAddr(attackerAddr))
	ac.pingMatrix(10 * time.Second)
}

// gobgpVersion is the GoBGP module the agent binary was built with.
func gobgpVersion(t *testing.T, bin string) string {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("build info of %s: %v", bin, err)
	}
	var vs []string
	for _, d := range bi.Deps {
		if strings.HasPrefix(d.Path, "github.com/osrg/gobgp") {
			vs = append(vs, "GoBGP "+d.Version)
		}
	}
	if len(vs) == 0 {
		t.Fatalf("%s: no GoBGP in its build info", bin)
	}
	return strings.Join(vs, " and ")
}

// logMalformedOutcomes logs the results table and what each variant is.
func logMalformedOutcomes(t *testing.T, gobgp string, outcomes []malformedOutcome) {
	if len(outcomes) == 0 {
		return
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\toutcome\tagent's reply\tprefix learned\tgood prefix kept\tattacker session\tagent crashed\tpanic\tkernel routes kept\tping\tnode-1<->node-2\tnext session after")
	for _, o := range outcomes {
		crashed, panicked := "no", "no"
		if o.crashed != "" {
			crashed = "yes: " + o.crashed
		}
		if o.panicLine != "" {
			panicked = o.panicLine
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%v\t%v\t%s\t%s\n", o.variant, o.outcome, o.reply, o.accepted, o.goodKept,
			o.attSession, crashed, panicked, o.routesKept, o.pingOK, o.node2, o.reconnected)
	}
	tw.Flush()
	t.Logf("%s against malformed UPDATEs from an eBGP peer:\n%s", gobgp, sb.String())
	for _, o := range outcomes {
		if o.logLine != "" {
			t.Logf("%s: agent log: %s", o.variant, o.logLine)
		}
	}
	for _, v := range malformedVariants() {
		if slices.ContainsFunc(outcomes, func(o malformedOutcome) bool { return o.variant == v.name }) {
			t.Logf("%s: %s", v.name, v.what)
			if v.tolerated != "" {
				t.Logf("%s: learning it is tolerated: %s", v.name, v.tolerated)
			}
		}
	}
}

// routedViaAttacker checks that node n routes prefix via the attacker.
func routedViaAttacker(n *agentNode, prefix string) error {
	rs, err := n.ns.Run(context.Background(), "ip", "route", "show", prefix)
	if err != nil {
		return err
	}
	if !strings.Contains(rs, "via "+attackerAddr) {
		return fmt.Errorf("%s route to %s: %q; want via %s", n.name, prefix, rs, attackerAddr)
	}
	return nil
}

// sameAgent checks that the agent started with pid still runs: not
// exited, and the PID still is the agent binary (not a reused PID).
func sameAgent(p *agentProc, pid int) error {
	select {
	case <-p.exited:
		return fmt.Errorf("node-1's agent (pid %d) exited: %s", pid, p.cmd.ProcessState)
	default:
	}
	if p.cmd.Process.Pid != pid {
		return fmt.Errorf("node-1's agent PID changed: %d, was %d", p.cmd.Process.Pid, pid)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != p.bin {
		return fmt.Errorf("pid %d runs %q (%v); want the agent %s", pid, exe, err, p.bin)
	}
	return nil
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
