package bench

// The BGP messages of the benchmark's feeder (bgpfeed_feeder_linux_test.go),
// built by hand (RFC 4271 §4) so that every receiver gets the same bytes:
// the feed's UPDATEs are made once per size, before any session, and are
// written as they are. TestBGPFeedWire checks them with GoBGP's parser.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// The feed's address space: the /26s of these ranges in this order, so
// that 10k and 100k routes lie in 10.0.0.0/9 and 300k need all of them
// (311,296 /26s in all). 10.0.0.0/8 alone holds 262,144 /26s, too few for
// 300k, and 10.240.0.0/12 is left out because it holds 10.244.0.0/16, the
// pod range of the other test tiers; 100.64.0.0/10 (RFC 6598 shared
// address space) makes up the rest. None of it overlaps the nodes'
// 198.18.0.0/15, and all of it exists only inside the benchmark's
// namespaces. The agent's IPPools are these CIDRs.
var feedRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/9"),
	netip.MustParsePrefix("10.128.0.0/10"),
	netip.MustParsePrefix("10.192.0.0/11"),
	netip.MustParsePrefix("10.224.0.0/12"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

const feedBits = 26

// feedMax is how many /26s feedRanges hold.
func feedMax() int {
	n := 0
	for _, r := range feedRanges {
		n += 1 << (feedBits - r.Bits())
	}
	return n
}

func be32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

// feedPrefixes is the feed: the first n /26s of feedRanges.
func feedPrefixes(n int) []netip.Prefix {
	if n > feedMax() {
		panic(fmt.Sprintf("feed of %d routes: the feed ranges hold %d /26s", n, feedMax()))
	}
	ps := make([]netip.Prefix, 0, n)
	for _, r := range feedRanges {
		base := be32(r.Addr())
		for i := 0; i < 1<<(feedBits-r.Bits()) && len(ps) < n; i++ {
			v := base + uint32(i)<<(32-feedBits)
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), feedBits))
		}
	}
	return ps
}

// feedIndex is the position in the feed of the /26 at address a (big
// endian), or -1 if it is not one of the feed's.
func feedIndex(a uint32) int {
	off := 0
	for _, r := range feedRanges {
		base, size := be32(r.Addr()), 1<<(feedBits-r.Bits())
		if i := int((a - base) >> (32 - feedBits)); a >= base && i < size {
			if a&(1<<(32-feedBits)-1) != 0 {
				return -1
			}
			return off + i
		}
		off += size
	}
	return -1
}

// BGP message types (RFC 4271 §4.1).
const (
	bgpOpen         = 1
	bgpUpdate       = 2
	bgpNotification = 3
	bgpKeepalive    = 4
)

const (
	bgpHeaderLen = 19
	bgpMaxLen    = 4096 // RFC 4271 §4.1; no extended messages (RFC 8654) are offered
	// capFourOctetAS is the 4-octet AS number capability (RFC 6793): the
	// feed's AS_PATH is encoded with 4-octet AS numbers, so every receiver
	// must offer it.
	capFourOctetAS = 65
)

func bgpHeader(typ byte, bodyLen int) []byte {
	b := make([]byte, bgpHeaderLen, bgpHeaderLen+bodyLen)
	for i := range 16 {
		b[i] = 0xff
	}
	binary.BigEndian.PutUint16(b[16:], uint16(bgpHeaderLen+bodyLen))
	b[18] = typ
	return b
}

// bgpOpenMsg is the feeder's OPEN: hold time hold, and the capabilities a
// plain IPv4 unicast eBGP peer offers: multiprotocol IPv4 unicast
// (RFC 4760), route refresh (RFC 2918) and 4-octet AS (RFC 6793). No
// graceful restart: when the feeder goes away (Cease), receivers drop its
// routes at once, which is the withdraw being timed.
func bgpOpenMsg(as uint32, hold uint16, id netip.Addr) []byte {
	caps := []byte{
		1, 4, 0, 1, 0, 1, // multiprotocol: AFI 1 (IPv4), SAFI 1 (unicast)
		2, 0, // route refresh
		capFourOctetAS, 4, byte(as >> 24), byte(as >> 16), byte(as >> 8), byte(as),
	}
	myAS := uint16(23456) // AS_TRANS (RFC 6793 §4.2.1)
	if as <= 0xffff {
		myAS = uint16(as)
	}
	body := []byte{4, byte(myAS >> 8), byte(myAS), byte(hold >> 8), byte(hold)}
	a := id.As4()
	body = append(body, a[:]...)
	body = append(body, byte(2+len(caps)), 2, byte(len(caps))) // one optional parameter: capabilities
	body = append(body, caps...)
	return append(bgpHeader(bgpOpen, len(body)), body...)
}

func bgpKeepaliveMsg() []byte { return bgpHeader(bgpKeepalive, 0) }

// bgpCeaseMsg is NOTIFICATION Cease / Administrative Shutdown (RFC 4486),
// what "birdc disable" and GoBGP's DisablePeer send for a peer that goes
// away on purpose.
func bgpCeaseMsg() []byte { return append(bgpHeader(bgpNotification, 2), 6, 2) }

