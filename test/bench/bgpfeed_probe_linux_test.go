//go:build linux

package bench

// Probes of the BGP route feed benchmark (bgpfeed_linux_test.go), each
// cheap enough not to slow what it watches:
//
//   - bgpSniffer: an AF_PACKET socket on eth0 of the receiving namespace
//     that timestamps, with the kernel's receive times (SO_TIMESTAMPNS),
//     the TCP segments from the feeder: the first one carrying an UPDATE
//     (T0 of an ingest), the last one with any payload but a lone
//     KEEPALIVE (the feed delivered), and a NOTIFICATION (T1 of a
//     withdraw: the feeder's Cease).
//   - routeMonitor: a netlink socket in a receiver's namespace subscribed
//     to RTNLGRP_IPV4_ROUTE, decoding by hand only family, prefix length,
//     protocol and RTA_DST of each RTM_NEWROUTE/RTM_DELROUTE, counting the
//     feed's /26 routes with one protocol (87 for Wren's, 12 for BIRD's)
//     in a bitmap.
//   - the plain GoBGP v4 server: the test binary itself, re-executed inside
//     its own namespace ("ip netns exec <ns> <test binary>
//     -test.run=^TestBGPFeedRefHelper$"), with one eBGP neighbour (the
//     feeder) and counting prefixes from its best-path watch; it prints
//     "first", "full" and "empty" with the wall clock in nanoseconds.
//     (GoBGP's sockets live in the namespace of the process that runs it,
//     so it cannot run in the benchmark process.)

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	nstest "github.com/wren-net/wren/test/netns"
)

// socketAt opens a socket inside ns (on a locked thread of its own
// goroutine, as rawICMPSocketAt does).
func socketAt(ns netns.NsHandle, domain, typ, proto int) (int, error) {
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
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// reader runs loop on its own goroutine until the test ends; the socket
// has a 100 ms receive timeout so that the goroutine notices the end.
func reader(tb testing.TB, fd int, loop func(stop <-chan struct{})) {
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		loop(stop)
	}()
	tb.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
}

// bgpSniffer timestamps the feeder's BGP segments arriving in one
// namespace.
type bgpSniffer struct {
	from [4]byte // the feeder's address

	mu          sync.Mutex
	armed       time.Time // segments before this are ignored
	firstUpdate time.Time
	lastPayload time.Time
	notify      time.Time
	err         error
}

var bgpMarker = bytes.Repeat([]byte{0xff}, 16)

func newBGPSniffer(tb testing.TB, ns *nstest.NS, ifName string, from netip.Addr) *bgpSniffer {
	tb.Helper()
	link := ns.Link(tb, ifName)
	fd, err := socketAt(ns.Handle, unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
	if err != nil {
		tb.Fatalf("packet socket in %s: %v", ns.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: link.Attrs().Index}); err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	// The kernel's receive time of each packet, not the time this
	// goroutine got to it: on two CPUs busy with an ingest, it can be
	// scheduled milliseconds late.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		tb.Fatalf("SO_TIMESTAMPNS: %v", err)
	}
	s := &bgpSniffer{from: from.As4()}
	reader(tb, fd, func(stop <-chan struct{}) {
		buf := make([]byte, 256<<10) // GSO segments on veth can be 64 KiB
		oob := make([]byte, 128)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
			now := time.Now()
			if err == nil {
				now = packetTime(oob[:oobn], now)
			}
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			s.packet(now, buf[:n])
		}
	})
	return s
}

// packetTime is the SCM_TIMESTAMPNS time in oob, or else fallback.
func packetTime(oob []byte, fallback time.Time) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fallback
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			if sec > 0 {
				return time.Unix(sec, nsec)
			}
		}
	}
	return fallback
}

