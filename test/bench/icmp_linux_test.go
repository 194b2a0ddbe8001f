//go:build linux

package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	nstest "github.com/wren-net/wren/test/netns"
)

// pinger sends ICMP echo requests from inside one network namespace over
// a raw socket opened there. A socket keeps the namespace it was created
// in, so after creation no thread ever needs to enter the namespace, and
// each probe costs microseconds instead of the milliseconds of an
// "ip netns exec ping" (fork, setns, remount /sys, exec): the poll can
// then run every couple of milliseconds and "pingable" is measured to that
// resolution, for both plugins alike.
type pinger struct {
	fd  int
	id  uint16
	seq uint16
	buf []byte
}

// probeInterval is how long one echo request is given before the next is
// sent. A reply that arrives later still counts.
const probeInterval = 2 * time.Millisecond

func newPinger(tb testing.TB, ns netns.NsHandle) *pinger {
	tb.Helper()
	fd, err := rawICMPSocketAt(ns)
	if err != nil {
		tb.Fatalf("ICMP socket in the node namespace: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &pinger{fd: fd, id: uint16(time.Now().UnixNano()), buf: make([]byte, 1500)}
}

// rawICMPSocketAt opens a raw ICMP socket inside ns. The switch happens on
// a locked thread of a goroutine of its own; should switching back fail,
// the thread stays locked and dies with the goroutine, so no other
// goroutine ever runs in the wrong namespace.
func rawICMPSocketAt(ns netns.NsHandle) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("enter netns: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// waitReachable probes dst until an echo reply comes back or deadline
// passes.
func (p *pinger) waitReachable(dst netip.Addr, deadline time.Duration) error {
	start := time.Now()
	first := p.seq + 1
	lastErr := errors.New("no echo reply")
	for time.Since(start) < deadline {
		p.seq++
		if err := p.send(dst, p.seq); err != nil {
			// ENETUNREACH and friends: not there yet.
			lastErr = err
			time.Sleep(probeInterval)
			continue
		}
		ok, err := p.receive(dst, first, probeInterval)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("ping %s: not answered within %s: %w", dst, deadline, lastErr)
}

func (p *pinger) send(dst netip.Addr, seq uint16) error {
	var pkt [16]byte
	pkt[0] = 8 // echo request, code 0
	binary.BigEndian.PutUint16(pkt[4:], p.id)
	binary.BigEndian.PutUint16(pkt[6:], seq)
	binary.BigEndian.PutUint64(pkt[8:], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint16(pkt[2:], nstest.Checksum(pkt[:]))
	if err := unix.Sendto(p.fd, pkt[:], 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		return fmt.Errorf("send echo request to %s: %w", dst, err)
	}
	return nil
}

// receive reads until an echo reply from dst to one of this session's
// requests (sequence numbers from first on) arrives, or wait is over.
func (p *pinger) receive(dst netip.Addr, first uint16, wait time.Duration) (bool, error) {
	until := time.Now().Add(wait)
	for {
		left := time.Until(until)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(max(left.Milliseconds(), 1)))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false, fmt.Errorf("poll ICMP socket: %w", err)
		}
		if n <= 0 {
			continue
		}
		for {
			m, _, err := unix.Recvfrom(p.fd, p.buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				break
			}
			if err != nil {
				return false, fmt.Errorf("read ICMP socket: %w", err)
			}
			if p.isReply(p.buf[:m], dst, first) {
				return true, nil
			}
		}
	}
}

// isReply parses an IPv4 packet as a raw ICMP socket delivers it.
func (p *pinger) isReply(b []byte, dst netip.Addr, first uint16) bool {
	if len(b) < 20 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+8 || netip.AddrFrom4([4]byte(b[12:16])) != dst {
		return false
	}
	icmp := b[ihl:]
	if icmp[0] != 0 || icmp[1] != 0 || binary.BigEndian.Uint16(icmp[4:]) != p.id {
		return false
	}
	seq := binary.BigEndian.Uint16(icmp[6:])
	return seq-first <= p.seq-first // wrap-safe: seq in [first, p.seq]
}
