package netwatch

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

func nlmsg(typ uint16, payload []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint64(b, 0)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func rtm(table, proto uint8) []byte {
	return []byte{unix.AF_INET, 26, 0, 0, table, proto, 0, unix.RTN_UNICAST, 0, 0, 0, 0}
}

func ndm(family uint8, state uint16) []byte {
	b := []byte{family, 0, 0, 0, 2, 0, 0, 0}
	b = binary.NativeEndian.AppendUint16(b, state)
	return append(b, 0, 0)
}

// TestRelevant: which notifications poke the loop.
func TestRelevant(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"own route deleted", nlmsg(unix.RTM_DELROUTE, rtm(unix.RT_TABLE_MAIN, 87)), true},
		{"foreign static route in main", nlmsg(unix.RTM_NEWROUTE, rtm(unix.RT_TABLE_MAIN, unix.RTPROT_STATIC)), true},
		{"kernel connected route", nlmsg(unix.RTM_NEWROUTE, rtm(unix.RT_TABLE_MAIN, unix.RTPROT_KERNEL)), false},
		{"local table", nlmsg(unix.RTM_NEWROUTE, rtm(unix.RT_TABLE_LOCAL, 87)), false},
		{"link change", nlmsg(unix.RTM_NEWLINK, make([]byte, 16)), true},
		{"address removed", nlmsg(unix.RTM_DELADDR, make([]byte, 8)), true},
		{"fdb entry deleted", nlmsg(unix.RTM_DELNEIGH, ndm(unix.AF_BRIDGE, unix.NUD_PERMANENT)), true},
		{"permanent neighbour deleted", nlmsg(unix.RTM_DELNEIGH, ndm(unix.AF_INET, unix.NUD_PERMANENT)), true},
		{"underlay arp churn", nlmsg(unix.RTM_NEWNEIGH, ndm(unix.AF_INET, unix.NUD_STALE)), false},
		{"churn then own route", append(nlmsg(unix.RTM_NEWNEIGH, ndm(unix.AF_INET, unix.NUD_REACHABLE)), nlmsg(unix.RTM_DELROUTE, rtm(unix.RT_TABLE_MAIN, 87))...), true},
	} {
		if got := relevant(tc.msg, unix.RT_TABLE_MAIN); got != tc.want {
			t.Errorf("%s: relevant = %v, want %v", tc.name, got, tc.want)
		}
	}
}
