package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

// nftMsg builds one nf_tables notification: header, nfgenmsg, and the
// table name as attribute 1.
func nftMsg(typ uint16, family uint8, pid uint32, table string) []byte {
	attr := make([]byte, 4, 4+len(table)+4)
	attr = append(attr, table...)
	attr = append(attr, 0)
	binary.NativeEndian.PutUint16(attr[0:2], uint16(len(attr)))
	binary.NativeEndian.PutUint16(attr[2:4], 1)
	for len(attr)%4 != 0 {
		attr = append(attr, 0)
	}
	b := make([]byte, unix.NLMSG_HDRLEN+4)
	b[unix.NLMSG_HDRLEN] = family
	b = append(b, attr...)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], unix.NFNL_SUBSYS_NFTABLES<<8|typ)
	binary.NativeEndian.PutUint32(b[12:16], pid)
	return b
}

// TestRelevant: only changes to table ip wren by somebody else poke.
func TestRelevant(t *testing.T) {
	const self = 4242
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"rule deleted by nft", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, 99, "wren"), true},
		{"table deleted", nftMsg(unix.NFT_MSG_DELTABLE, unix.NFPROTO_IPV4, 0, "wren"), true},
		{"element added", nftMsg(unix.NFT_MSG_NEWSETELEM, unix.NFPROTO_IPV4, 99, "wren"), true},
		{"our own write", nftMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, self, "wren"), false},
		{"inet table of the same name", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, 99, "wren"), false},
		{"another table", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, 99, "nat"), false},
		{"a prefix of the name", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, 99, "wrenx"), false},
		{"generation", nftMsg(unix.NFT_MSG_NEWGEN, unix.NFPROTO_IPV4, 99, "wren"), false},
		{"ours then theirs in one read", append(nftMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, self, "wren"),
			nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, 99, "wren")...), true},
		{"truncated", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, 99, "wren")[:10], false},
	} {
		if got := relevant(tc.b, self); got != tc.want {
			t.Errorf("%s: relevant = %v; want %v", tc.name, got, tc.want)
		}
	}
}

// TestWatcher: in a real namespace, hand edits of table ip wren poke
// (Run); Wren's own writes and edits of other tables are not relevant.
// The second part reads a watcher's socket itself: the kernel queues an
// nftables change's notifications before the change's ack, so once nft
// (or Apply) returns, everything it caused is in the socket, and one
// non-blocking read of the queue after an action and a fence (a relevant
// edit) must find exactly one relevant batch, the fence's.
func TestWatcher(t *testing.T) {
	requireNFT(t)
	ns, k, r := newPrivReconciler(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apply := func() {
		t.Helper()
		if err := r.Apply(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r.Set(testNAT())
	apply()

	w, err := NewWatcher(WatchConfig{NS: ns.Handle, Ignore: k.PortID})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	poked := make(chan struct{}, 1)
	go func() {
		done <- w.Run(ctx, func() {
			select {
			case poked <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for _, edit := range []string{"flush table ip wren", "delete table ip wren", "delete rule ip wren postrouting handle " + ruleHandle(t, ns)} {
		start := time.Now()
		ns.MustRun(t, "nft", edit)
		select {
		case <-poked:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no poke within 5s", edit)
		}
		t.Logf("%s: poked %s after nft started", edit, time.Since(start).Round(time.Microsecond))
		apply()
		select { // Wren's repair may have come in the same read
		case <-poked:
		default:
		}
	}

	q, err := NewWatcher(WatchConfig{NS: ns.Handle, Ignore: k.PortID})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(q.fd)
	// drain counts the relevant batches queued in q's socket.
	drain := func(what string) int {
		t.Helper()
		buf := make([]byte, 256<<10)
		n := 0
		for {
			m, _, err := unix.Recvfrom(q.fd, buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				return n
			}
			if err != nil {
				t.Fatalf("%s: read notifications: %v", what, err)
			}
			if relevant(buf[:m], k.PortID()) {
				n++
			}
		}
	}
	fences := 0
	quiet := func(what string, action func(), fence string) {
		t.Helper()
		action()
		if fence == "" {
			fences++
			fence = fmt.Sprintf("add element ip wren all-pools { 192.0.2.%d }", fences)
		}
		ns.MustRun(t, "nft", fence)
		if n := drain(what); n != 1 {
			t.Errorf("%s, then a fence: %d relevant notification batches; want 1 (the fence's)", what, n)
		}
	}
	quiet("Apply with nothing to do", apply, "")
	quiet("Wren removes the fence's element", apply, "")
	quiet("edits of other tables", func() {
		ns.MustRun(t, "nft", "add table ip other; add chain ip other c; add table inet wren; add chain inet wren c")
	}, "")
	ns.MustRun(t, "nft", "flush table ip wren")
	if n := drain("flush table"); n != 1 {
		t.Errorf("flush table ip wren: %d relevant notification batches; want 1", n)
	}
	quiet("Wren recreates the flushed table", apply, "")
	r.Set(model.NAT{})
	quiet("Wren deletes the table", apply, "add table ip wren")
}
