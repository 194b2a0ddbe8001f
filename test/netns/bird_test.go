//go:build linux

package nstest_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	nstest "github.com/wren-net/wren/test/netns"
)

// Output captured from BIRD 2.0.12 (birdc show route all), plus an iBGP
// "from", multipath and a BIRD 1.6-style line.
const birdRoutesSample = `BIRD 2.0.12 ready.
Table master4:
10.244.201.0/24      blackhole [st 20:21:50.061] * (200)
	Type: static univ
10.244.202.0/24      unicast [st2 20:22:43.232] * (200)
	via 198.18.0.7 on eth0
	Type: static univ
                     unicast [peer 20:21:56.758] (100) [AS65002i]
	via 198.18.0.2 on eth0
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65002
	BGP.next_hop: 198.18.0.2
	BGP.local_pref: 100
10.244.203.0/24      unicast [st2 20:22:43.232] * (200)
	via 198.18.0.2 on eth0 weight 1
	via 198.18.0.9 on eth0 weight 1
	Type: static univ
10.244.204.0/24      unreachable [st2 2026-11-20] * (200)
	Type: static univ
10.244.205.0/24      unicast [rr 20:22:43.232 from 198.18.0.5] * (100/?) [i]
	via 198.18.0.6 on eth0
10.244.206.0/24      via 198.18.0.3 on eth0 [old 20:22:43] * (100) [AS65003i]
Table t2:
Table master6:
fd00:1::/64          unicast [peer6 20:21:56.758] * (100) [AS65002i]
	via fe80::1 on eth0
`

func TestBirdParseRoutes(t *testing.T) {
	rs, err := nstest.ParseBirdRoutes(birdRoutesSample)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	if len(rs) != 7 {
		t.Errorf("got %d prefixes, want 7: %v", len(rs), rs)
	}
	bh := rs[p("10.244.201.0/24")]
	if len(bh) != 1 || bh[0].Type != "blackhole" || bh[0].Protocol != "st" || !bh[0].Primary ||
		bh[0].Preference != 200 || len(bh[0].NextHops) != 0 || bh[0].Attrs["Type"] != "static univ" || bh[0].Table != "master4" {
		t.Errorf("blackhole: %+v", bh)
	}
	two := rs[p("10.244.202.0/24")]
	if len(two) != 2 {
		t.Fatalf("10.244.202.0/24: want 2 routes, got %+v", two)
	}
	if !two[0].Primary || two[0].Protocol != "st2" || !slices.Equal(two[0].Vias(), []netip.Addr{a("198.18.0.7")}) {
		t.Errorf("first route: %+v", two[0])
	}
	bgp := two[1]
	if bgp.Primary || bgp.Protocol != "peer" || bgp.Preference != 100 || bgp.Info != "[AS65002i]" ||
		!slices.Equal(bgp.Vias(), []netip.Addr{a("198.18.0.2")}) || bgp.NextHops[0].Iface != "eth0" ||
		bgp.Attrs["BGP.as_path"] != "65002" || bgp.Attrs["BGP.next_hop"] != "198.18.0.2" {
		t.Errorf("alternate BGP route: %+v", bgp)
	}
	mp := rs[p("10.244.203.0/24")]
	if len(mp) != 1 || !slices.Equal(mp[0].Vias(), []netip.Addr{a("198.18.0.2"), a("198.18.0.9")}) || mp[0].NextHops[1].Weight != 1 {
		t.Errorf("multipath: %+v", mp)
	}
	if u := rs[p("10.244.204.0/24")]; len(u) != 1 || u[0].Type != "unreachable" || !u[0].Primary {
		t.Errorf("unreachable: %+v", u)
	}
	if r := rs[p("10.244.205.0/24")]; len(r) != 1 || r[0].From != a("198.18.0.5") || r[0].Protocol != "rr" || r[0].Preference != 100 || r[0].Info != "[i]" {
		t.Errorf("from: %+v", r)
	}
	if r := rs[p("10.244.206.0/24")]; len(r) != 1 || r[0].Protocol != "old" || !slices.Equal(r[0].Vias(), []netip.Addr{a("198.18.0.3")}) {
		t.Errorf("1.6 form: %+v", r)
	}
	if r := rs[p("fd00:1::/64")]; len(r) != 1 || r[0].Table != "master6" || r[0].Vias()[0] != a("fe80::1") {
		t.Errorf("v6: %+v", r)
	}

	if rs, err := nstest.ParseBirdRoutes("Table t2:\n"); err != nil || len(rs) != 0 {
		t.Errorf("empty table: %v %v", rs, err)
	}
	for _, bad := range []string{
		"\tvia 198.18.0.1 on eth0\n",                  // no route above
		"flow4 { dst 10.0.0.0/8; } [f 20:00] * (0)\n", // not an IP network
		"10.0.0.0/8 unicast\n",                        // no [protocol]
	} {
		if _, err := nstest.ParseBirdRoutes(bad); err == nil {
			t.Errorf("ParseBirdRoutes(%q): no error", bad)
		}
	}
}