// packet looks at one IPv4 packet.
func (s *bgpSniffer) packet(now time.Time, p []byte) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP || !bytes.Equal(p[12:16], s.from[:]) {
		return
	}
	ihl := int(p[0]&0xf) * 4
	if tot := int(binary.BigEndian.Uint16(p[2:4])); tot >= ihl && tot < len(p) {
		p = p[:tot]
	}
	if len(p) < ihl+20 {
		return
	}
	tcp := p[ihl:]
	doff := int(tcp[12]>>4) * 4
	if len(tcp) <= doff {
		return // no payload
	}
	payload := tcp[doff:]
	update, notify := false, false
	for rest := payload; ; {
		i := bytes.Index(rest, bgpMarker)
		if i < 0 || i+19 > len(rest) {
			break
		}
		switch rest[i+18] {
		case 2:
			update = true
		case 3:
			notify = true
		}
		rest = rest[i+16:]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.armed) {
		return
	}
	// A lone KEEPALIVE (the feeder sends one every 30 s) is not the feed.
	if !(len(payload) == bgpHeaderLen && payload[18] == bgpKeepalive) {
		s.lastPayload = now
	}
	if update && s.firstUpdate.IsZero() {
		s.firstUpdate = now
	}
	if notify && s.notify.IsZero() {
		s.notify = now
	}
}

// arm forgets what was seen and starts watching from now.
func (s *bgpSniffer) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = time.Now()
	s.firstUpdate, s.lastPayload, s.notify = time.Time{}, time.Time{}, time.Time{}
}

func (s *bgpSniffer) seen() (firstUpdate, lastPayload, notify time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstUpdate, s.lastPayload, s.notify, s.err
}

// routeMonitor counts the feed's routes in one namespace's kernel from
// route notifications.
type routeMonitor struct {
	proto byte // the route protocol counted
	n     int  // the feed's first n /26s are counted

	mu      sync.Mutex
	present []bool
	count   int
	firstAt time.Time // count went 0 → 1
	fullAt  time.Time // count reached n
	halfAt  time.Time // count reached n/2
	p90At   time.Time // count reached 90% of n
	emptyAt time.Time // count reached 0
	err     error     // e.g. ENOBUFS: a notification was lost
}

// Route protocols (rtnetlink.h RTPROT_*): Wren's, as registered in
// rt_protos by the agent's install step, and BIRD's.
const (
	rtprotWren = 87
	rtprotBird = 12
)

func newRouteMonitor(tb testing.TB, ns *nstest.NS, proto byte, n int) *routeMonitor {
	tb.Helper()
	fd, err := socketAt(ns.Handle, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	if err != nil {
		tb.Fatalf("netlink socket in %s: %v", ns.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_ROUTE}); err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 256<<20); err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	m := &routeMonitor{proto: proto, n: n, present: make([]bool, n)}
	reader(tb, fd, func(stop <-chan struct{}) {
		buf := make([]byte, 1<<20)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			now := time.Now()
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				m.mu.Lock()
				m.err = fmt.Errorf("route notifications: %w", err)
				m.mu.Unlock()
				if errors.Is(err, unix.ENOBUFS) {
					continue
				}
				return
			}
			m.messages(now, buf[:n])
		}
	})
	return m
}

func (m *routeMonitor) messages(now time.Time, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		msg := b[unix.NLMSG_HDRLEN:l]
		b = b[min((l+3)&^3, len(b)):]
		if typ != unix.RTM_NEWROUTE && typ != unix.RTM_DELROUTE || len(msg) < unix.SizeofRtMsg {
			continue
		}
		// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
		if msg[0] != unix.AF_INET || msg[1] != feedBits || msg[5] != m.proto {
			continue
		}
		for a := msg[unix.SizeofRtMsg:]; len(a) >= 4; {
			al := int(binary.NativeEndian.Uint16(a[0:2]))
			at := binary.NativeEndian.Uint16(a[2:4])
			if al < 4 || al > len(a) {
				break
			}
			if at == unix.RTA_DST && al == 8 {
				if i := feedIndex(binary.BigEndian.Uint32(a[4:8])); i >= 0 && i < m.n {
					m.set(now, i, typ == unix.RTM_NEWROUTE)
				}
				break
			}
			a = a[min((al+3)&^3, len(a)):]
		}
	}
}

