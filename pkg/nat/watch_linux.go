package nat

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/internal/nlsock"
	"github.com/wren-net/wren/internal/nsexec"
)

// WatchConfig selects the namespace whose nftables changes matter.
type WatchConfig struct {
	// NS is the namespace to watch; <= 0 means the caller's.
	NS netns.NsHandle
	// Ignore reports the netlink port id of Wren's own nftables socket
	// (NFTKernel.PortID): changes it made are not reported. 0 ignores
	// nothing.
	Ignore func() uint32
	// Logger reports lost notifications.
	Logger *slog.Logger
}

// Defaults fills unset fields.
func (c *WatchConfig) Defaults() {
	if c.Ignore == nil {
		c.Ignore = func() uint32 { return 0 }
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Watcher holds a socket subscribed to nftables notifications
// (NFNLGRP_NFTABLES): every table, chain, rule, set and element change in
// the namespace, with the netlink port id of the socket that made it.
type Watcher struct {
	cfg WatchConfig
	fd  int
}

// NewWatcher subscribes to nftables notifications in cfg.NS. Subscribe
// before the first Apply, so that no change between the first read and
// the start of the watch goes unseen.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	cfg.Defaults()
	fd := -1
	err := nsexec.Do(cfg.NS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nftables notifications: netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval((250 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nftables notifications: setsockopt SO_RCVTIMEO: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nftables notifications: bind: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.NFNLGRP_NFTABLES); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nftables notifications: join group NFNLGRP_NFTABLES (is nf_tables in the kernel?): %w", err)
	}
	return &Watcher{cfg: cfg, fd: fd}, nil
}

// Run calls poke for every change to table ip wren that Wren did not make
// itself, until ctx ends; then it closes the socket. poke must not block.
func (w *Watcher) Run(ctx context.Context, poke func()) error {
	return nlsock.Watch(ctx, w.fd, 256<<10, "nftables notifications", w.cfg.Logger,
		func(b []byte) bool { return relevant(b, w.cfg.Ignore()) }, poke)
}

// relevant reports whether any message in b changes table ip wren and
// was not sent by port self. Every nf_tables object message (table, chain,
// rule, set, element, object, flowtable) starts, after its nfgenmsg, with
// the table's name as attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
// NFTA_RULE_TABLE, ...); the generation messages that end a transaction
// carry none and are skipped.
func relevant(b []byte, self uint32) bool {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return true // cannot parse: be safe
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		pid := binary.NativeEndian.Uint32(b[12:16])
		msg := b[unix.NLMSG_HDRLEN:l]
		b = b[(l+3)&^3:]
		if typ>>8 != unix.NFNL_SUBSYS_NFTABLES || typ&0xff == unix.NFT_MSG_NEWGEN || self != 0 && pid == self {
			continue
		}
		// struct nfgenmsg: family u8, version u8, res_id be16.
		if len(msg) < 4 || msg[0] != unix.NFPROTO_IPV4 {
			continue
		}
		if tableAttr(msg[4:]) == Table {
			return true
		}
	}
	return false
}

// tableAttr returns the string value of attribute 1 in attrs ("" if
// absent).
func tableAttr(a []byte) string {
	for len(a) >= 4 {
		al := int(binary.NativeEndian.Uint16(a[0:2]))
		if al < 4 || al > len(a) {
			return ""
		}
		if binary.NativeEndian.Uint16(a[2:4])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == 1 {
			v := a[4:al]
			for i, c := range v {
				if c == 0 {
					v = v[:i]
					break
				}
			}
			return string(v)
		}
		a = a[(al+3)&^3:]
	}
	return ""
}
