//go:build linux

package nstest

// BIRD 2 as a BGP peer inside a test namespace, for interop tests of
// Wren's speaker. Each BIRD runs in the foreground ("bird -f") as a child
// of the test, held by PID, with its control socket, config, PID file and
// log in a private temporary directory; birdc talks to it over that socket
// from the test's own namespace (a Unix socket is a file, not a network
// endpoint). Cleanup stops it by PID and removes the directory.
//
// Tested against Debian bookworm's bird2 2.0.12 (apt-get install bird2,
// or hack/deps.sh).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BirdPackage is the Debian package that provides bird and birdc.
const BirdPackage = "bird2"

// Bird is one BIRD daemon running inside a test namespace.
type Bird struct {
	NS     *NS
	Dir    string // private directory holding everything below
	Conf   string // config file bird reads (StartBird's header + the test's config)
	Socket string // control socket for birdc
	Log    string // bird's log file (the header logs everything here)
	Out    string // bird's stdout and stderr
	PID    int    // of the bird process itself ("ip netns exec" execs it)

	birdc string
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process has been waited for
	werr  error         // Wait's result, valid after done
}

var birdOnce struct {
	sync.Once
	bird, birdc, version string
	err                  error
}

// findBird locates bird and birdc (also in /usr/sbin, which a non-root
// PATH may lack) and checks that bird is version 2.
func findBird() (bird, birdc, version string, err error) {
	birdOnce.Do(func() {
		look := func(name string) (string, error) {
			if p, err := exec.LookPath(name); err == nil {
				return p, nil
			}
			p := filepath.Join("/usr/sbin", name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
			return "", fmt.Errorf("%s not found in PATH or /usr/sbin; install it with: apt-get install -y %s (or hack/deps.sh)", name, BirdPackage)
		}
		o := &birdOnce
		if o.bird, o.err = look("bird"); o.err != nil {
			return
		}
		if o.birdc, o.err = look("birdc"); o.err != nil {
			return
		}
		out, err := exec.Command(o.bird, "--version").CombinedOutput()
		v := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "BIRD version "))
		if err != nil || !strings.HasPrefix(v, "2.") {
			o.err = fmt.Errorf("%s --version: %q (%v): need BIRD 2 (Debian package %s)", o.bird, out, err, BirdPackage)
			return
		}
		o.version = v
	})
	return birdOnce.bird, birdOnce.birdc, birdOnce.version, birdOnce.err
}

// RequireBird returns the BIRD version ("2.0.12"). If bird or birdc is
// missing, or is not BIRD 2, it skips the test with the command that fixes
// it, or fails the test when the CI variable is set.
func RequireBird(t testing.TB) string {
	t.Helper()
	_, _, v, err := findBird()
	if err != nil {
		if ci := os.Getenv("CI"); ci != "" {
			t.Fatalf("%v (CI=%s: not skipping)", err, ci)
		}
		t.Skip(err)
	}
	return v
}

// birdHeader is the first line of every config StartBird and Reconfigure
// write: log everything, protocol state changes included, to the private
// log. (So line N of the test's config is line N+1 in BIRD's errors.)
const birdHeader = "log %q all; debug protocols { states, events }; # nstest.StartBird\n"

