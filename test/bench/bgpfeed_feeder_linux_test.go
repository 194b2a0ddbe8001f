//go:build linux

package bench

// The feeder of the BGP route feed benchmark: a BGP speaker written for
// it, not a routing daemon. It runs in the benchmark process with its
// sockets in the feeder's namespace (socketAt), connects to one receiver
// at a time on port 179, completes OPEN/KEEPALIVE, and then, when told,
// writes the pre-built feed (bgpUpdates: UPDATEs of up to 4096 bytes, the
// same bytes for every receiver, then End-of-RIB) in one go, as fast as
// TCP lets it; "withdraw" is a Cease NOTIFICATION and the end of the
// connection, what a peer going away on purpose sends (and what "birdc
// disable" sent when BIRD 2 was the feeder). Nothing waits on a timer:
// the receiver's TCP window alone paces the feed. It reads and discards
// whatever the receiver sends, so the receiver never blocks on it, and
// sends a KEEPALIVE every hold/3.
//
// Why not BIRD 2 any more: BIRD 2.0.12 holds its last UPDATE until a 3 s
// poll timeout unless the receiver sends something, so the feed's end
// depended on the receiver's keepalive timing (docs/benchmarks.md).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	nstest "github.com/wren-net/wren/test/netns"
)

const feedHold = 90 // seconds, offered in OPEN

// feeder is the speaker: its namespace, address and AS.
type feeder struct {
	ns   *nstest.NS
	addr netip.Addr
	as   uint32
}

// feedSession is one established session with a receiver.
type feedSession struct {
	conn *net.TCPConn
	peer netip.Addr

	wmu      sync.Mutex // one writer at a time: the feed, keepalives, the Cease
	stopKA   chan struct{}
	readDone chan struct{} // closed when the receiver closed the connection
	readErr  error         // why reading stopped; valid after readDone
	notified chan struct{} // closed if the receiver sent a NOTIFICATION
}

// dialOnce makes one TCP connection from the feeder's namespace.
func (f *feeder) dialOnce(peer netip.Addr) (*net.TCPConn, error) {
	fd, err := socketAt(f.ns.Handle, unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, err
	}
	// A blocking connect bounded by SO_SNDTIMEO; the peer is on the same
	// switch, so a refusal comes back at once.
	tv := unix.Timeval{Sec: 3}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A directly connected eBGP peer sends with TTL 1 (RFC 4271 §5.1.3
	// leaves it to configuration; GoBGP and BIRD do this by default).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: f.addr.As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", f.addr, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: peer.As4(), Port: 179}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s:179: %w", peer, err)
	}
	tv = unix.Timeval{}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	file := os.NewFile(uintptr(fd), "bgp")
	c, err := net.FileConn(file) // dups the descriptor
	file.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// handshake sends OPEN, reads the receiver's OPEN, sends KEEPALIVE and
// waits for the receiver's KEEPALIVE.
func (f *feeder) handshake(c *net.TCPConn, peerAS uint32) error {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(bgpOpenMsg(f.as, feedHold, f.addr)); err != nil {
		return fmt.Errorf("send OPEN: %w", err)
	}
	buf := make([]byte, bgpMaxLen)
	gotOpen := false
	for {
		typ, body, err := readBGP(c, buf)
		if err != nil {
			return fmt.Errorf("read (OPEN seen: %v): %w", gotOpen, err)
		}
		switch typ {
		case bgpOpen:
			o, err := parseBGPOpen(body)
			if err != nil {
				return err
			}
			if !o.fourOct {
				// The feed's AS_PATH is in 4-octet form (bgpUpdates).
				return errors.New("the receiver's OPEN lacks the 4-octet AS capability")
			}
			if o.as != peerAS {
				return fmt.Errorf("the receiver's OPEN says AS %d, want %d", o.as, peerAS)
			}
			gotOpen = true
			if _, err := c.Write(bgpKeepaliveMsg()); err != nil {
				return fmt.Errorf("send KEEPALIVE: %w", err)
			}
		case bgpKeepalive:
			if gotOpen {
				return c.SetDeadline(time.Time{})
			}
		case bgpNotification:
			return fmt.Errorf("NOTIFICATION %v from the receiver", body[:min(2, len(body))])
		}
	}
}

// dial connects to the receiver and establishes a session, trying again
// every 200 ms until deadline: a receiver that just dropped a session
// refuses new ones for a while (GoBGP stays Idle 5 s; BIRD waits its
// "error wait time").
func (f *feeder) dial(tb testing.TB, peer netip.Addr, peerAS uint32, deadline time.Duration) *feedSession {
	tb.Helper()
	var c *net.TCPConn
	tries := 0
	nstest.PollEvery(tb, 200*time.Millisecond, deadline, fmt.Sprintf("BGP session from the feeder to %s", peer), func() error {
		tries++
		conn, err := f.dialOnce(peer)
		if err != nil {
			return err
		}
		if err := f.handshake(conn, peerAS); err != nil {
			conn.Close()
			return err
		}
		c = conn
		return nil
	})
	s := &feedSession{conn: c, peer: peer, stopKA: make(chan struct{}), readDone: make(chan struct{}), notified: make(chan struct{})}
	go s.read()
	go s.keepalive()
	tb.Cleanup(func() { s.close() })
	return s
}

// read discards everything the receiver sends until it closes the
// connection.
func (s *feedSession) read() {
	defer close(s.readDone)
	buf := make([]byte, bgpMaxLen)
	once := sync.Once{}
	for {
		typ, _, err := readBGP(s.conn, buf)
		if err != nil {
			s.readErr = err
			return
		}
		if typ == bgpNotification {
			once.Do(func() { close(s.notified) })
		}
	}
}

func (s *feedSession) keepalive() {
	t := time.NewTicker(feedHold / 3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stopKA:
			return
		case <-t.C:
			s.wmu.Lock()
			_, _ = s.conn.Write(bgpKeepaliveMsg())
			s.wmu.Unlock()
		}
	}
}

// send writes msgs (the whole feed, say); it returns when the last byte
// is in the socket's send buffer.
func (s *feedSession) send(msgs []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	select {
	case <-s.readDone:
		return fmt.Errorf("session to %s closed by the receiver: %w", s.peer, s.readErr)
	default:
	}
	if _, err := s.conn.Write(msgs); err != nil {
		return fmt.Errorf("send to %s: %w", s.peer, err)
	}
	return nil
}

// withdraw sends Cease and half-closes; the receiver then drops every
// route of the session and closes its side.
func (s *feedSession) withdraw() error {
	close(s.stopKA)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.conn.Write(bgpCeaseMsg()); err != nil {
		return fmt.Errorf("Cease to %s: %w", s.peer, err)
	}
	// A FIN after the NOTIFICATION, not a close: closing with unread data
	// would send a RST that can overtake the NOTIFICATION.
	return s.conn.CloseWrite()
}

// closed waits until the receiver has closed the connection.
func (s *feedSession) closed(tb testing.TB, deadline time.Duration) {
	tb.Helper()
	select {
	case <-s.readDone:
	case <-time.After(deadline):
		tb.Fatalf("%s kept the session open %s after the Cease", s.peer, deadline)
	}
}

func (s *feedSession) close() {
	select {
	case <-s.stopKA:
	default:
		close(s.stopKA)
	}
	s.conn.Close()
	<-s.readDone
}
