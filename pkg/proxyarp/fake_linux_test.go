package proxyarp

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNL is a tiny link table with a /proc/sys tree under a temporary
// directory, standing in for one node namespace. It implements Netlink and
// renders its state as sorted text lines for golden comparison.
type fakeNL struct {
	t     testing.TB
	root  string // the sysctl root
	links map[string]*fakeLink
	next  int

	writes    int              // mutating calls that succeeded
	lists     int              // LinkList calls
	interrupt int              // LinkList calls left to fail with ErrDumpInterrupted
	fail      map[string]error // "op name" -> injected error, e.g. "mtu cali..."
}

type fakeLink struct {
	index int
	name  string
	kind  string // netlink type: veth, dummy, device, vxlan
	mac   net.HardwareAddr
	mtu   int
	up    bool
}

// Kernel defaults of the per-interface sysctls the package writes.
var fakeSysctlDefaults = []struct{ format, value string }{
	{"net/ipv4/conf/%s/proxy_arp", "0"},
	{"net/ipv4/conf/%s/forwarding", "0"},
	{"net/ipv4/conf/%s/route_localnet", "0"},
	{"net/ipv4/neigh/%s/proxy_delay", "80"},
	{"net/ipv6/conf/%s/accept_ra", "1"},
}

func newFakeNL(t testing.TB) *fakeNL {
	return &fakeNL{t: t, root: t.TempDir(), links: map[string]*fakeLink{}, next: 1, fail: map[string]error{}}
}

// sysctlTree says which per-interface sysctl files a new link gets.
type sysctlTree int

const (
	withSysctls sysctlTree = iota // IPv4 and IPv6, as on a normal node
	ipv4Only                      // IPv6 disabled on the node
	noSysctls                     // nothing (a link whose files are unreadable)
)

// add creates a link, with the kernel's default sysctls, as the CNI plugin
// or some other program would.
func (f *fakeNL) add(name, kind, mac string, mtu int, up bool, tree sysctlTree) {
	f.t.Helper()
	if _, ok := f.links[name]; ok {
		f.t.Fatalf("fake: link %s exists", name)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		f.t.Fatal(err)
	}
	f.links[name] = &fakeLink{index: f.next, name: name, kind: kind, mac: hw, mtu: mtu, up: up}
	f.next++
	for _, s := range fakeSysctlDefaults {
		if tree == noSysctls || tree == ipv4Only && strings.HasPrefix(s.format, "net/ipv6") {
			continue
		}
		p := filepath.Join(f.root, fmt.Sprintf(s.format, name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s.value+"\n"), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fakeNL) byIndex(l netlink.Link) (*fakeLink, error) {
	for _, fl := range f.links {
		if fl.index == l.Attrs().Index {
			return fl, nil
		}
	}
	return nil, unix.ENODEV
}

func (f *fakeNL) injected(op, name string) error { return f.fail[op+" "+name] }

func (f *fakeNL) LinkList() ([]netlink.Link, error) {
	f.lists++
	if f.interrupt > 0 {
		f.interrupt--
		return nil, netlink.ErrDumpInterrupted
	}
	var out []netlink.Link
	for _, fl := range f.links {
		la := netlink.NewLinkAttrs()
		la.Index, la.Name, la.MTU = fl.index, fl.name, fl.mtu
		la.HardwareAddr = slices.Clone(fl.mac)
		if fl.up {
			la.Flags |= net.FlagUp
		}
		switch fl.kind {
		case "veth":
			out = append(out, &netlink.Veth{LinkAttrs: la})
		case "dummy":
			out = append(out, &netlink.Dummy{LinkAttrs: la})
		case "vxlan":
			out = append(out, &netlink.Vxlan{LinkAttrs: la})
		default:
			out = append(out, &netlink.Device{LinkAttrs: la})
		}
	}
	return out, nil
}

func (f *fakeNL) LinkSetUp(l netlink.Link) error {
	fl, err := f.byIndex(l)
	if err != nil {
		return err
	}
	if err := f.injected("up", fl.name); err != nil {
		return err
	}
	fl.up = true
	f.writes++
	return nil
}

func (f *fakeNL) LinkSetMTU(l netlink.Link, mtu int) error {
	fl, err := f.byIndex(l)
	if err != nil {
		return err
	}
	if err := f.injected("mtu", fl.name); err != nil {
		return err
	}
	fl.mtu = mtu
	f.writes++
	return nil
}

func (f *fakeNL) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	fl, err := f.byIndex(l)
	if err != nil {
		return err
	}
	if err := f.injected("mac", fl.name); err != nil {
		return err
	}
	fl.mac = slices.Clone(hw)
	f.writes++
	return nil
}

func (f *fakeNL) LinkDel(l netlink.Link) error {
	fl, err := f.byIndex(l)
	if err != nil {
		return err
	}
	if err := f.injected("del", fl.name); err != nil {
		return err
	}
	delete(f.links, fl.name)
	// The kernel removes the link's sysctl directories with it.
	for _, dir := range []string{"net/ipv4/conf", "net/ipv4/neigh", "net/ipv6/conf"} {
		if err := os.RemoveAll(filepath.Join(f.root, dir, fl.name)); err != nil {
			f.t.Fatal(err)
		}
	}
	f.writes++
	return nil
}

// String renders one line per link with its sysctls ("-" where the file
// does not exist), then one line per sysctl file that belongs to no link.
func (f *fakeNL) String() string {
	var lines []string
	seen := map[string]bool{}
	for _, fl := range f.links {
		state := "down"
		if fl.up {
			state = "up"
		}
		line := fmt.Sprintf("%s %s %s mtu %d %s", fl.name, fl.kind, fl.mac, fl.mtu, state)
		for _, s := range fakeSysctlDefaults {
			key := fmt.Sprintf(s.format, fl.name)
			seen[key] = true
			v := "-"
			if b, err := os.ReadFile(filepath.Join(f.root, key)); err == nil {
				v = strings.TrimSpace(string(b))
			}
			line += fmt.Sprintf(" %s=%s", filepath.Base(s.format), v)
		}
		lines = append(lines, line)
	}
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		key, _ := filepath.Rel(f.root, p)
		if !seen[filepath.ToSlash(key)] {
			b, _ := os.ReadFile(p)
			lines = append(lines, fmt.Sprintf("stray sysctl %s=%s", filepath.ToSlash(key), strings.TrimSpace(string(b))))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}