// StartBird writes conf (BIRD 2 syntax; see BirdConf) behind a one-line
// header that logs to b.Log, starts "bird -f" inside ns, and returns once birdc gets
// an answer from it. The test's cleanup stops bird by PID (SIGTERM, then
// SIGKILL after 5 s) and, if the test failed, first logs its protocols,
// output and log. Bird also gets SIGKILL if the test binary dies.
func StartBird(t testing.TB, ns *NS, conf string) *Bird {
	t.Helper()
	RequireRoot(t)
	RequireBird(t)
	bird, birdc, _, _ := findBird()
	// Not t.TempDir: a Unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "wrenbird-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Bird{
		NS:     ns,
		Dir:    dir,
		Conf:   filepath.Join(dir, "bird.conf"),
		Socket: filepath.Join(dir, "bird.ctl"),
		Log:    filepath.Join(dir, "bird.log"),
		Out:    filepath.Join(dir, "bird.out"),
		birdc:  birdc,
		done:   make(chan struct{}),
	}
	b.writeConf(t, conf)
	out, err := os.Create(b.Out)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	b.cmd = exec.Command("ip", "netns", "exec", ns.Name, bird, "-f",
		"-c", b.Conf, "-s", b.Socket, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = out, out
	// Pdeathsig fires when the thread that forked the child exits, so the
	// child is started from, and waited for on, one locked thread that
	// lives exactly as long as bird does.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := b.cmd.Start(); err != nil {
			started <- err
			close(b.done)
			return
		}
		started <- nil
		b.werr = b.cmd.Wait()
		close(b.done)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start bird in %s: %v", ns.Name, err)
	}
	b.PID = b.cmd.Process.Pid
	t.Cleanup(func() { b.stop(t) })

	Poll(t, 10*time.Second, "bird in "+ns.Name+" answers on "+b.Socket, func() error {
		select {
		case <-b.done:
			t.Fatalf("bird in %s exited during startup (%v); its output follows", ns.Name, b.werr)
		default:
		}
		out, err := b.Run(context.Background(), "show", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Daemon is up and running") {
			return fmt.Errorf("status: %s", out)
		}
		return nil
	})
	return b
}

func (b *Bird) writeConf(t testing.TB, conf string) {
	t.Helper()
	text := fmt.Sprintf(birdHeader, b.Log) + conf
	if err := os.WriteFile(b.Conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dump is bird's config, output and log, for a failing test.
func (b *Bird) dump() string {
	var s strings.Builder
	for _, f := range []struct{ what, path string }{{"config", b.Conf}, {"output", b.Out}, {"log", b.Log}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			fmt.Fprintf(&s, "--- bird %s %s: %v\n", f.what, f.path, err)
			continue
		}
		fmt.Fprintf(&s, "--- bird %s %s:\n%s\n", f.what, f.path, data)
	}
	return s.String()
}

func (b *Bird) stop(t testing.TB) {
	if t.Failed() {
		select {
		case <-b.done:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, err := b.Run(ctx, "show", "protocols", "all")
			cancel()
			t.Logf("bird in %s (pid %d): show protocols all (err %v):\n%s", b.NS.Name, b.PID, err, out)
		}
		t.Logf("bird in %s (pid %d):\n%s", b.NS.Name, b.PID, b.dump())
	}
	select {
	case <-b.done:
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			t.Errorf("bird pid %d in %s ignored SIGTERM for 5s; killing it", b.PID, b.NS.Name)
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	}
	os.RemoveAll(b.Dir)
}

// Run runs birdc on b's socket and returns its output without the
// "BIRD x.y.z ready." banner. birdc exits non-zero when BIRD answers with
// an error (reply codes 8xxx and 9xxx); that is an error here too.
func (b *Bird) Run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.birdc, append([]string{"-s", b.Socket}, args...)...).CombinedOutput()
	s := string(out)
	if first, rest, ok := strings.Cut(s, "\n"); ok && strings.HasPrefix(first, "BIRD ") && strings.HasSuffix(first, " ready.") {
		s = rest
	}
	if err != nil {
		return s, fmt.Errorf("birdc %s (bird in %s): %w: %s", strings.Join(args, " "), b.NS.Name, err, s)
	}
	return s, nil
}