func TestBirdParseProtocols(t *testing.T) {
	out := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     20:21:50.061  
kernel1    Kernel     master4    up     20:21:50.061  
st         Static     master4    up     2026-11-20    
peer       BGP        ---        up     20:21:54.266  Established   
a_very_long_name BGP  ---        start  2026-11-21 20:21:50  Active        Socket: Connection refused
off        BGP        ---        down   20:21:50.061  
`
	ps, err := nstest.ParseBirdProtocols(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"device1": "up", "kernel1": "up", "st": "up", "peer": "Established", "a_very_long_name": "Active", "off": "down"}
	if len(ps) != len(want) {
		t.Errorf("got %v", ps)
	}
	for name, state := range want {
		if got := ps[name].BGPState(); got != state {
			t.Errorf("%s: state %q, want %q (%+v)", name, got, state, ps[name])
		}
	}
	if p := ps["a_very_long_name"]; p.Since != "2026-11-21 20:21:50" || p.Info != "Active Socket: Connection refused" {
		t.Errorf("long line: %+v", p)
	}
	if _, err := nstest.ParseBirdProtocols("syntax error\n"); err == nil {
		t.Error("no error without a header")
	}
}

func TestBirdConfRender(t *testing.T) {
	c := nstest.BirdConf{
		RouterID:  netip.MustParseAddr("198.18.0.1"),
		Originate: []netip.Prefix{netip.MustParsePrefix("10.244.200.0/24"), netip.MustParsePrefix("fd00:200::/64")},
		BGP: []nstest.BirdBGP{{
			Name: "wren", LocalAS: 65001, Local: netip.MustParseAddr("198.18.0.1"), LocalPort: 1179,
			Neighbor: netip.MustParseAddr("198.18.0.2"), PeerAS: 65002, Port: 1790, Password: "pw",
			Passive: true, Export: "where source = RTS_STATIC",
		}},
	}
	s := c.String()
	for _, want := range []string{
		"router id 198.18.0.1;",
		"ipv4 { import none; export none; }",
		"route 10.244.200.0/24 blackhole;",
		"route fd00:200::/64 blackhole;",
		"local 198.18.0.1 port 1179 as 65001;",
		"neighbor 198.18.0.2 port 1790 as 65002;",
		`password "pw";`,
		"passive on;",
		"ipv4 { import all; export where source = RTS_STATIC; };",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("config lacks %q:\n%s", want, s)
		}
	}
}

// birdPeer is one namespace on the switch running BIRD.
type birdPeer struct {
	ns   *nstest.NS
	addr netip.Addr
	conf nstest.BirdConf
	bird *nstest.Bird
}

func (p *birdPeer) state(t *testing.T, proto string) string { return p.bird.Protocols(t)[proto] }

// hasRoute is nil when p's primary route for pfx comes from proto via nh.
func (p *birdPeer) hasRoute(t *testing.T, pfx netip.Prefix, proto string, nh netip.Addr) error {
	rs := p.bird.Routes(t, "master4")[pfx]
	for _, r := range rs {
		if r.Primary && r.Protocol == proto && slices.Equal(r.Vias(), []netip.Addr{nh}) {
			return nil
		}
	}
	return fmt.Errorf("%s: no primary %s route via %s from %s: %+v", p.ns.Name, pfx, nh, proto, rs)
}

// TestBirdEBGPMD5 peers two BIRDs over eBGP with TCP MD5 and checks the
// helpers end to end: sessions come up, each side learns the other's
// static route with the peer as next hop; a password mismatch (made with
// Reconfigure) takes the session down and keeps it down; fixing the
// password brings it back.
func TestBirdEBGPMD5(t *testing.T) {
	nstest.RequireRoot(t)
	v := nstest.RequireBird(t)
	t.Logf("BIRD %s", v)

	sw := nstest.NewSwitch(t, "sw")
	const pw = "wren-md5-secret"
	mk := func(role, cidr string, las, ras uint32, peer string, originate string, passive bool) *birdPeer {
		ns := nstest.New(t, role)
		sw.Attach(t, ns, "eth0", cidr, 0)
		addr := netip.MustParsePrefix(cidr).Addr()
		return &birdPeer{ns: ns, addr: addr, conf: nstest.BirdConf{
			RouterID:  addr,
			Originate: []netip.Prefix{netip.MustParsePrefix(originate)},
			BGP: []nstest.BirdBGP{{
				Name: "peer", LocalAS: las, Local: addr, PeerAS: ras,
				Neighbor: netip.MustParseAddr(peer), Password: pw, Passive: passive,
			}},
		}}
	}
	// b is passive: a connects, which covers MD5 on both the connecting
	// and the listening socket.
	a := mk("bgpa", "198.18.0.1/24", 65001, 65002, "198.18.0.2", "10.244.201.0/24", false)
	b := mk("bgpb", "198.18.0.2/24", 65002, 65001, "198.18.0.1", "10.244.202.0/24", true)
	aNet, bNet := a.conf.Originate[0], b.conf.Originate[0]

	start := time.Now()
	a.bird = nstest.StartBird(t, a.ns, a.conf.String())
	b.bird = nstest.StartBird(t, b.ns, b.conf.String())
	t.Logf("both birds answer after %s", time.Since(start).Round(time.Millisecond))

	established := func() error {
		for _, p := range []*birdPeer{a, b} {
			if s := p.state(t, "peer"); s != "Established" {
				return fmt.Errorf("%s: peer is %q", p.ns.Name, s)
			}
		}
		return nil
	}
	routes := func() error {
		if err := a.hasRoute(t, bNet, "peer", b.addr); err != nil {
			return err
		}
		return b.hasRoute(t, aNet, "peer", a.addr)
	}
	nstest.Poll(t, 30*time.Second, "eBGP with MD5 established", established)
	t.Logf("session established %s after start", time.Since(start).Round(time.Millisecond))
	nstest.Poll(t, 10*time.Second, "routes exchanged", routes)
	t.Logf("routes exchanged %s after start", time.Since(start).Round(time.Millisecond))

	// Own statics stay blackholes; the learned route carries the peer's AS.
	ra := a.bird.Routes(t, "master4")
	if r := ra[aNet]; len(r) != 1 || r[0].Type != "blackhole" || r[0].Protocol != "static4" || !r[0].Primary {
		t.Errorf("a's own route: %+v", r)
	}
	if r := ra[bNet]; len(r) != 1 || r[0].Attrs["BGP.as_path"] != "65002" || r[0].Attrs["BGP.next_hop"] != "198.18.0.2" {
		t.Errorf("a's learned route: %+v", r)
	}
	// BIRD never touched the kernel: export none.
	if out := a.ns.MustRun(t, "ip", "route", "show", "10.244.202.0/24"); strings.TrimSpace(out) != "" {
		t.Errorf("BIRD installed a kernel route in %s: %s", a.ns.Name, out)
	}

	// Wrong password on b: configure restarts the session, and MD5 keeps
	// it from coming back.
	good := b.conf.String()
	b.conf.BGP[0].Password = "wrong-" + pw
	b.bird.Reconfigure(t, b.conf.String())
	down := time.Now()
	nstest.Poll(t, 15*time.Second, "routes withdrawn after password mismatch", func() error {
		if len(a.bird.Routes(t, "master4")[bNet]) != 0 {
			return fmt.Errorf("a still has %s", bNet)
		}
		if len(b.bird.Routes(t, "master4")[aNet]) != 0 {
			return fmt.Errorf("b still has %s", aNet)
		}
		return nil
	})
	t.Logf("routes gone %s after reconfigure", time.Since(down).Round(time.Millisecond))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if established() == nil {
			t.Fatalf("session re-established with mismatched MD5 passwords (%s after reconfigure)", time.Since(down))
		}
	}
	t.Logf("with mismatched passwords after 5s: a %q, b %q", a.state(t, "peer"), b.state(t, "peer"))
	if err := routes(); err == nil {
		t.Error("routes came back with mismatched passwords")
	}

	// The right password again: back up.
	b.bird.Reconfigure(t, good)
	up := time.Now()
	nstest.Poll(t, 30*time.Second, "session back after fixing the password", established)
	nstest.Poll(t, 10*time.Second, "routes back", routes)
	t.Logf("session and routes back %s after fixing the password", time.Since(up).Round(time.Millisecond))
}