func (m *routeMonitor) set(now time.Time, i int, on bool) {
	if m.present[i] == on {
		return
	}
	m.present[i] = on
	if on {
		m.count++
		if m.count == 1 && m.firstAt.IsZero() {
			m.firstAt = now
		}
		switch m.count {
		case m.n / 2:
			m.halfAt = now
		case m.n * 9 / 10:
			m.p90At = now
		}
		if m.count == m.n {
			m.fullAt = now
		}
	} else {
		m.count--
		if m.count == 0 {
			m.emptyAt = now
		}
	}
}

// arm forgets the recorded times (not the count).
func (m *routeMonitor) arm() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.firstAt, m.fullAt, m.emptyAt, m.halfAt, m.p90At = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
}

func (m *routeMonitor) progress() (half, p90 time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.halfAt, m.p90At
}

// times is the feedCounter view: first route, all n, none left.
func (m *routeMonitor) times() (count int, first, full, empty time.Time, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count, m.firstAt, m.fullAt, m.emptyAt, m.err
}

// refHelperEnv carries the plain GoBGP server's settings to the
// re-executed test binary: "routerID,AS,neighbour,neighbourAS,prefixes".
const refHelperEnv = "WREN_BGPFEED_REF"

// refSpeaker is the running plain GoBGP process and what it reported.
type refSpeaker struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan struct{}
	logPath string
	stopped sync.Once

	mu          sync.Mutex
	first, full time.Time
	empty       time.Time
	armed       time.Time
	count       int
	ready       bool
}

// startRefSpeaker runs a plain GoBGP v4 server in ns, listening on
// routerID:179, with one eBGP neighbour; stop ends it (the test's cleanup
// does too).
func startRefSpeaker(tb testing.TB, ns *nstest.NS, routerID netip.Addr, as uint32, neighbor netip.Addr, peerAS uint32, n int) *refSpeaker {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(tb.TempDir(), "gobgp.log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^TestBGPFeedRefHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%s,%d,%d", refHelperEnv, routerID, as, neighbor, peerAS, n))
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	r := &refSpeaker{cmd: cmd, stdin: stdin, exited: make(chan struct{}), logPath: logPath}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that forked: start and wait on one
		// locked thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(r.exited)
			return
		}
		started <- nil
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.line(sc.Text())
		}
		_ = cmd.Wait()
		close(r.exited)
	}()
	if err := <-started; err != nil {
		tb.Fatalf("start GoBGP: %v", err)
	}
	tb.Cleanup(func() {
		r.stop()
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			tb.Logf("GoBGP log:\n%s", b)
		}
	})
	nstest.Poll(tb, 30*time.Second, "GoBGP started", func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		select {
		case <-r.exited:
			b, _ := os.ReadFile(logPath)
			tb.Fatalf("GoBGP exited: %s\n%s", cmd.ProcessState, b)
		default:
		}
		if !r.ready {
			return errors.New("no \"ready\" line yet")
		}
		return nil
	})
	return r
}

// pid is the GoBGP process's ("ip netns exec" execs the test binary).
func (r *refSpeaker) pid() int { return r.cmd.Process.Pid }

// stop closes the helper's stdin, on which it exits, and waits for it.
func (r *refSpeaker) stop() {
	r.stopped.Do(func() {
		r.stdin.Close()
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill() // by PID
			<-r.exited
		}
	})
}

// line takes one "bgpfeed-ref <event> <unix ns> <count>" line.
func (r *refSpeaker) line(s string) {
	f := strings.Fields(s)
	if len(f) != 4 || f[0] != "bgpfeed-ref" {
		return
	}
	ns, err1 := strconv.ParseInt(f[2], 10, 64)
	c, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return
	}
	t := time.Unix(0, ns)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count = c
	if f[1] == "ready" {
		r.ready = true
	}
	if t.Before(r.armed) {
		return
	}
	switch f[1] {
	case "first":
		r.first = t
	case "full":
		r.full = t
	case "empty":
		r.empty = t
	}
}

