//go:build linux

package nstest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/internal/nsexec"
)

// Pinger sends ICMP echo requests from inside a network namespace at a
// fixed interval until stopped, and counts the replies: a continuous
// ping across an upgrade or an outage, with every lost probe accounted
// for. The raw socket is opened in the namespace (it keeps it), so no
// thread stays there.
type Pinger struct {
	fd       int
	dst      netip.Addr
	id       uint16
	interval time.Duration

	mu       sync.Mutex
	sent     map[uint16]time.Time // outstanding: sent, no reply yet
	nsent    int
	nrecv    int
	lostSeqs []uint16

	stop     chan struct{}
	stopOnce sync.Once
	result   PingStats
	done     sync.WaitGroup
}

// PingStats is a Pinger's result.
type PingStats struct {
	Dst      netip.Addr
	Sent     int
	Received int
	// Lost are the sequence numbers without a reply within a second.
	Lost []uint16
}

func (s PingStats) String() string {
	return fmt.Sprintf("%s: %d sent, %d received, %d lost", s.Dst, s.Sent, s.Received, len(s.Lost))
}

// StartPinger pings dst from ns every interval until Stop.
func StartPinger(ns netns.NsHandle, dst netip.Addr, interval time.Duration) (*Pinger, error) {
	var fd int
	if err := nsexec.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ICMP socket: %w", err)
	}
	// A receive timeout lets the reader notice Stop.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := &Pinger{fd: fd, dst: dst, id: uint16(time.Now().UnixNano()>>8) ^ uint16(fd), interval: interval,
		sent: map[uint16]time.Time{}, stop: make(chan struct{})}
	p.done.Add(2)
	go p.send()
	go p.receive()
	return p, nil
}

func (p *Pinger) send() {
	defer p.done.Done()
	to := &unix.SockaddrInet4{Addr: p.dst.As4()}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for seq := uint16(1); ; seq++ {
		msg := []byte{8, 0, 0, 0, byte(p.id >> 8), byte(p.id), byte(seq >> 8), byte(seq), 'w', 'r', 'e', 'n'}
		binary.BigEndian.PutUint16(msg[2:], Checksum(msg))
		p.mu.Lock()
		p.sent[seq] = time.Now()
		p.nsent++
		p.expire(time.Now().Add(-time.Second))
		p.mu.Unlock()
		_ = unix.Sendto(p.fd, msg, 0, to) // a send error is a lost probe
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// expire moves probes sent before cutoff without a reply to lostSeqs.
// p.mu is held.
func (p *Pinger) expire(cutoff time.Time) {
	for seq, at := range p.sent {
		if at.Before(cutoff) {
			delete(p.sent, seq)
			p.lostSeqs = append(p.lostSeqs, seq)
		}
	}
}

func (p *Pinger) receive() {
	defer p.done.Done()
	buf := make([]byte, 1500)
	for {
		// The socket sees every ICMP packet of the namespace (other
		// pingers' too), so Stop is checked on every turn, not only when
		// the receive timeout fires.
		select {
		case <-p.stop:
			p.mu.Lock()
			outstanding := len(p.sent)
			p.mu.Unlock()
			if outstanding == 0 {
				return
			}
		default:
		}
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			return
		}
		p.record(buf[:n])
	}
}

// record counts an echo reply of ours (the raw socket delivers the IPv4
// header too).
func (p *Pinger) record(pkt []byte) {
	if len(pkt) < 20 {
		return
	}
	hl := int(pkt[0]&0x0f) * 4
	if len(pkt) < hl+8 {
		return
	}
	icmp := pkt[hl:]
	if icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != p.id {
		return
	}
	if src, _ := netip.AddrFromSlice(pkt[12:16]); src != p.dst {
		return
	}
	seq := binary.BigEndian.Uint16(icmp[6:])
	p.mu.Lock()
	if _, ok := p.sent[seq]; ok {
		delete(p.sent, seq)
		p.nrecv++
	}
	p.mu.Unlock()
}

// Stop stops sending, waits up to a second for the replies in flight and
// returns the counts. Later calls return the same counts.
func (p *Pinger) Stop() PingStats {
	p.stopOnce.Do(func() { p.result = p.stopNow() })
	return p.result
}

func (p *Pinger) stopNow() PingStats {
	close(p.stop)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		n := len(p.sent)
		p.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Shutdown(p.fd, unix.SHUT_RDWR)
	p.mu.Lock()
	p.expire(time.Now().Add(time.Hour))
	p.mu.Unlock()
	p.done.Wait()
	unix.Close(p.fd)
	p.mu.Lock()
	defer p.mu.Unlock()
	return PingStats{Dst: p.dst, Sent: p.nsent, Received: p.nrecv, Lost: append([]uint16(nil), p.lostSeqs...)}
}

// Stats returns the counts so far (probes younger than a second are
// neither received nor lost yet).
func (p *Pinger) Stats() PingStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PingStats{Dst: p.dst, Sent: p.nsent, Received: p.nrecv, Lost: append([]uint16(nil), p.lostSeqs...)}
}

// Checksum is the Internet checksum (RFC 1071) of an ICMP message.
func Checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// Received is the number of replies so far.
func (p *Pinger) Received() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nrecv
}
