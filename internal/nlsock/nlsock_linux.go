// Package nlsock opens raw NETLINK_ROUTE sockets inside a network
// namespace without moving the caller's thread.
package nlsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"
	"github.com/wren-net/wren/internal/nsexec"
	"golang.org/x/sys/unix"
)

// Open returns a bound, blocking NETLINK_ROUTE socket in ns (a value <= 0
// means the caller's namespace) subscribed to the multicast groups bitmask
// (RTMGRP_*; 0 for none). Reads time out after readTimeout so no caller
// can hang forever. The socket has strict dump checking (kernel-side dump
// filters), extended acks (error strings) and capped acks enabled, and 4
// MiB buffers.
//
// A socket stays in the namespace it was created in, so it is created by
// nsexec.Do on a thread that joins ns, leaving the caller's thread alone.
func Open(ns netns.NsHandle, groups uint32, readTimeout time.Duration) (int, error) {
	fd := -1
	err := nsexec.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return -1, err
	}
	opts := []struct{ level, opt, val int }{
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 4 << 20},
		{unix.SOL_SOCKET, unix.SO_SNDBUF, 4 << 20},
		{unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1},
		{unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1},
		{unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("netlink setsockopt %d/%d: %w", o.level, o.opt, err)
		}
	}
	// SO_RCVBUF is capped by net.core.rmem_max; as root, force the size so
	// a burst of 100k route notifications fits (SO_RCVBUFFORCE needs
	// CAP_NET_ADMIN; without it the capped size stands).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	if readTimeout > 0 {
		tv := unix.NsecToTimeval(readTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("netlink setsockopt SO_RCVTIMEO: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind netlink socket: %w", err)
	}
	return fd, nil
}

// PortID returns the netlink port id the kernel assigned to fd at bind.
// Notifications caused by a request on fd carry it as nlmsg_pid.
func PortID(fd int) (uint32, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("netlink getsockname: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return 0, fmt.Errorf("netlink getsockname: not a netlink socket")
	}
	return nl.Pid, nil
}

// IgnorePorts attaches a classic BPF filter to a subscribed socket that
// drops every notification whose nlmsg_pid is one of ports: the kernel's
// echoes of changes made through those sockets. Dropped in the kernel,
// they cost no wake-up, no copy and no queue space.
func IgnorePorts(fd int, ports []uint32) error {
	if len(ports) == 0 {
		return nil
	}
	if len(ports) > 200 {
		return fmt.Errorf("netlink filter: %d ports is too many", len(ports))
	}
	// ld [12] loads nlmsg_pid as a big-endian word; compare with the
	// port id's bytes read the same way.
	prog := []unix.SockFilter{{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}}
	for i, p := range ports {
		jt := uint8(len(ports) - i) // forward to the final "drop"
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: 0, K: bigEndianWord(p)})
	}
	prog = append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // accept
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
	)
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attach netlink filter: %w", err)
	}
	return nil
}

// bigEndianWord is what a BPF absolute load sees for the native-endian
// uint32 v in the packet.
func bigEndianWord(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

// Watch reads notifications from fd (opened with a read timeout, so that
// the loop sees ctx end) until ctx ends, then closes fd. It calls poke for
// every batch relevant reports, and when the kernel dropped notifications
// (ENOBUFS: one of them may have mattered, so the caller resyncs). what
// names the notifications in errors and the overflow's Debug line. poke
// must not block.
func Watch(ctx context.Context, fd int, bufSize int, what string, log *slog.Logger, relevant func([]byte) bool, poke func()) error {
	defer unix.Close(fd)
	buf := make([]byte, bufSize)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			log.Debug(what + " overflowed; resyncing")
			poke()
			continue
		case err != nil:
			return fmt.Errorf("read %s: %w", what, err)
		}
		if relevant(buf[:n]) {
			poke()
		}
	}
	return nil
}
