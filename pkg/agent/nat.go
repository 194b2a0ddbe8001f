package agent

import (
	"context"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/nat"
)

// IPPool natOutgoing (pkg/nat): the loop sets the table the pools want
// after the routes; a watcher of nftables notifications pokes the loop
// when somebody else changes table ip wren, so a hand edit is repaired
// within one run.

// natReconciler is what the loop needs of pkg/nat.
type natReconciler interface {
	Set(model.NAT)
	Apply(context.Context) error
}

var _ natReconciler = (*nat.Reconciler)(nil)

// newNAT builds the NAT reconciler over nftables in the node's namespace.
// It does no I/O: a kernel without nftables fails only once a pool has
// natOutgoing.
func newNAT(cfg Config) (*nat.NFTKernel, *nat.Reconciler, error) {
	k := nat.NewKernel(cfg.NetNS)
	r, err := nat.New(nat.Config{Logger: cfg.Logger.With("component", "nat")}, k)
	if err != nil {
		return nil, nil, err
	}
	return k, r, nil
}

// natWatch subscribes to nftables notifications in the node's namespace
// and returns the function that pokes the loop on a change of table ip
// wren Wren did not make. Without the subscription (a kernel without
// nftables) hand edits wait for the runner's periodic resync; that is
// logged, not fatal.
func (a *Agent) natWatch() func(ctx context.Context) error {
	w, err := nat.NewWatcher(nat.WatchConfig{NS: a.cfg.NetNS, Ignore: a.natKernel.PortID, Logger: a.cfg.Logger.With("component", "nat")})
	if err != nil {
		a.log.Warn("no nftables notifications: hand edits of table ip wren are repaired at the periodic resync only", "err", err)
		return func(context.Context) error { return nil }
	}
	return func(ctx context.Context) error { return w.Run(ctx, a.run.Poke) }
}
