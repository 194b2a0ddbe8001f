//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Down removes exactly what Up made, also from a half-built lab, and is
// safe to run twice: the nodes (kubelet, containers, containerd, shims,
// namespaces, cgroups), BIRD and the control plane (clients before
// servers), the network namespaces named <Prefix>*, and the state
// directory. It refuses to delete the state directory while anything is
// still mounted below it.
func (l *Lab) Down(ctx context.Context) error {
	_, statErr := os.Stat(l.cfg.State)
	if os.IsNotExist(statErr) && len(l.namespaces()) == 0 {
		l.logf("no lab to remove (%s, namespaces %s*)", l.cfg.State, l.cfg.Prefix)
		return nil
	}
	t0 := time.Now()
	var errs []error
	nodes := map[int]bool{}
	for _, n := range l.Nodes() {
		nodes[n] = true
	}
	// Nodes whose directory exists but that never registered count too.
	for n := 1; n <= 9; n++ {
		if _, err := os.Stat(l.NodeDir(n)); err == nil {
			nodes[n] = true
		}
	}
	for n := range nodes {
		if err := l.stopNode(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{"bird", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		l.stop(p, 10*time.Second)
	}
	// Anything else recorded (processes of older runs, helpers).
	if entries, err := os.ReadDir(l.path("pids")); err == nil {
		for _, e := range entries {
			l.stop(strings.TrimSuffix(e.Name(), ".pid"), 10*time.Second)
		}
	}
	for _, ns := range l.namespaces() {
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if d := l.path("ns"); isMountPoint(d) {
		if _, err := run(ctx, "umount", d); err != nil {
			errs = append(errs, err)
		}
	}
	if left := mountsUnder(l.cfg.State); len(left) > 0 {
		errs = append(errs, fmt.Errorf("not removing %s: still mounted there: %s", l.cfg.State, strings.Join(left, " ")))
	} else if err := os.RemoveAll(l.cfg.State); err != nil {
		errs = append(errs, err)
	}
	if ns := l.namespaces(); len(ns) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left: %s", strings.Join(ns, " ")))
	}
	l.waits.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.logf("lab removed in %s (nodes, control plane, namespaces %s*, %s)", time.Since(t0).Round(100*time.Millisecond), l.cfg.Prefix, l.cfg.State)
	return nil
}
