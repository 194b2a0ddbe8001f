//go:build linux

package nstest

import (
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteWatch records route changes in one network namespace from the
// moment it starts: proof that nothing deleted Wren's routes across an
// upgrade, a restart or an outage.
type RouteWatch struct {
	ns      netns.NsHandle
	name    string
	updates chan netlink.RouteUpdate
	errs    chan error // receive errors; the subscription ends on the first
	done    chan struct{}
}

// WatchRoutes subscribes to route updates in the namespace (name is for
// messages) until Close.
func WatchRoutes(ns netns.NsHandle, name string) (*RouteWatch, error) {
	w := &RouteWatch{ns: ns, name: name, updates: make(chan netlink.RouteUpdate, 1<<16), errs: make(chan error, 1), done: make(chan struct{})}
	// The callback may run after Close, when closing done ends the
	// subscription with an error.
	onErr := func(err error) {
		select {
		case w.errs <- err:
		default:
		}
	}
	if err := netlink.RouteSubscribeWithOptions(w.updates, w.done, netlink.RouteSubscribeOptions{Namespace: &w.ns, ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("watch routes in %s: %w", name, err)
	}
	return w, nil
}

// Close ends the subscription.
func (w *RouteWatch) Close() { close(w.done) }

// Deletions reads the updates until the deletion of a canary route it
// adds and removes in the namespace (so every earlier update has been
// read and the subscription is proven live), and returns the deletions
// of routes with protocol proto (Wren's: routes.Protocol) read before.
func (w *RouteWatch) Deletions(proto netlink.RouteProtocol) ([]string, error) {
	const canaryProto = 200
	canary := &net.IPNet{IP: net.IPv4(198, 19, 255, 252), Mask: net.CIDRMask(30, 32)}
	h, err := netlink.NewHandleAt(w.ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	r := &netlink.Route{Dst: canary, Type: unix.RTN_BLACKHOLE, Protocol: canaryProto}
	if err := h.RouteAdd(r); err != nil {
		return nil, fmt.Errorf("canary route in %s: %w", w.name, err)
	}
	if err := h.RouteDel(r); err != nil {
		return nil, fmt.Errorf("canary route in %s: %w", w.name, err)
	}
	var dels []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case u, ok := <-w.updates:
			if !ok {
				var err error
				select {
				case err = <-w.errs:
				default:
				}
				return dels, fmt.Errorf("route watch on %s ended: %v", w.name, err)
			}
			if u.Type != unix.RTM_DELROUTE {
				continue
			}
			if u.Protocol == canaryProto && u.Dst != nil && u.Dst.String() == canary.String() {
				return dels, nil
			}
			if u.Protocol == proto {
				dels = append(dels, fmt.Sprintf("%s type %d oif %d gw %s", u.Dst, u.Route.Type, u.LinkIndex, u.Gw))
			}
		case <-timeout:
			return dels, fmt.Errorf("route watch on %s: the canary's deletion never arrived", w.name)
		}
	}
}