// Cmd runs birdc with args ("show", "route") and returns its output
// without the banner; an error fails the test.
func (b *Bird) Cmd(t testing.TB, args ...string) string {
	t.Helper()
	out, err := b.Run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Protocols is "show protocols" as protocol name → state: the BGP state
// for BGP protocols ("Established", "Active", "Connect", "OpenSent",
// "Idle", ...), the BIRD state ("up", "down", "start") for the others.
func (b *Bird) Protocols(t testing.TB) map[string]string {
	t.Helper()
	ps, err := ParseBirdProtocols(b.Cmd(t, "show", "protocols"))
	if err != nil {
		t.Fatalf("bird in %s: %v", b.NS.Name, err)
	}
	m := make(map[string]string, len(ps))
	for name, p := range ps {
		m[name] = p.BGPState()
	}
	return m
}

// Routes is "show route [table T] all" by prefix: every route BIRD has
// for it, the primary (best) one marked. table "" means BIRD's default
// tables (master4 and master6).
func (b *Bird) Routes(t testing.TB, table string) map[netip.Prefix][]BirdRoute {
	t.Helper()
	args := []string{"show", "route"}
	if table != "" {
		args = append(args, "table", table)
	}
	rs, err := ParseBirdRoutes(b.Cmd(t, append(args, "all")...))
	if err != nil {
		t.Fatalf("bird in %s: %v", b.NS.Name, err)
	}
	return rs
}

// Reconfigure replaces the config (behind the same header) and runs
// "birdc configure", failing the test unless BIRD reports that it
// reconfigured (or queued the reconfiguration). Protocols whose options
// changed incompatibly (a BGP password, say) restart.
func (b *Bird) Reconfigure(t testing.TB, conf string) {
	t.Helper()
	b.writeConf(t, conf)
	out := b.Cmd(t, "configure")
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") &&
		!strings.Contains(out, "queueing") {
		t.Fatalf("bird in %s: configure: %s", b.NS.Name, out)
	}
}

// Alive reports whether the bird process is still running.
func (b *Bird) Alive() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// BirdProtocol is one row of "show protocols".
type BirdProtocol struct {
	Name, Proto, Table, State, Since, Info string
}

// BGPState is the BGP state (the first word of Info) for a BGP protocol,
// else State.
func (p BirdProtocol) BGPState() string {
	if p.Proto == "BGP" {
		if f := strings.Fields(p.Info); len(f) > 0 {
			return f[0]
		}
	}
	return p.State
}

// ParseBirdProtocols parses birdc's "show protocols" (BIRD 2.0) output:
//
//	Name       Proto      Table      State  Since         Info
//	device1    Device     ---        up     20:21:50.061
//	peer       BGP        ---        up     20:21:54.266  Established
//	peer2      BGP        ---        start  20:21:50.061  Active        Socket: Connection refused
//
// Since is a time, or a date for older changes; either way it is the
// tokens after State that look like a date or a time.
func ParseBirdProtocols(out string) (map[string]BirdProtocol, error) {
	m := map[string]BirdProtocol{}
	header := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(line, "BIRD ") && strings.HasSuffix(line, " ready.") {
			continue
		}
		if !header {
			if f[0] != "Name" || len(f) < 4 || f[1] != "Proto" {
				return nil, fmt.Errorf("show protocols: no header in %q", out)
			}
			header = true
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("show protocols: short line %q", line)
		}
		p := BirdProtocol{Name: f[0], Proto: f[1], Table: f[2], State: f[3]}
		i := 4
		var since []string
		for ; i < len(f) && birdTimeToken.MatchString(f[i]); i++ {
			since = append(since, f[i])
		}
		p.Since = strings.Join(since, " ")
		if i < len(f) {
			// Info keeps its inner spacing collapsed.
			p.Info = strings.Join(f[i:], " ")
		}
		m[p.Name] = p
	}
	if !header {
		return nil, fmt.Errorf("show protocols: no header in %q", out)
	}
	return m, nil
}

// birdTimeToken matches the date and time forms of BIRD's timeformats
// (iso short/long, with or without milliseconds, and epoch seconds).
var birdTimeToken = regexp.MustCompile(`^(\d{4}-\d\d-\d\d|\d\d:\d\d(:\d\d(\.\d+)?)?|\d{9,})$`)