// bgpEndOfRIB is the IPv4 unicast End-of-RIB marker (RFC 4724 §2): an
// UPDATE with nothing in it.
func bgpEndOfRIB() []byte { return append(bgpHeader(bgpUpdate, 4), 0, 0, 0, 0) }

// bgpUpdates packs prefixes (all /26 or longer) into as few UPDATEs as fit
// in bgpMaxLen bytes each, with the path attributes of a directly
// connected eBGP peer: ORIGIN IGP, AS_PATH (as), NEXT_HOP nextHop; then an
// End-of-RIB. The result is the whole feed, ready to be written.
func bgpUpdates(prefixes []netip.Prefix, as uint32, nextHop netip.Addr) ([]byte, int) {
	nh := nextHop.As4()
	attrs := []byte{
		0x40, 1, 1, 0, // ORIGIN: IGP
		0x40, 2, 6, 2, 1, byte(as >> 24), byte(as >> 16), byte(as >> 8), byte(as), // AS_PATH: AS_SEQUENCE of one 4-octet AS
		0x40, 3, 4, nh[0], nh[1], nh[2], nh[3], // NEXT_HOP
	}
	room := bgpMaxLen - bgpHeaderLen - 2 - 2 - len(attrs)
	var out []byte
	msgs := 0
	for len(prefixes) > 0 {
		var nlri []byte
		for len(prefixes) > 0 {
			p := prefixes[0]
			l := (p.Bits() + 7) / 8
			if len(nlri)+1+l > room {
				break
			}
			a := p.Addr().As4()
			nlri = append(nlri, byte(p.Bits()))
			nlri = append(nlri, a[:l]...)
			prefixes = prefixes[1:]
		}
		body := make([]byte, 0, 4+len(attrs)+len(nlri))
		body = append(body, 0, 0) // no withdrawn routes
		body = binary.BigEndian.AppendUint16(body, uint16(len(attrs)))
		body = append(body, attrs...)
		body = append(body, nlri...)
		out = append(out, bgpHeader(bgpUpdate, len(body))...)
		out = append(out, body...)
		msgs++
	}
	out = append(out, bgpEndOfRIB()...)
	return out, msgs + 1
}

// readBGP reads one message and returns its type and body.
func readBGP(r io.Reader, buf []byte) (typ byte, body []byte, err error) {
	if len(buf) < bgpMaxLen {
		buf = make([]byte, bgpMaxLen)
	}
	if _, err := io.ReadFull(r, buf[:bgpHeaderLen]); err != nil {
		return 0, nil, err
	}
	for _, b := range buf[:16] {
		if b != 0xff {
			return 0, nil, errors.New("BGP header: bad marker")
		}
	}
	l := int(binary.BigEndian.Uint16(buf[16:18]))
	if l < bgpHeaderLen || l > bgpMaxLen {
		return 0, nil, fmt.Errorf("BGP header: length %d", l)
	}
	if _, err := io.ReadFull(r, buf[bgpHeaderLen:l]); err != nil {
		return 0, nil, err
	}
	return buf[18], buf[bgpHeaderLen:l], nil
}

// bgpOpenInfo is what the feeder needs from a receiver's OPEN.
type bgpOpenInfo struct {
	as      uint32 // the 4-octet AS if offered, else My AS
	hold    uint16
	fourOct bool
}

func parseBGPOpen(body []byte) (bgpOpenInfo, error) {
	var o bgpOpenInfo
	if len(body) < 10 || body[0] != 4 {
		return o, fmt.Errorf("OPEN: %d bytes, version %v", len(body), body[:min(1, len(body))])
	}
	o.as = uint32(binary.BigEndian.Uint16(body[1:3]))
	o.hold = binary.BigEndian.Uint16(body[3:5])
	params := body[10:]
	if int(body[9]) != len(params) {
		return o, fmt.Errorf("OPEN: optional parameters length %d, %d bytes follow", body[9], len(params))
	}
	for len(params) >= 2 {
		typ, l := params[0], int(params[1])
		if 2+l > len(params) {
			return o, errors.New("OPEN: truncated optional parameter")
		}
		if typ == 2 { // capabilities
			for c := params[2 : 2+l]; len(c) >= 2; {
				code, cl := c[0], int(c[1])
				if 2+cl > len(c) {
					return o, errors.New("OPEN: truncated capability")
				}
				if code == capFourOctetAS && cl == 4 {
					o.fourOct = true
					o.as = binary.BigEndian.Uint32(c[2:6])
				}
				c = c[2+cl:]
			}
		}
		params = params[2+l:]
	}
	return o, nil
}

