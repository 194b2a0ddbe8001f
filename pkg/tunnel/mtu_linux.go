package tunnel

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
)

var defaultIfaceRE = regexp.MustCompile(DefaultIfacePattern)

// HostMTU returns the smallest MTU among the up links whose name matches
// iface (nil means DefaultIfacePattern). Pod and tunnel MTUs are derived
// from it: an encapsulated packet must fit the narrowest uplink it may
// leave through, or it is fragmented or dropped. Links that are down are
// ignored, since nothing leaves through them.
func HostMTU(nl LinkLister, iface *regexp.Regexp) (int, error) {
	if iface == nil {
		iface = defaultIfaceRE
	}
	links, err := retryDump(nl.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	mtu := 0
	var down []string
	for _, l := range links {
		a := l.Attrs()
		if !iface.MatchString(a.Name) || a.MTU <= 0 {
			continue
		}
		if a.Flags&net.FlagUp == 0 {
			down = append(down, a.Name)
			continue
		}
		if mtu == 0 || a.MTU < mtu {
			mtu = a.MTU
		}
	}
	if mtu == 0 {
		msg := "none exists"
		if len(down) > 0 {
			slices.Sort(down)
			msg = "all are down: " + strings.Join(down, ", ")
		}
		return 0, fmt.Errorf("host MTU: no up link matches %q (%s); set the MTU interface pattern to match the node's uplink", iface, msg)
	}
	return mtu, nil
}