// BirdRoute is one route of "show route all".
type BirdRoute struct {
	Table      string // "master4"
	Prefix     netip.Prefix
	Type       string // "unicast", "blackhole", "unreachable", "prohibit"
	Protocol   string // protocol that made it, e.g. the BGP session's name
	From       netip.Addr
	Primary    bool // the "*": BIRD's best route for the prefix
	Preference int
	Info       string // rest of the line, e.g. "[AS65002i]"
	NextHops   []BirdNextHop
	Attrs      map[string]string // from "show route all": "Type", "BGP.as_path", "BGP.next_hop", ...
}

// BirdNextHop is one "via" (or "dev") line of a route.
type BirdNextHop struct {
	Via    netip.Addr // invalid for "dev" next hops
	Iface  string
	Weight int // 0 unless BIRD printed one (multipath)
}

// Vias is the next-hop addresses of the route.
func (r BirdRoute) Vias() []netip.Addr {
	var v []netip.Addr
	for _, nh := range r.NextHops {
		if nh.Via.IsValid() {
			v = append(v, nh.Via)
		}
	}
	return v
}

// ParseBirdRoutes parses birdc's "show route [all]" (BIRD 2.0) output:
//
//	Table master4:
//	10.244.202.0/24      unicast [st2 20:22:43.232] * (200)
//		via 198.18.0.7 on eth0
//		Type: static univ
//	                     unicast [peer 20:21:56.758 from 198.18.0.5] (100/?) [AS65002i]
//		via 198.18.0.2 on eth0 weight 1
//		via 198.18.0.9 on eth0 weight 1
//		Type: BGP univ
//		BGP.as_path: 65002
//	10.244.201.0/24      blackhole [st 20:21:50.061] * (200)
//
// A line that starts with the network begins its first route, one that
// starts with spaces another route for the same network, and a line that
// starts with a tab is a next hop or attribute of the route above. BIRD
// 1.6's "10.0.0.0/24 via 198.18.0.2 on eth0 [bgp1 ...]" form is accepted
// too. Networks that are not IP prefixes (flowspec, VPN) are an error.
func ParseBirdRoutes(out string) (map[netip.Prefix][]BirdRoute, error) {
	m := map[netip.Prefix][]BirdRoute{}
	var (
		table string
		pfx   netip.Prefix
		cur   *BirdRoute
	)
	flush := func() {
		if cur != nil {
			m[cur.Prefix] = append(m[cur.Prefix], *cur)
			cur = nil
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \r")
		switch {
		case strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "BIRD ") && strings.HasSuffix(line, " ready."):
		case strings.HasPrefix(line, "Table ") && strings.HasSuffix(line, ":"):
			flush()
			table = strings.TrimSuffix(strings.TrimPrefix(line, "Table "), ":")
		case strings.HasPrefix(line, "\t"):
			if cur == nil {
				return nil, fmt.Errorf("show route: %q belongs to no route", line)
			}
			s := strings.TrimSpace(line)
			if strings.HasPrefix(s, "via ") || strings.HasPrefix(s, "dev ") {
				nh, err := parseBirdNextHop(strings.Fields(s))
				if err != nil {
					return nil, fmt.Errorf("show route: %q: %w", line, err)
				}
				cur.NextHops = append(cur.NextHops, nh)
				continue
			}
			k, v, ok := strings.Cut(s, ":")
			if !ok {
				return nil, fmt.Errorf("show route: unknown line %q", line)
			}
			if cur.Attrs == nil {
				cur.Attrs = map[string]string{}
			}
			cur.Attrs[k] = strings.TrimSpace(v)
		case line[0] == ' ':
			if !pfx.IsValid() {
				return nil, fmt.Errorf("show route: %q has no network above it", line)
			}
			flush()
			r, err := parseBirdRouteLine(strings.TrimSpace(line))
			if err != nil {
				return nil, fmt.Errorf("show route: %q: %w", line, err)
			}
			r.Table, r.Prefix = table, pfx
			cur = &r
		default:
			flush()
			net, rest, _ := strings.Cut(line, " ")
			p, err := netip.ParsePrefix(net)
			if err != nil {
				return nil, fmt.Errorf("show route: %q: network: %w", line, err)
			}
			r, err := parseBirdRouteLine(strings.TrimSpace(rest))
			if err != nil {
				return nil, fmt.Errorf("show route: %q: %w", line, err)
			}
			pfx = p.Masked()
			r.Table, r.Prefix = table, pfx
			cur = &r
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return m, nil
}

// birdRouteRest is the part of a route line from the "[": protocol,
// since, optional "from", then "*", "(pref[/metric])" and the rest.
var birdRouteRest = regexp.MustCompile(`^\[([^\s\]]+)((?:\s+[^\s\]]+)*?)(?:\s+from\s+([^\s\]]+))?\]\s*(\*)?\s*(?:\((\d+)(?:/[^)]*)?\))?\s*(.*)$`)

func parseBirdRouteLine(s string) (BirdRoute, error) {
	var r BirdRoute
	i := strings.Index(s, "[")
	if i < 0 {
		return r, errors.New("no [protocol ...]")
	}
	if head := strings.Fields(s[:i]); len(head) > 0 {
		switch head[0] {
		case "via", "dev": // BIRD 1.6
			nh, err := parseBirdNextHop(head)
			if err != nil {
				return r, err
			}
			r.Type = "unicast"
			r.NextHops = append(r.NextHops, nh)
		default:
			r.Type = head[0]
		}
	}
	sm := birdRouteRest.FindStringSubmatch(s[i:])
	if sm == nil {
		return r, errors.New("unrecognised [protocol ...] part")
	}
	r.Protocol = sm[1]
	if sm[3] != "" {
		a, err := netip.ParseAddr(sm[3])
		if err != nil {
			return r, fmt.Errorf("from: %w", err)
		}
		r.From = a
	}
	r.Primary = sm[4] == "*"
	if sm[5] != "" {
		r.Preference, _ = strconv.Atoi(sm[5])
	}
	r.Info = sm[6]
	return r, nil
}

// parseBirdNextHop parses "via ADDR [on IFACE] [weight N] ..." or
// "dev IFACE ...".
func parseBirdNextHop(f []string) (BirdNextHop, error) {
	var nh BirdNextHop
	if len(f) < 2 {
		return nh, errors.New("short next hop")
	}
	switch f[0] {
	case "via":
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			return nh, fmt.Errorf("via: %w", err)
		}
		nh.Via = a
	case "dev":
		nh.Iface = f[1]
	}
	for i := 2; i+1 < len(f); i++ {
		switch f[i] {
		case "on":
			nh.Iface = f[i+1]
			i++
		case "weight":
			w, err := strconv.Atoi(f[i+1])
			if err != nil {
				return nh, fmt.Errorf("weight: %w", err)
			}
			nh.Weight = w
			i++
		}
	}
	return nh, nil
}

// BirdConf builds a BIRD 2 config for a test peer: a router id, "protocol
// device", kernel protocols that never touch the namespace's kernel tables
// (import none, export none: the tests read BIRD's own tables instead),
// blackhole static routes to originate, and BGP sessions. String renders
// it; Extra is appended verbatim for anything else.
type BirdConf struct {
	RouterID  netip.Addr
	Originate []netip.Prefix // each "route P blackhole;" in a static protocol per family
	BGP       []BirdBGP
	Extra     string
}

// BirdBGP is one "protocol bgp" block. Zero values pick test-friendly
// defaults: hold time 9 s, first connect after 1 s, retry every 1 s, and
// after an error wait 1 s (growing to 5 s) rather than BIRD's 60-300 s.
type BirdBGP struct {
	Name      string     // protocol name, the key of Protocols and BirdRoute.Protocol
	LocalAS   uint32     // "local as"
	Local     netip.Addr // source address; optional
	LocalPort int        // "local port": where BIRD listens and connects from; 0 = 179
	Neighbor  netip.Addr
	PeerAS    uint32
	Port      int    // neighbor's port; 0 = 179
	Password  string // TCP MD5 (RFC 2385); "" = none
	Passive   bool   // only accept, never connect
	Multihop  int    // >0: "multihop N" instead of a directly connected eBGP peer
	HoldTime  int    // seconds; 0 = 9
	Import    string // filter after "import": "all" (default), "none", "where ..."
	Export    string // filter after "export": default "all"
	IPv6      bool   // also an ipv6 channel (same filters)
	Extra     string // more statements inside the block
}

// Render returns the block; it panics on a password BIRD cannot quote.
func (p BirdBGP) Render() string {
	var s strings.Builder
	fmt.Fprintf(&s, "protocol bgp %s {\n", p.Name)
	s.WriteString("\tlocal")
	if p.Local.IsValid() {
		fmt.Fprintf(&s, " %s", p.Local)
	}
	if p.LocalPort != 0 {
		fmt.Fprintf(&s, " port %d", p.LocalPort)
	}
	fmt.Fprintf(&s, " as %d;\n", p.LocalAS)
	fmt.Fprintf(&s, "\tneighbor %s", p.Neighbor)
	if p.Port != 0 {
		fmt.Fprintf(&s, " port %d", p.Port)
	}
	fmt.Fprintf(&s, " as %d;\n", p.PeerAS)
	if p.Password != "" {
		if strings.ContainsAny(p.Password, "\"\n\\") {
			panic(fmt.Sprintf("nstest: BIRD password %q contains a quote, backslash or newline", p.Password))
		}
		fmt.Fprintf(&s, "\tpassword \"%s\";\n", p.Password)
	}
	if p.Passive {
		s.WriteString("\tpassive on;\n")
	}
	if p.Multihop > 0 {
		fmt.Fprintf(&s, "\tmultihop %d;\n", p.Multihop)
	}
	hold := p.HoldTime
	if hold == 0 {
		hold = 9
	}
	fmt.Fprintf(&s, "\thold time %d;\n", hold)
	s.WriteString("\tconnect delay time 1;\n\tconnect retry time 1;\n\terror wait time 1, 5;\n")
	imp, exp := p.Import, p.Export
	if imp == "" {
		imp = "all"
	}
	if exp == "" {
		exp = "all"
	}
	fmt.Fprintf(&s, "\tipv4 { import %s; export %s; };\n", imp, exp)
	if p.IPv6 {
		fmt.Fprintf(&s, "\tipv6 { import %s; export %s; };\n", imp, exp)
	}
	if p.Extra != "" {
		s.WriteString("\t" + strings.TrimSpace(p.Extra) + "\n")
	}
	s.WriteString("}\n")
	return s.String()
}

// String renders the whole config.
func (c BirdConf) String() string {
	var s strings.Builder
	if c.RouterID.IsValid() {
		fmt.Fprintf(&s, "router id %s;\n", c.RouterID)
	}
	s.WriteString("protocol device { scan time 10; }\n")
	s.WriteString("protocol kernel kernel4 { learn off; ipv4 { import none; export none; }; }\n")
	s.WriteString("protocol kernel kernel6 { learn off; ipv6 { import none; export none; }; }\n")
	var v4, v6 []string
	for _, p := range c.Originate {
		r := fmt.Sprintf("\troute %s blackhole;\n", p.Masked())
		if p.Addr().Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	sort.Strings(v4)
	sort.Strings(v6)
	if len(v4) > 0 {
		s.WriteString("protocol static static4 {\n\tipv4;\n" + strings.Join(v4, "") + "}\n")
	}
	if len(v6) > 0 {
		s.WriteString("protocol static static6 {\n\tipv6;\n" + strings.Join(v6, "") + "}\n")
	}
	for _, p := range c.BGP {
		s.WriteString(p.Render())
	}
	if c.Extra != "" {
		s.WriteString(c.Extra + "\n")
	}
	return s.String()
}
