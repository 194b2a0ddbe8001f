// Package bgpspeaker embeds a GoBGP v3 speaker (github.com/osrg/gobgp/v3
// v3.37.0) and is the only package of Wren that imports GoBGP. It gives the
// agent a small, value-typed surface:
//
//   - [New] and [Speaker.Start] run the BGP server with the node's router ID,
//     AS and listen port, logging through log/slog.
//   - [Speaker.SetPeers] reconciles the configured neighbours against a whole
//     desired list (add, delete, update in place or reset when the BGP OPEN
//     must change).
//   - [Speaker.SetAdvertisements] reconciles the locally originated IPv4
//     unicast prefixes (the node's blocks, borrowed /32s, service CIDRs).
//   - [Speaker.Learned] and [Speaker.Changed] form the best-path feed: GoBGP's
//     WatchEvent callback folds best-path changes into a latest-state map and
//     pokes a channel; it never blocks and never does I/O.
//   - [Speaker.Status] is a snapshot of the sessions for the debug API and
//     readiness.
//
// # Shutdown and graceful restart: do not call Stop
//
// GoBGP v3's BgpServer.Stop (and StopBgp, which Stop calls) deletes every
// neighbour with a NOTIFICATION Cease/Peer De-configured. Graceful restart
// (RFC 4724 §4) only covers a session that ends without a NOTIFICATION; after
// a Cease the peers delete this speaker's routes at once instead of keeping
// them as stale for the restart time (RFC 8538's N bit would change that, but
// Wren does not negotiate it). Restarting the agent would flap every route
// of the node (Calico #1423, #6625). The agent therefore never stops the speaker on
// shutdown: it lets the process exit, the TCP sessions break without a
// NOTIFICATION, and the peers keep the node's routes until it comes back.
// [Speaker.Close] exists only for tests and hard teardown, and it does send
// Cease.
//
// # TCP MD5 needs multipathtcp=0
//
// Since Go 1.24, net.ListenConfig creates Multipath TCP listeners by default
// when the kernel supports MPTCP (net.mptcp.enabled=1, as on this VM).
// TCP_MD5SIG (RFC 2385) is not available on MPTCP sockets: setsockopt fails
// with ENOPROTOOPT, GoBGP v3 only logs "failed to set md5" at warning level,
// and a peer with a password can then never connect to this speaker. The
// module's go.mod therefore sets `godebug multipathtcp=0`, which applies to
// every binary and test built in it.
package bgpspeaker
