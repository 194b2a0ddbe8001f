// Package bgpspeaker embeds a GoBGP v4 speaker (github.com/osrg/gobgp/v4
// v4.8.0) and is the only package of Wren that imports GoBGP. It gives the
// agent a small, value-typed surface:
//
//   - [New] and [Speaker.Start] run the BGP server with the node's router ID,
//     AS and listen port, logging through log/slog (GoBGP's Info is the
//     agent's Debug).
//   - [Speaker.SetPeers] reconciles the configured neighbours against a whole
//     desired list (add, delete, or re-create when the session must change).
//   - [Speaker.SetAdvertisements] reconciles the locally originated IPv4
//     unicast prefixes (the node's blocks, borrowed /32s, service CIDRs).
//   - [Speaker.SetPolicy] swaps the import and export policies.
//   - The watch feed: GoBGP's WatchEvent callbacks fold best-path changes
//     into a learned table, session states and End-of-RIB markers into a
//     session table, and poke [Speaker.Changed]; they never block and never
//     do I/O. [Speaker.Drain] hands out only the prefixes that changed since
//     the last call (batched, coalesced per prefix), [Speaker.Learned] the
//     whole table for full rebuilds, [Speaker.Sessions] the session table.
//   - [Speaker.SetGlobal] changes the router ID, AS or listen port live.
//   - [Speaker.Status] is a snapshot of the sessions with prefix counts for
//     the debug API; it asks GoBGP's management loop.
//
// # Malformed UPDATEs
//
// GoBGP v3 (last release v3.37.0) panicked on several malformed UPDATEs
// that any peer can send (GHSA-4p9m-8gc4-rw2h, GHSA-8rxh-r2p6-7f2q,
// GHSA-7235-89m6-f4px, GHSA-frrj-87jh-2772 and others); a panic kills the
// agent. Those paths are fixed in v4.3–v4.7. SECURITY.md lists what Wren's
// speaker does with each variant, as test/netns TestAgentMalformedUpdate
// measures it.
//
// # Shutdown and graceful restart: no Cease
//
// A NOTIFICATION Cease ends graceful restart: RFC 4724 §4 covers a session
// that ends without one, and after a Cease the peers delete this speaker's
// routes at once instead of keeping them as stale for the restart time.
// Restarting the agent would flap every route of the node (Calico #1423,
// #6625). The agent therefore never stops the speaker on shutdown: it
// lets the process exit, the TCP sessions break without a NOTIFICATION,
// and the peers keep the node's routes until it comes back. [Speaker.Close]
// sends Cease and is for tests and deliberate teardown. GoBGP v4's
// StopBgp can also end the sessions without one (allow_graceful_restart):
// [Speaker.SetGlobal] uses it to change the router ID, AS or listen port
// of a running speaker, replacing its GoBGP server the way an agent
// restart would, without leaving the process.
//
// # TCP MD5 needs multipathtcp=0
//
// Since Go 1.24, net.ListenConfig creates Multipath TCP listeners by default
// when the kernel supports MPTCP (net.mptcp.enabled=1, as on this VM).
// TCP_MD5SIG (RFC 2385) is not available on MPTCP sockets: setsockopt fails
// with ENOPROTOOPT, GoBGP only logs "failed to set md5" at warning level,
// and a peer with a password can then never connect to this speaker. The
// module's go.mod therefore sets `godebug multipathtcp=0`, which applies to
// every binary and test built in it.
package bgpspeaker