// TestBGPFeedWire parses the feeder's messages with GoBGP's parser: every
// UPDATE at most 4096 bytes, the prefixes in order and complete, the
// attributes as meant, an End-of-RIB last; the OPEN and the Cease.
func TestBGPFeedWire(t *testing.T) {
	const as = 65001
	nh := netip.MustParseAddr("198.18.0.2")
	for _, n := range []int{1, 810, 811, 10_000} {
		want := feedPrefixes(n)
		feed, msgs := bgpUpdates(want, as, nh)
		var got []netip.Prefix
		count, eor := 0, false
		for rest := feed; len(rest) > 0; {
			if eor {
				t.Fatalf("n=%d: a message after End-of-RIB", n)
			}
			l := int(binary.BigEndian.Uint16(rest[16:18]))
			if l > bgpMaxLen {
				t.Fatalf("n=%d: message of %d bytes", n, l)
			}
			m, err := bgp.ParseBGPMessage(rest[:l])
			if err != nil {
				t.Fatalf("n=%d: message %d: %v", n, count, err)
			}
			rest = rest[l:]
			count++
			u, ok := m.Body.(*bgp.BGPUpdate)
			if !ok {
				t.Fatalf("n=%d: message %d is %T", n, count, m.Body)
			}
			if len(u.NLRI) == 0 && len(u.PathAttributes) == 0 && len(u.WithdrawnRoutes) == 0 {
				eor = true
				continue
			}
			var origin, path, hop bool
			for _, a := range u.PathAttributes {
				switch a := a.(type) {
				case *bgp.PathAttributeOrigin:
					origin = a.Value == bgp.BGP_ORIGIN_ATTR_TYPE_IGP
				case *bgp.PathAttributeAsPath:
					_, four := a.Value[0].(*bgp.As4PathParam)
					path = len(a.Value) == 1 && four && a.Value[0].GetType() == bgp.BGP_ASPATH_ATTR_TYPE_SEQ &&
						slices.Equal(a.Value[0].GetAS(), []uint32{as})
				case *bgp.PathAttributeNextHop:
					hop = a.Value == nh
				default:
					t.Errorf("n=%d: unexpected attribute %s", n, a)
				}
			}
			if !origin || !path || !hop {
				t.Fatalf("n=%d: attributes %v (origin %v, as path %v, next hop %v)", n, u.PathAttributes, origin, path, hop)
			}
			for _, p := range u.NLRI {
				got = append(got, p.NLRI.(*bgp.IPAddrPrefix).Prefix)
			}
		}
		if !eor || count != msgs {
			t.Fatalf("n=%d: End-of-RIB %v, %d messages, bgpUpdates said %d", n, eor, count, msgs)
		}
		if len(got) != len(want) {
			t.Fatalf("n=%d: %d prefixes in the feed", n, len(got))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("n=%d: prefix %d is %s, want %s", n, i, got[i], want[i])
			}
		}
	}

	if feedMax() < 300_000 {
		t.Fatalf("the feed ranges hold %d /26s, fewer than 300k", feedMax())
	}
	all := feedPrefixes(feedMax())
	seen := make(map[netip.Prefix]bool, len(all))
	for i, p := range all {
		if seen[p] || p.Overlaps(netip.MustParsePrefix("10.244.0.0/16")) || p.Overlaps(netip.MustParsePrefix("198.18.0.0/15")) {
			t.Fatalf("feed prefix %d: %s repeated or overlapping a test range", i, p)
		}
		seen[p] = true
		if got := feedIndex(be32(p.Addr())); got != i {
			t.Fatalf("feedIndex(%s) = %d, want %d", p, got, i)
		}
	}
	for _, a := range []string{"10.240.0.0", "10.0.0.1", "100.128.0.0", "9.255.255.192", "198.18.0.2"} {
		if got := feedIndex(be32(netip.MustParseAddr(a))); got != -1 {
			t.Errorf("feedIndex(%s) = %d, want -1", a, got)
		}
	}

	m, err := bgp.ParseBGPMessage(bgpOpenMsg(as, 90, nh))
	if err != nil {
		t.Fatal(err)
	}
	o := m.Body.(*bgp.BGPOpen)
	if o.MyAS != as || o.HoldTime != 90 || o.ID != nh {
		t.Fatalf("OPEN: %+v", o)
	}
	info, err := parseBGPOpen(bgpOpenMsg(as, 90, nh)[bgpHeaderLen:])
	if err != nil || info != (bgpOpenInfo{as: as, hold: 90, fourOct: true}) {
		t.Fatalf("parseBGPOpen of our own OPEN: %+v, %v", info, err)
	}
	big, err := parseBGPOpen(bgpOpenMsg(4_200_000_000, 90, nh)[bgpHeaderLen:])
	if err != nil || big.as != 4_200_000_000 {
		t.Fatalf("parseBGPOpen with a 4-octet AS: %+v, %v", big, err)
	}
	m, err = bgp.ParseBGPMessage(bgpCeaseMsg())
	if err != nil {
		t.Fatal(err)
	}
	if nb := m.Body.(*bgp.BGPNotification); nb.ErrorCode != bgp.BGP_ERROR_CEASE || nb.ErrorSubcode != bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN {
		t.Fatalf("Cease: %+v", nb)
	}
}
