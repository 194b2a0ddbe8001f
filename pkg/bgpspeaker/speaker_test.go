// Tests in this file run two speakers in one process over loopback; no root
// is needed. Addresses: router IDs and next hops come from 198.18.0.0/15 (the
// node range), prefixes from 10.244.0.0/16 (the pod range). Speaker A listens
// on 127.0.0.1; speaker B does not listen (ListenPort -1) and connects from
// 127.0.0.2, so each side sees the other under its own address.
package bgpspeaker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// netipCmp lets cmp compare netip values, which have unexported fields.
var netipCmp = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

const testAS = 64512

var (
	addrA = netip.MustParseAddr("127.0.0.1")
	addrB = netip.MustParseAddr("127.0.0.2")
	nodeA = netip.MustParseAddr("198.18.0.11")
	nodeB = netip.MustParseAddr("198.18.0.12")
)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BGPSPEAKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// poll calls cond until it returns "" or the deadline passes; the last
// non-empty result is the failure message.
func poll(t *testing.T, timeout time.Duration, what string, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		msg := cond()
		if msg == "" {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %s: %s", what, timeout, msg)
		}
		<-tick.C
	}
}

func peerStatus(t *testing.T, s *Speaker, addr netip.Addr) (PeerStatus, bool) {
	t.Helper()
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, p := range st.Peers {
		if p.Address == addr {
			return p, true
		}
	}
	return PeerStatus{}, false
}

func waitEstablished(t *testing.T, s *Speaker, peer netip.Addr) PeerStatus {
	t.Helper()
	var ps PeerStatus
	poll(t, 30*time.Second, "session established", func() string {
		var ok bool
		ps, ok = peerStatus(t, s, peer)
		if !ok {
			return "peer not configured"
		}
		if ps.State != "established" {
			return "state " + ps.State
		}
		return ""
	})
	return ps
}

type pair struct {
	a, b         *Speaker
	peerOfA      Peer // A's view of B
	peerOfB      Peer // B's view of A
	establishDur time.Duration
}

// newPair starts A (listening) and B (connecting only) with one iBGP session.
// mutate, if given, edits both peer configs before they are set.
func newPair(t *testing.T, mutate ...func(*Peer)) *pair {
	t.Helper()
	ctx := context.Background()
	port := freePort(t)
	a, err := New(Config{RouterID: nodeA, AS: testAS, ListenPort: int32(port), ListenAddresses: []string{addrA.String()}, Logger: testLogger(t).With("speaker", "A")})
	if err != nil {
		t.Fatalf("new A: %v", err)
	}
	b, err := New(Config{RouterID: nodeB, AS: testAS, ListenPort: -1, Logger: testLogger(t).With("speaker", "B")})
	if err != nil {
		t.Fatalf("new B: %v", err)
	}
	for _, s := range []*Speaker{a, b} {
		if err := s.Start(ctx); err != nil {
			t.Fatalf("start: %v", err)
		}
		t.Cleanup(func() { s.Close() })
	}
	p := &pair{
		a:       a,
		b:       b,
		peerOfA: Peer{Address: addrB, AS: testAS, Passive: true},
		peerOfB: Peer{Address: addrA, AS: testAS, Port: port, LocalAddress: addrB},
	}
	for _, m := range mutate {
		m(&p.peerOfA)
		m(&p.peerOfB)
	}
	start := time.Now()
	if err := a.SetPeers(ctx, []Peer{p.peerOfA}); err != nil {
		t.Fatalf("A set peers: %v", err)
	}
	if err := b.SetPeers(ctx, []Peer{p.peerOfB}); err != nil {
		t.Fatalf("B set peers: %v", err)
	}
	waitEstablished(t, a, addrB)
	waitEstablished(t, b, addrA)
	p.establishDur = time.Since(start)
	t.Logf("session established in %s", p.establishDur)
	return p
}

func TestSessionEstablishes(t *testing.T) {
	p := newPair(t)
	for _, c := range []struct {
		s    *Speaker
		peer netip.Addr
		id   netip.Addr
	}{{p.a, addrB, nodeA}, {p.b, addrA, nodeB}} {
		st, err := c.s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.RouterID != c.id || st.AS != testAS {
			t.Errorf("status router ID/AS = %s/%d, want %s/%d", st.RouterID, st.AS, c.id, testAS)
		}
		if len(st.Peers) != 1 || st.Peers[0].Address != c.peer || st.Peers[0].AS != testAS ||
			st.Peers[0].State != "established" || st.Peers[0].Since.IsZero() {
			t.Errorf("status peers = %+v, want one established peer %s AS %d with Since set", st.Peers, c.peer, testAS)
		}
	}
}