func (r *refSpeaker) arm() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed = time.Now()
	r.first, r.full, r.empty = time.Time{}, time.Time{}, time.Time{}
}

// times is the feedCounter view: first best path, all n, none left.
func (r *refSpeaker) times() (count int, first, full, empty time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.exited:
		err = errors.New("GoBGP exited")
	default:
	}
	return r.count, r.first, r.full, r.empty, err
}

// TestBGPFeedRefHelper is the plain GoBGP v4 server of BenchmarkBGPFeed
// when the test binary is re-executed with WREN_BGPFEED_REF set; otherwise
// it skips.
func TestBGPFeedRefHelper(t *testing.T) {
	spec := os.Getenv(refHelperEnv)
	if spec == "" {
		t.Skip("the plain GoBGP process of BenchmarkBGPFeed; runs only when re-executed by it")
	}
	f := strings.Split(spec, ",")
	if len(f) != 5 {
		t.Fatalf("%s=%q", refHelperEnv, spec)
	}
	as, _ := strconv.ParseUint(f[1], 10, 32)
	peerAS, _ := strconv.ParseUint(f[3], 10, 32)
	want, _ := strconv.Atoi(f[4])
	ctx := context.Background()
	s := server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})), nil))
	go s.Serve()
	// Listening on its own address (the feeder connects). Families: index
	// 0 of GoBGP's AFI-SAFI table (oc.IntToAfiSafiTypeMap) = ipv4-unicast.
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: uint32(as), RouterId: f[0],
		ListenPort: 179, ListenAddresses: []string{f[0]}, Families: []uint32{0}}}); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(os.Stdout)
	report := func(ev string, n int) {
		fmt.Fprintf(w, "bgpfeed-ref %s %d %d\n", ev, time.Now().UnixNano(), n)
		w.Flush()
	}
	// The count is kept in a bitmap over the feed's prefixes, not a map,
	// so that it adds little to the process's RSS, which is measured.
	var (
		mu      sync.Mutex
		present = make([]bool, want)
		have    int
	)
	// Counted from the best-path watch, never by polling the table (FIELD-NOTES:
	// ListPath walks the table inside GoBGP's management loop).
	err := s.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnBestPath: func(paths []*apiutil.Path, _ time.Time) {
		if len(paths) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		before := have
		for _, p := range paths {
			if p.Family != bgp.RF_IPv4_UC {
				continue
			}
			nlri, ok := p.Nlri.(*bgp.IPAddrPrefix)
			if !ok || nlri.Prefix.Bits() != feedBits || !nlri.Prefix.Addr().Is4() {
				continue
			}
			i := feedIndex(be32(nlri.Prefix.Addr()))
			if i < 0 || i >= want || present[i] == !p.Withdrawal {
				continue
			}
			present[i] = !p.Withdrawal
			if p.Withdrawal {
				have--
			} else {
				have++
			}
		}
		switch n := have; {
		case before == 0 && n > 0:
			report("first", n)
			if n == want {
				report("full", n)
			}
		case before != want && n == want:
			report("full", n)
		case before > 0 && n == 0:
			report("empty", n)
		}
	}}, server.WatchBestPath(false))
	if err != nil {
		t.Fatal(err)
	}
	// GoBGP v4's enums start at *_UNSPECIFIED = 0: every one is set.
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: f[2], PeerAsn: uint32(peerAS),
			Type:          api.PeerType_PEER_TYPE_EXTERNAL,
			RemovePrivate: api.RemovePrivate_REMOVE_PRIVATE_UNSPECIFIED}, // keep private AS numbers
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family:  &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
			Enabled: true}}},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 5, HoldTime: 90, KeepaliveInterval: 30}},
		Transport: &api.Transport{LocalAddress: f[0]},
	}}); err != nil {
		t.Fatal(err)
	}
	report("ready", 0)
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0) // GoBGP's goroutines never end; Stop would send Cease needlessly
}
