package routes

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDumpInterruptedFlag: a dump part flagged NLM_F_DUMP_INTR makes the
// walk report errInterrupted at NLMSG_DONE; foreign protocols and other
// sequence numbers are skipped.
func TestDumpInterruptedFlag(t *testing.T) {
	own := KRoute{Dst: pfx("10.244.1.0/26"), Table: MainTable, Protocol: Protocol, Type: TypeBlackhole}
	foreign := own
	foreign.Protocol = 4
	msg := func(r KRoute, seq uint32, flags uint16) []byte {
		b := appendRouteMsg(nil, Op{Route: r}, seq, true)
		binary.NativeEndian.PutUint16(b[4:6], unix.RTM_NEWROUTE)
		binary.NativeEndian.PutUint16(b[6:8], unix.NLM_F_MULTI|flags)
		return b
	}
	done := func(seq uint32) []byte {
		b := appendHdr(nil, unix.NLMSG_DONE, unix.NLM_F_MULTI, seq)
		b = binary.NativeEndian.AppendUint32(b, 0)
		return finishMsg(b, 0)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
		n    int
	}{
		{"clean", append(append(msg(own, 7, 0), msg(foreign, 7, 0)...), done(7)...), nil, 1},
		{"interrupted", append(append(msg(own, 7, 0), msg(own, 7, unix.NLM_F_DUMP_INTR)...), done(7)...), errInterrupted, 2},
		{"stale seq skipped", append(append(msg(own, 6, 0), msg(own, 7, 0)...), done(7)...), nil, 1},
	} {
		st := dumpState{seq: 7, table: MainTable, proto: Protocol}
		n := 0
		fin, err := st.walk(tc.data, func(KRoute) { n++ })
		if !fin || !errors.Is(err, tc.want) || n != tc.n {
			t.Errorf("%s: done=%v err=%v routes=%d; want done err=%v routes=%d", tc.name, fin, err, n, tc.want, tc.n)
		}
	}
}

// TestRetryDump: torn attempts are thrown away; only the first complete
// attempt reaches the caller; persistent interruption is an error.
func TestRetryDump(t *testing.T) {
	attempt := 0
	dump := func(emit func(KRoute)) error {
		attempt++
		emit(KRoute{Priority: uint32(attempt)})
		if attempt < 3 {
			return errInterrupted
		}
		return nil
	}
	var got []uint32
	_, n, err := retryDump(nil, 5, dump, func(r KRoute) { got = append(got, r.Priority) })
	if err != nil || n != 2 || len(got) != 1 || got[0] != 3 {
		t.Fatalf("n=%d err=%v got=%v; want 2 interrupts and only attempt 3", n, err, got)
	}
	attempt = -100
	if _, _, err := retryDump(nil, 5, dump, func(KRoute) {}); !errors.Is(err, errInterrupted) {
		t.Fatalf("persistent interruption: err=%v", err)
	}
}
