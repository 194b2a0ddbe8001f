// Package nlsock opens raw NETLINK_ROUTE sockets inside a network
// namespace without moving the caller's thread.
package nlsock

import (
	"fmt"
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
