package proxyarp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-net/wren/pkg/model"
)

// Netlink is the part of *netlink.Handle the Reconciler uses. The handle
// must be bound to the node's network namespace.
type Netlink interface {
	LinkList() ([]netlink.Link, error)
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	LinkDel(link netlink.Link) error
}

var _ Netlink = (*netlink.Handle)(nil)

// hostMAC is HostMAC parsed.
var hostMAC = func() net.HardwareAddr {
	m, err := net.ParseMAC(HostMAC)
	if err != nil {
		panic(err)
	}
	return m
}()

// dumpAttempts bounds the retries of a link dump the kernel interrupted
// (NLM_F_DUMP_INTR: the link table changed while it was being read).
const dumpAttempts = 5

// Reconciler keeps the host-side cali veths of the desired workloads in
// shape (up, MAC ee:ee:ee:ee:ee:ee, pod MTU, proxy-ARP sysctls) and deletes
// cali veths that belong to no desired workload. It never creates links:
// the CNI plugin does, with SetupPod, because only it holds the pod's
// network namespace.
type Reconciler struct {
	cfg Config
	nl  Netlink

	applyMu sync.Mutex // one Apply at a time; guards checked

	mu      sync.Mutex
	set     bool                      // Set was called at least once
	given   []model.Workload          // last Set argument, sorted, for the no-op check
	desired map[string]model.Workload // by HostIface, valid and unique
	claimed map[string]bool           // every HostIface of the Set, valid or not: never swept
	invalid []error                   // Set's rejections, reported by every Apply
	pinned  map[string]model.Workload // by HostIface: set up by CNI ADD, not yet in a Set
	checked map[int]time.Time         // ifindex -> when its sysctls were last found right (Apply only)
}

// New returns a Reconciler that works through nl, a handle in the node's
// network namespace. Unset Config fields get their defaults; the caller
// is expected to have validated cfg.
func New(cfg Config, nl Netlink) *Reconciler {
	cfg.Defaults()
	return &Reconciler{cfg: cfg, nl: nl, desired: map[string]model.Workload{}, pinned: map[string]model.Workload{}, checked: map[int]time.Time{}}
}

// Pin is the fast path of a CNI ADD: it claims w's host veth before the
// ADD creates it, so that an Apply running meanwhile (with a desired set
// from before the ADD) does not sweep the new veth as an orphan. The pin
// lasts until a Set includes the workload, or Unpin.
func (r *Reconciler) Pin(w model.Workload) {
	r.mu.Lock()
	r.pinned[w.HostIface] = w
	r.mu.Unlock()
}

// Unpin drops a pin (the ADD failed, or DEL removed the veth).
func (r *Reconciler) Unpin(hostIface string) {
	r.mu.Lock()
	delete(r.pinned, hostIface)
	r.mu.Unlock()
}

// isPinned reports whether a CNI ADD claimed the link.
func (r *Reconciler) isPinned(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pinned[name]
	return ok
}

// Set replaces the desired workloads. It does no I/O, and calling it again
// with the same workloads (in any order) changes nothing. Invalid
// workloads, and any workload whose host interface another one already
// claimed, are left out and reported by the next Apply; their links are
// neither repaired nor swept.
func (r *Reconciler) Set(ws []model.Workload) {
	given := slices.Clone(ws)
	slices.SortFunc(given, compareWorkloads)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set && slices.Equal(given, r.given) {
		return
	}
	r.set, r.given = true, given
	r.desired = make(map[string]model.Workload, len(given))
	r.claimed = make(map[string]bool, len(given))
	r.invalid = nil
	for _, w := range given {
		// Even a workload Set cannot use keeps its link: an agent bug
		// in one field must not delete a running pod's veth.
		r.claimed[w.HostIface] = true
		if err := validateWorkload(w); err != nil {
			r.invalid = append(r.invalid, err)
			continue
		}
		if prev, dup := r.desired[w.HostIface]; dup {
			r.invalid = append(r.invalid, podError(w, fmt.Errorf("host interface already belongs to pod %s", prev.Key())))
			continue
		}
		r.desired[w.HostIface] = w
		if p, ok := r.pinned[w.HostIface]; ok && p.IP == w.IP {
			delete(r.pinned, w.HostIface) // the loop has it now
		}
	}
}

func compareWorkloads(a, b model.Workload) int {
	if c := strings.Compare(a.HostIface, b.HostIface); c != 0 {
		return c
	}
	if c := strings.Compare(a.Key(), b.Key()); c != 0 {
		return c
	}
	if c := strings.Compare(a.ContainerID, b.ContainerID); c != 0 {
		return c
	}
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	return a.MTU - b.MTU
}

