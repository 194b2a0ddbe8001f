//go:build linux

package cluster_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// testRRGuide follows Calico's route-reflector guide on the 3-node lab
// under a 10 ms ping around the ring: label node-3 a reflector (Wren
// reshapes the mesh make-before-break), apply Calico's "peer with route
// reflectors" BGPPeer, turn the mesh off. The BGPPeer's sessions are the
// label-driven ones, so from the label on no session is re-created (each
// keeps its "established since"); then the mesh goes back on, the BGPPeer
// is deleted and the label removed (the mesh returns make-before-break).
// No ping may be lost and no node may delete a Wren route.
func (e *env) testRRGuide() {
	t := e.t
	const rrNode, guide = "node-3", "peer-with-route-reflectors"
	pings := e.ringPingers()
	watches := e.watchAllRoutes()

	// shape waits until every node's sessions have the wanted types
	// ("type name" lines, sorted) and returns their "address since".
	shape := func(what string, want map[int][]string) map[int][]string {
		t.Helper()
		var got map[int][]string
		e.poll(90*time.Second, what, func() error {
			ss, err := e.sessions(e.status)
			if err != nil {
				return err
			}
			for _, n := range e.lab.Nodes() {
				st, err := e.status(n)
				if err != nil {
					return err
				}
				var lines []string
				for _, p := range st.GetPeers() {
					lines = append(lines, p.GetType()+" "+p.GetName())
				}
				slices.Sort(lines)
				if !slices.Equal(lines, want[n]) {
					return fmt.Errorf("node-%d sessions %q, want %q", n, lines, want[n])
				}
			}
			got = ss
			return nil
		})
		return got
	}
	mesh := map[int][]string{1: {"mesh node-2", "mesh node-3"}, 2: {"mesh node-1", "mesh node-3"}, 3: {"mesh node-1", "mesh node-2"}}
	labelled := map[int][]string{1: {"route-reflector node-3"}, 2: {"route-reflector node-3"}, 3: {"rr-client node-1", "rr-client node-2"}}
	guided := map[int][]string{1: {"route-reflector " + guide + "/node-3"}, 2: {"route-reflector " + guide + "/node-3"},
		3: {"rr-client " + guide + "/node-1", "rr-client " + guide + "/node-2"}}
	shape("the full mesh", mesh)

	e.kubectl("label", "node", rrNode, "wren.network/route-reflector=true")
	before := shape("node-3 a reflector by its label", labelled)
	same := func(what string, now map[int][]string) {
		t.Helper()
		if !maps.EqualFunc(before, now, slices.Equal) {
			t.Errorf("%s: sessions re-created:\nbefore %v\nafter  %v", what, before, now)
		}
	}

	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: guide}, Spec: v1alpha1.BGPPeerSpec{
		NodeSelector: "all()", PeerSelector: "wren.network/route-reflector == 'true'"}}
	if err := e.c.Create(e.ctx, peer); err != nil {
		t.Fatal(err)
	}
	same("BGPPeer applied", shape("the BGPPeer's sessions are the label's (the topology's win)", labelled))
	e.setMesh(false)
	same("mesh off", shape("mesh off: the BGPPeer's sessions", guided))
	e.setMesh(true)
	same("mesh on again", shape("mesh on: the topology's sessions", labelled))
	if err := e.c.Delete(e.ctx, peer); err != nil {
		t.Fatal(err)
	}
	same("BGPPeer deleted", shape("BGPPeer deleted", labelled))
	e.kubectl("label", "node", rrNode, "wren.network/route-reflector-")
	shape("the full mesh again", mesh)

	e.stopPingers("route-reflector guide", pings)
	e.noRouteDeleted("route-reflector guide", watches)
	if ev := e.kubectl("get", "events", "-A", "--field-selector", "reason=NoBGPSessions", "-o", "name"); strings.TrimSpace(ev) != "" {
		t.Errorf("NoBGPSessions Events during the guide: %s", ev)
	}
}

// setMesh sets nodeToNodeMeshEnabled in the BGPConfiguration default,
// creating it if the lab has none.
func (e *env) setMesh(on bool) {
	e.t.Helper()
	var cfg v1alpha1.BGPConfiguration
	err := e.c.Get(e.ctx, client.ObjectKey{Name: v1alpha1.BGPConfigurationName}, &cfg)
	switch {
	case apierrors.IsNotFound(err):
		cfg = v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BGPConfigurationName},
			Spec: v1alpha1.BGPConfigurationSpec{NodeToNodeMeshEnabled: &on}}
		err = e.c.Create(e.ctx, &cfg)
	case err == nil:
		cfg.Spec.NodeToNodeMeshEnabled = &on
		err = e.c.Update(e.ctx, &cfg)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}
