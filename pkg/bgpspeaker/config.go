package bgpspeaker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// DefaultAS is the private AS Wren uses when neither the node nor the
// BGPConfiguration sets one (the same default as Calico).
const DefaultAS = 64512

// Config configures a Speaker.
type Config struct {
	// RouterID is the BGP identifier; Wren uses the node's IPv4 address.
	RouterID netip.Addr
	// AS is the local autonomous system number.
	AS uint32
	// ListenPort is the TCP port to accept sessions on. 0 means 179; -1 means
	// do not listen at all (GoBGP skips its listeners for port <= 0 after
	// defaulting 0 to 179), for speakers that only connect out.
	ListenPort int32
	// ListenAddresses are the local addresses to listen on; empty means
	// 0.0.0.0 and ::.
	ListenAddresses []string
	// Logger receives the speaker's and GoBGP's logs. Nil means slog.Default.
	Logger *slog.Logger
}

// Defaults fills in the zero fields that have a default and returns the
// result.
func (c Config) Defaults() Config {
	if c.AS == 0 {
		c.AS = DefaultAS
	}
	if c.ListenPort == 0 {
		c.ListenPort = 179
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every invalid field, naming it.
func (c Config) Validate() error {
	var errs []error
	switch {
	case !c.RouterID.IsValid():
		errs = append(errs, errors.New("RouterID: not set"))
	case !c.RouterID.Is4():
		// The BGP identifier is a 4-octet value (RFC 6286 §2.1).
		errs = append(errs, fmt.Errorf("RouterID: %s is not an IPv4 address", c.RouterID))
	case c.RouterID.IsUnspecified():
		errs = append(errs, errors.New("RouterID: 0.0.0.0 is not a valid BGP identifier"))
	}
	if c.AS == 0 {
		errs = append(errs, errors.New("AS: 0 is reserved (RFC 7607)"))
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("ListenPort: %d out of range (-1 to 65535)", c.ListenPort))
	}
	for _, a := range c.ListenAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("ListenAddresses: %q: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
