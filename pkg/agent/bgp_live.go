package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/wren-net/wren/pkg/bgpsession"
	"github.com/wren-net/wren/pkg/bgpspeaker"
	"github.com/wren-net/wren/pkg/model"
)

// globalSpeaker is a speaker whose router ID, AS and listen port can change
// while it runs (bgpspeaker.Speaker; the fake tier's speaker has no global
// part).
type globalSpeaker interface {
	Global() bgpspeaker.Global
	SetGlobal(ctx context.Context, g bgpspeaker.Global) (bool, error)
}

// wantGlobal is the speaker-wide configuration the node and the cluster
// ask for now: router ID = the node's IPv4 address, AS = the node's
// wren.network/as-number, else the BGPConfiguration's asNumber, else
// 64512, and the BGPConfiguration's listenPort.
func wantGlobal(self model.NodeInfo, cfg model.BGPConfig) bgpspeaker.Global {
	return bgpspeaker.Global{RouterID: self.IP.Addr(), AS: self.EffectiveAS(cfg.AS), ListenPort: int32(cfg.ListenPort)}.Defaults()
}

// followBGPGlobal restarts the speaker's global part when the router ID,
// the AS or the listen port the node should have differ from what it runs
// (the loop calls it on every full run, before bgpInputs). It treats the
// change like an agent restart without the process leaving: the routes
// now in the kernel seed a new session controller, whose start-up window
// keeps them until every session has sent End-of-RIB again or run out of
// its restart time, while the speaker replaces its GoBGP server (ending
// the sessions without a Cease, so the peers keep this node's routes by
// graceful restart) and re-forms every session. Nothing is deleted from
// the kernel in between: the speaker's emptied table reports no
// withdrawal to the fast lane.
func (a *Agent) followBGPGlobal(ctx context.Context, self model.NodeInfo, cfg model.BGPConfig) error {
	b := a.bgp
	gs, ok := b.speaker.(globalSpeaker)
	if !ok {
		return nil
	}
	want, old := wantGlobal(self, cfg), gs.Global()
	if want == old {
		return nil
	}
	// Read before the speaker changes: these are the routes the new
	// start-up window must keep. Without them it would know only what the
	// new sessions bring, and prune the rest once they have sent
	// End-of-RIB; so an unreadable kernel postpones the change.
	read := b.kernelRoutes
	if read == nil {
		read = a.kernelRemoteRoutes
	}
	seed, err := read()
	if err != nil {
		return fmt.Errorf("bgp %s: read the kernel's BGP routes first: %w", globalChange(old, want), err)
	}
	changed, err := gs.SetGlobal(ctx, want)
	if !changed {
		if err != nil {
			return fmt.Errorf("bgp %s: %w", globalChange(old, want), err)
		}
		return nil
	}
	// The speaker runs a new server (with the new configuration, or the
	// old one again if the new one did not start): every session re-forms
	// either way, so the controller starts over.
	ctl := bgpsession.New(bgpsession.Config{Logger: a.cfg.Logger}, b.speaker)
	ctl.Seed(seed)
	b.ctl, b.holding, b.sessions = ctl, true, nil
	if err != nil {
		return fmt.Errorf("bgp %s: %w", globalChange(old, want), err)
	}
	a.log.Info("bgp "+globalChange(old, want)+": speaker restarted in place; keeping the kernel's BGP routes until every session has sent End-of-RIB again or run out of its restart time",
		"routes", len(seed))
	return nil
}

// globalChange names what differs between old and new: "AS 64512 → 64600,
// listen port 179 → 1790".
func globalChange(old, new bgpspeaker.Global) string {
	var parts []string
	if old.RouterID != new.RouterID {
		parts = append(parts, fmt.Sprintf("router ID %s → %s", old.RouterID, new.RouterID))
	}
	if old.AS != new.AS {
		parts = append(parts, fmt.Sprintf("AS %d → %d", old.AS, new.AS))
	}
	if old.ListenPort != new.ListenPort {
		parts = append(parts, fmt.Sprintf("listen port %d → %d", old.ListenPort, new.ListenPort))
	}
	return strings.Join(parts, ", ")
}
