// Package netwatch turns kernel netlink notifications into pokes of the
// reconcile loop, so that a route, link, address, neighbour or FDB entry
// changed behind Wren's back is repaired at once instead of at the next
// periodic resync. It never does I/O on behalf of the loop and never
// blocks it: a poke is a non-blocking channel send in the caller.
package netwatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/internal/nlsock"
)

// Config selects the namespace and the route table to watch.
type Config struct {
	// NS is the namespace to watch; <= 0 means the caller's.
	NS netns.NsHandle
	// Table is the route table whose changes matter (main by default).
	Table uint32
	// IgnorePorts are netlink port ids whose changes are not reported:
	// Wren's own route writers (routes.NetlinkKernel.PortIDs). Their
	// echoes are dropped by a socket filter in the kernel.
	IgnorePorts []uint32
	// Logger reports lost notifications.
	Logger *slog.Logger
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Table == 0 {
		c.Table = unix.RT_TABLE_MAIN
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

const groups = unix.RTMGRP_LINK | unix.RTMGRP_NEIGH | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV4_ROUTE

// Watcher holds a subscribed socket.
type Watcher struct {
	cfg Config
	fd  int
}

// New subscribes to link, address, IPv4 route and neighbour notifications
// in cfg.NS. Subscribing before the first Apply means no change between
// the first listing and the watch start can be missed.
func New(cfg Config) (*Watcher, error) {
	cfg.Defaults()
	fd, err := nlsock.Open(cfg.NS, groups, 250*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("subscribe to netlink notifications: %w", err)
	}
	if err := nlsock.IgnorePorts(fd, cfg.IgnorePorts); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Watcher{cfg: cfg, fd: fd}, nil
}

// Run calls poke for every relevant notification until ctx ends, then
// closes the socket. poke must not block.
func (w *Watcher) Run(ctx context.Context, poke func()) error {
	// An overflow is usually a burst of our own writes.
	return nlsock.Watch(ctx, w.fd, 1<<20, "netlink notifications", w.cfg.Logger,
		func(b []byte) bool { return relevant(b, w.cfg.Table) }, poke)
}

// relevant reports whether any message in b may concern Wren's state:
//   - routes in the watched table, except the kernel's own connected
//     routes (proto kernel) which follow addresses;
//   - every link and address change (rare, and cali/tunnel flaps matter);
//   - permanent neighbours and bridge FDB entries (VTEP state), but not the
//     constant ARP churn of the underlay (reachable/stale transitions).
func relevant(b []byte, table uint32) bool {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return true // cannot parse: be safe
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		msg := b[unix.NLMSG_HDRLEN:l]
		b = b[(l+3)&^3:]
		switch typ {
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			if len(msg) < unix.SizeofRtMsg || msg[0] != unix.AF_INET {
				continue
			}
			t := uint32(msg[4])
			for a := msg[unix.SizeofRtMsg:]; len(a) >= 4; {
				al := int(binary.NativeEndian.Uint16(a[0:2]))
				if al < 4 || al > len(a) {
					break
				}
				if binary.NativeEndian.Uint16(a[2:4]) == unix.RTA_TABLE && al >= 8 {
					t = binary.NativeEndian.Uint32(a[4:8])
				}
				a = a[(al+3)&^3:]
			}
			if t == table && msg[5] != unix.RTPROT_KERNEL {
				return true
			}
		case unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
			return true
		case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
			// struct ndmsg: family u8, pad, pad, ifindex s32, state u16, ...
			if len(msg) < 12 {
				continue
			}
			state := binary.NativeEndian.Uint16(msg[8:10])
			if msg[0] == unix.AF_BRIDGE || state&(unix.NUD_PERMANENT|unix.NUD_NOARP) != 0 {
				return true
			}
		}
	}
	return false
}