// Apply lists the node's links and makes the cali ones match the desired
// workloads: repairs first (MTU, MAC, sysctls, up), then the orphan sweep.
// A desired workload without its link is an error (the pod side cannot be
// invented here); a cali-named link that is not a veth is reported, never
// deleted; links not named cali* are never touched. Failures are per
// workload or link, joined, and never stop the others. Apply before the
// first Set is an error and touches nothing.
func (r *Reconciler) Apply(ctx context.Context) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	if !r.set {
		r.mu.Unlock()
		// An empty desired set would sweep every pod's veth.
		return errors.New("proxyarp: Apply before the first Set; not sweeping pod veths")
	}
	desired := make([]model.Workload, 0, len(r.desired))
	for _, w := range r.desired {
		desired = append(desired, w)
	}
	errs := slices.Clone(r.invalid)
	claimed := r.claimed
	r.mu.Unlock()
	slices.SortFunc(desired, compareWorkloads)

	links, err := listLinks(r.nl)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	byName := make(map[string]netlink.Link, len(links))
	present := make(map[int]bool, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
		present[l.Attrs().Index] = true
	}
	for idx := range r.checked {
		if !present[idx] {
			delete(r.checked, idx)
		}
	}

	for _, w := range desired {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		l, ok := byName[w.HostIface]
		if !ok {
			errs = append(errs, podError(w, fmt.Errorf("link %s is missing (the CNI plugin creates it on ADD)", w.HostIface)))
			continue
		}
		if t := l.Type(); t != "veth" {
			errs = append(errs, podError(w, fmt.Errorf("link %s is a %s, not a veth; leaving it alone", w.HostIface, t)))
			continue
		}
		for _, err := range r.repair(l, w) {
			errs = append(errs, podError(w, err))
		}
	}

	for _, l := range links {
		name := l.Attrs().Name
		// Pins are read after the links were listed: a veth in the list
		// was created after its ADD pinned it.
		if !strings.HasPrefix(name, Prefix) || claimed[name] || r.isPinned(name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if t := l.Type(); t != "veth" {
			errs = append(errs, fmt.Errorf("link %s: named like a pod veth but is a %s; not deleting it", name, t))
			continue
		}
		if err := r.nl.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete orphan veth %s: %w", name, err))
			continue
		}
		r.cfg.Logger.Info("deleted orphan pod veth", "link", name)
	}
	return errors.Join(errs...)
}

// repair brings one existing host-side veth in line with w and returns
// one error per step that failed. The sysctls
// and the MAC are fixed before the link is set up, so a link that comes up
// answers the pod's ARP for the gateway from its first packet.
func (r *Reconciler) repair(l netlink.Link, w model.Workload) []error {
	a := l.Attrs()
	var errs []error
	var fixed []string
	if a.MTU != w.MTU {
		if err := r.nl.LinkSetMTU(l, w.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set %s mtu %d: %w", a.Name, w.MTU, err))
		} else {
			fixed = append(fixed, fmt.Sprintf("mtu %d->%d", a.MTU, w.MTU))
		}
	}
	if !bytes.Equal(a.HardwareAddr, hostMAC) {
		if err := r.nl.LinkSetHardwareAddr(l, hostMAC); err != nil {
			errs = append(errs, fmt.Errorf("set %s address %s: %w", a.Name, HostMAC, err))
		} else {
			fixed = append(fixed, fmt.Sprintf("address %s->%s", a.HardwareAddr, HostMAC))
		}
	}
	// Sysctls are re-read when the link is new, was out of shape, or
	// was last checked SysctlRecheck ago.
	now := r.cfg.Now()
	if at, ok := r.checked[a.Index]; !ok || len(fixed) > 0 || len(errs) > 0 || now.Sub(at) >= r.cfg.SysctlRecheck {
		serrs := setHostSysctls(r.cfg.Sysctl, a.Name)
		if len(serrs) == 0 {
			r.checked[a.Index] = now
		} else {
			delete(r.checked, a.Index)
		}
		errs = append(errs, serrs...)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := r.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", a.Name, err))
		} else {
			fixed = append(fixed, "up")
		}
	}
	if len(fixed) > 0 {
		r.cfg.Logger.Info("repaired pod veth", "pod", w.Key(), "link", a.Name, "fixed", strings.Join(fixed, ", "))
	} else {
		r.cfg.Logger.Debug("pod veth in shape", "pod", w.Key(), "link", a.Name)
	}
	return errs
}

// listLinks dumps the links, retrying dumps the kernel interrupted
// (netlink v1.3.1 returns ErrDumpInterrupted with partial results and does
// not retry on its own).
func listLinks(nl Netlink) ([]netlink.Link, error) {
	var err error
	for range dumpAttempts {
		var links []netlink.Link
		links, err = nl.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list links: %w", err)
		}
	}
	return nil, fmt.Errorf("list links: interrupted %d times: %w", dumpAttempts, err)
}

// isNotFound reports whether err says the link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
