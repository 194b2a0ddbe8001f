package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// TestCalicoGuideKeepsSessions walks Calico's route-reflector guide through
// the loop: label node-3 a reflector, add the peerSelector BGPPeer "peer
// with route reflectors", turn the mesh off. The speaker's peers after the
// label are the ones it keeps to the end, and no route leaves the kernel;
// then the mesh comes back and the BGPPeer goes, again without a change.
func TestCalicoGuideKeepsSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent(t)
		ctx := context.Background()
		n2, n3 := fNode2.Addr(), fNode3.Addr()
		sync := func(what string) string {
			t.Helper()
			time.Sleep(time.Second)
			if err := f.sync(ctx); err != nil {
				t.Fatalf("%s: sync: %v", what, err)
			}
			// The speaker's whole peer configurations: a field that
			// differs would re-create the session.
			return f.String() + fmt.Sprintf("%+v\n", f.sp.peers)
		}
		sync("start")
		f.sp.up(n2, n3)
		f.sp.learn("10.244.0.64/26", n2)
		f.sp.learn("10.244.0.128/26", n3)
		sync("learned")
		f.cluster.nodes[2].RouteReflector, f.cluster.nodes[2].RRClusterID = true, model.DefaultRRClusterID
		f.cluster.nodes[2].Labels = map[string]string{"wren.network/route-reflector": "true"}
		sync("label")
		f.sp.learn("10.244.0.64/26", n3)
		time.Sleep(40 * time.Second) // past the reshape hold
		labelled := sync("reshaped to the reflector")
		if !strings.Contains(labelled, "peer 198.18.0.13 as 64512\n") || strings.Contains(labelled, "peer 198.18.0.12") {
			t.Fatalf("after the label, want one session to the reflector node-3:\n%s", labelled)
		}
		steps := []struct {
			name string
			do   func()
		}{
			{"the peerSelector BGPPeer", func() {
				f.cluster.peers = []model.BGPPeer{{Name: "peer-with-route-reflectors", NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'"}}
			}},
			{"the mesh off", func() { f.cluster.cfg.MeshEnabled = false }},
			{"the mesh on again", func() { f.cluster.cfg.MeshEnabled = true }},
			{"the BGPPeer deleted", func() { f.cluster.peers = nil }},
		}
		for _, st := range steps {
			st.do()
			if got := sync(st.name); got != labelled {
				t.Errorf("%s: the node's state changed:\nbefore:\n%s\nafter:\n%s", st.name, labelled, got)
			}
		}
		if len(f.cluster.warned) != 0 {
			t.Errorf("warnings: %v; want none", f.cluster.warned)
		}
	})
}

// TestNoSessionWarnsFirst: the mesh turned off with no BGPPeer leaves the
// node without a session while node-2 and node-3 hold blocks it reaches
// through BGP. A Warning naming the node comes from the run that drops the
// sessions, while the kernel still has both routes.
func TestNoSessionWarnsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent(t)
		ctx := context.Background()
		n2, n3 := fNode2.Addr(), fNode3.Addr()
		if err := f.sync(ctx); err != nil {
			t.Fatal(err)
		}
		f.sp.up(n2, n3)
		f.sp.learn("10.244.0.64/26", n2)
		f.sp.learn("10.244.0.128/26", n3)
		time.Sleep(time.Second)
		if err := f.sync(ctx); err != nil {
			t.Fatal(err)
		}
		f.cluster.cfg.MeshEnabled = false
		time.Sleep(time.Second)
		if err := f.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(f.cluster.warned, "Node/node-1 NoBGPSessions") {
			t.Errorf("warnings %v; want Node/node-1 NoBGPSessions", f.cluster.warned)
		}
		got := f.String()
		for _, r := range []string{"route 10.244.0.64/26 via 198.18.0.12 dev eth0", "route 10.244.0.128/26 via 198.18.0.13 dev eth0"} {
			if !strings.Contains(got, r) {
				t.Errorf("%q already gone when the warning came:\n%s", r, got)
			}
		}
		// The sessions retire like any reshape (make-before-break has
		// nothing to hand over to), then go.
		time.Sleep(31 * time.Second)
		if err := f.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got := f.String(); strings.Contains(got, "peer ") {
			t.Errorf("mesh off without BGPPeers: want no peers after the reshape hold:\n%s", got)
		}
	})
}
