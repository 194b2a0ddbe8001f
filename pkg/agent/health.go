package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DefaultLiveDeadline: the loop runs at least every 90 s (the runner's
// periodic resync), failing or not, so three minutes without a completed
// run means it is stuck.
const DefaultLiveDeadline = 3 * time.Minute

// readyStartWindow is the start-up window of Calico's bird-ready check:
// until it ends every configured BGP peer must be established.
const readyStartWindow = 30 * time.Second

// Live reports whether the loop still completes runs (served on /livez):
// an error once a run has lasted longer than Config.LiveDeadline, or no
// run has ended for that long. Before the first run (the node is still
// registering) it is live.
func (a *Agent) Live() error {
	a.mu.Lock()
	start, end, runs := a.runStart, a.runEnd, a.started
	a.mu.Unlock()
	if runs == 0 {
		return nil
	}
	now, limit := time.Now(), a.cfg.LiveDeadline
	switch {
	case !start.IsZero() && now.Sub(start) > limit:
		return fmt.Errorf("the agent's loop has been in one run for %s (since %s), longer than %s: it is stuck (the kubelet restarts the agent when this probe keeps failing)",
			now.Sub(start).Round(time.Second), start.Format(time.RFC3339), limit)
	case start.IsZero() && !end.IsZero() && now.Sub(end) > limit:
		return fmt.Errorf("the agent's loop has not run for %s (last run ended %s), longer than %s: it is stuck",
			now.Sub(end).Round(time.Second), end.Format(time.RFC3339), limit)
	}
	return nil
}

// Ready reports whether the node is ready (served on /readyz): registered,
// one full sync done, its dataplane applied once without error, and BGP
// as Calico's bird-ready has it: with no peer configured, ready; in the
// first 30 s after start every configured peer established and no
// graceful-restart recovery running (the previous run's routes still
// held until every peer has sent End-of-RIB); afterwards at least one
// established.
func (a *Agent) Ready() error {
	a.mu.Lock()
	registered, done, dataplane := a.alloc != nil, a.done, a.dataplaneOK
	a.mu.Unlock()
	switch {
	case !registered:
		return errors.New("registering the node")
	case done == 0:
		return errors.New("first sync not completed")
	case !dataplane:
		return errors.New("the dataplane (tunnels, veths, routes) has not been applied without error yet; the agent's log says what fails")
	}
	b, snap := a.bgpOf(), a.LastSnapshot()
	if b == nil || snap == nil {
		return nil
	}
	var wanted []netip.Addr
	for _, s := range snap.Sessions {
		if !s.Retiring {
			wanted = append(wanted, s.Address)
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	up := map[netip.Addr]bool{}
	for _, s := range b.speaker.Sessions() {
		up[s.Address] = s.State == "established"
	}
	var down []string
	for _, w := range wanted {
		if !up[w] {
			down = append(down, w.String())
		}
	}
	slices.Sort(down)
	if time.Since(a.startedAt) < readyStartWindow {
		if len(down) > 0 {
			return fmt.Errorf("BGP: %d of %d configured peers established; in the first %s after start every one must be (not yet: %s)",
				len(wanted)-len(down), len(wanted), readyStartWindow, strings.Join(down, ", "))
		}
		if snap.Holding {
			return errors.New("BGP: graceful-restart recovery running: the previous run's routes are kept until every peer has sent End-of-RIB")
		}
		return nil
	}
	if len(down) == len(wanted) {
		return fmt.Errorf("BGP: none of the %d configured peers is established (%s); wrenctl status shows why", len(wanted), strings.Join(down, ", "))
	}
	return nil
}
