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
	// APIAddress, when set, serves GoBGP's own gRPC API there so the
	// stock gobgp CLI of the same GoBGP release can look at the speaker
	// (gobgp neighbor, gobgp global rib). It must be a loopback address
	// and port: the API is unauthenticated and can change everything.
	APIAddress string
	// Logger receives the speaker's and GoBGP's logs. Nil means slog.Default.
	Logger *slog.Logger
}

// CheckAPIAddress accepts only a loopback IP address with a port
// ("127.0.0.1:50051", "[::1]:50051").
func CheckAPIAddress(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q is not an address:port (for example 127.0.0.1:50051): %w", s, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: GoBGP's API has no authentication and can change the speaker's sessions and routes, so Wren serves it on 127.0.0.1 or ::1 only", s)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%q: port 0", s)
	}
	return nil
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
	if c.APIAddress != "" {
		if err := CheckAPIAddress(c.APIAddress); err != nil {
			errs = append(errs, fmt.Errorf("APIAddress: %w", err))
		}
	}
	for _, a := range c.ListenAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("ListenAddresses: %q: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