// TestMD5AndGracefulRestart brings a session up with TCP MD5 (RFC 2385; no
// privilege is needed on loopback) and graceful restart offered on both
// sides.
func TestMD5AndGracefulRestart(t *testing.T) {
	p := newPair(t, func(pr *Peer) {
		pr.Password = "wren-test-secret"
		pr.GracefulRestartSeconds = 120
	})
	if ps, _ := peerStatus(t, p.b, addrA); ps.State != "established" {
		t.Fatalf("B: state %s", ps.State)
	}
}

// TestMD5WrongPassword checks that the password is enforced: with different
// keys the kernel drops the segments and the session never comes up. B's
// first connection attempt is within 1-2 s (GoBGP's minimum connect retry),
// the next after ConnectRetrySeconds (5 s), so 8 s covers two attempts.
func TestMD5WrongPassword(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	a, err := New(Config{RouterID: nodeA, AS: testAS, ListenPort: int32(port), ListenAddresses: []string{addrA.String()}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{RouterID: nodeB, AS: testAS, ListenPort: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Speaker{a, b} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	if err := a.SetPeers(ctx, []Peer{{Address: addrB, AS: testAS, Passive: true, Password: "right"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers(ctx, []Peer{{Address: addrA, AS: testAS, Port: port, LocalAddress: addrB, Password: "wrong"}}); err != nil {
		t.Fatal(err)
	}
	window := time.NewTimer(8 * time.Second)
	defer window.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-window.C:
			return
		case <-tick.C:
			for _, c := range []struct {
				s    *Speaker
				peer netip.Addr
			}{{a, addrB}, {b, addrA}} {
				if ps, _ := peerStatus(t, c.s, c.peer); ps.State == "established" || ps.State == "openconfirm" {
					t.Fatalf("session reached %s with mismatched MD5 passwords", ps.State)
				}
			}
		}
	}
}

func TestAdvertiseLearnWithdraw(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	pfx1 := netip.MustParsePrefix("10.244.1.0/26")
	pfx2 := netip.MustParsePrefix("10.244.2.0/26")
	pfxB := netip.MustParsePrefix("10.244.3.0/26")

	start := time.Now()
	if err := p.a.SetAdvertisements(ctx, []netip.Prefix{pfx1, pfx2}, nodeA); err != nil {
		t.Fatalf("A advertise: %v", err)
	}
	if err := p.b.SetAdvertisements(ctx, []netip.Prefix{pfxB}, nodeB); err != nil {
		t.Fatalf("B advertise: %v", err)
	}
	want := map[netip.Prefix]Route{
		pfx1: {Prefix: pfx1, NextHop: nodeA, PeerAddr: addrA},
		pfx2: {Prefix: pfx2, NextHop: nodeA, PeerAddr: addrA},
	}
	poll(t, 10*time.Second, "B learns A's prefixes", func() string { return cmp.Diff(want, p.b.Learned(), netipCmp) })
	t.Logf("advertise -> learned: %s", time.Since(start))

	wantA := map[netip.Prefix]Route{pfxB: {Prefix: pfxB, NextHop: nodeB, PeerAddr: addrB}}
	poll(t, 10*time.Second, "A learns B's prefix and not its own", func() string { return cmp.Diff(wantA, p.a.Learned(), netipCmp) })

	select {
	case <-p.b.Changed():
	default:
		t.Error("B's Changed channel was not poked after learning routes")
	}

	// Idempotent: the same advertisements again change nothing.
	if err := p.a.SetAdvertisements(ctx, []netip.Prefix{pfx2, pfx1}, nodeA); err != nil {
		t.Fatalf("A advertise again: %v", err)
	}

	start = time.Now()
	if err := p.a.SetAdvertisements(ctx, []netip.Prefix{pfx2}, nodeA); err != nil {
		t.Fatalf("A withdraw: %v", err)
	}
	delete(want, pfx1)
	poll(t, 10*time.Second, "B drops the withdrawn prefix", func() string { return cmp.Diff(want, p.b.Learned(), netipCmp) })
	t.Logf("withdraw -> dropped: %s", time.Since(start))

	// Counters from ListPeer: A sent one prefix, B received and accepted it.
	poll(t, 10*time.Second, "prefix counters", func() string {
		a, _ := peerStatus(t, p.a, addrB)
		b, _ := peerStatus(t, p.b, addrA)
		if a.Advertised != 1 || b.Received != 1 || b.Accepted != 1 {
			return fmt.Sprintf("A advertised %d, B received %d accepted %d", a.Advertised, b.Received, b.Accepted)
		}
		return ""
	})
	// A's own prefixes never showed up in A's feed.
	if diff := cmp.Diff(wantA, p.a.Learned(), netipCmp); diff != "" {
		t.Errorf("A learned (-want +got):\n%s", diff)
	}
}

func TestSetPeersIdempotentUpdateRemove(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	before, _ := peerStatus(t, p.b, addrA)

	// Same list again: nothing happens, the session is not touched.
	if err := p.b.SetPeers(ctx, []Peer{p.peerOfB}); err != nil {
		t.Fatalf("set peers again: %v", err)
	}
	if err := p.a.SetPeers(ctx, []Peer{p.peerOfA}); err != nil {
		t.Fatalf("set peers again: %v", err)
	}
	after := waitEstablished(t, p.b, addrA)
	if !after.Since.Equal(before.Since) {
		t.Errorf("identical SetPeers changed the session: since %s -> %s", before.Since, after.Since)
	}

	// New timers on B: the hold time is negotiated in OPEN, so SetPeers
	// promises a reset, and the new session runs with the new values.
	changed := p.peerOfB
	changed.HoldSeconds, changed.KeepaliveSeconds = 15, 5
	start := time.Now()
	if err := p.b.SetPeers(ctx, []Peer{changed}); err != nil {
		t.Fatalf("set new timers: %v", err)
	}
	poll(t, 30*time.Second, "session re-established with new timers", func() string {
		ps, _ := peerStatus(t, p.b, addrA)
		if ps.State != "established" || ps.ConfiguredHoldSeconds != 15 || ps.ConfiguredKeepaliveSeconds != 5 || ps.NegotiatedHoldSeconds != 15 || ps.KeepaliveSeconds != 5 {
			return fmt.Sprintf("B: %+v", ps)
		}
		if ps.Since.Equal(before.Since) {
			return "session not reset"
		}
		pa, _ := peerStatus(t, p.a, addrB)
		if pa.State != "established" || pa.NegotiatedHoldSeconds != 15 {
			return fmt.Sprintf("A: %+v", pa)
		}
		return ""
	})
	t.Logf("timer change -> re-established with new timers: %s", time.Since(start))

	// Every field of Peer is in OPEN or re-creates the session in GoBGP
	// v4 (TTL security included); the same Peer again changes nothing.
	cur, _ := peerStatus(t, p.b, addrA)
	if reset, why := NeedsReset(changed, Peer{}); !reset {
		t.Fatalf("NeedsReset(changed, zero) = false (%s)", why)
	}
	ttl := changed
	ttl.TTLMin = 1
	if reset, _ := NeedsReset(changed, ttl); !reset {
		t.Error("a TTL security change does not count as a reset, but GoBGP v4 re-creates the session for it")
	}
	same := changed
	if err := p.b.SetPeers(ctx, []Peer{same}); err != nil {
		t.Fatalf("set the same peer: %v", err)
	}
	if ps := waitEstablished(t, p.b, addrA); !ps.Since.Equal(cur.Since) {
		t.Errorf("an unchanged peer reset the session: since %s -> %s", cur.Since, ps.Since)
	}

	// Remove the peer on B: B has no peer any more, A's session goes down.
	start = time.Now()
	if err := p.b.SetPeers(ctx, nil); err != nil {
		t.Fatalf("remove peers: %v", err)
	}
	if st, _ := p.b.Status(ctx); len(st.Peers) != 0 {
		t.Errorf("B still lists peers: %+v", st.Peers)
	}
	poll(t, 10*time.Second, "A sees the session down", func() string {
		ps, ok := peerStatus(t, p.a, addrB)
		if !ok {
			return "A lost its peer config"
		}
		if ps.State == "established" {
			return "still established"
		}
		return ""
	})
	t.Logf("peer removed on B -> down on A: %s", time.Since(start))
	if err := p.a.SetPeers(ctx, nil); err != nil {
		t.Fatalf("remove peers on A: %v", err)
	}
	if st, _ := p.a.Status(ctx); len(st.Peers) != 0 {
		t.Errorf("A still lists peers: %+v", st.Peers)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no router ID", Config{AS: 64512}, []string{"RouterID: not set"}},
		{"AS 0", Config{RouterID: nodeA}, []string{"AS: 0"}},
		{"both and port", Config{ListenPort: -2}, []string{"RouterID", "AS", "ListenPort"}},
		{"IPv6 router ID", Config{RouterID: netip.MustParseAddr("2001:db8::1"), AS: 1}, []string{"RouterID: 2001:db8::1 is not an IPv4"}},
		{"bad listen address", Config{RouterID: nodeA, AS: 1, ListenAddresses: []string{"nope"}}, []string{"ListenAddresses"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
	if err := (Config{RouterID: nodeA, AS: 1}).Defaults().Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	// Defaults gives AS 64512, so New only fails for the router ID.
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "RouterID") {
		t.Errorf("New(Config{}) error = %v, want RouterID error", err)
	}
}
