package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/model"
)

// DefaultPoolName is the IPPool EnsureDefaultPool creates (Calico's
// default-ipv4-ippool).
const DefaultPoolName = "default-ipv4-ippool"

// DefaultPool is the IPPool an agent creates on first start when the
// cluster has none, from its settings (WREN_IPV4POOL_* in the DaemonSet,
// like Calico's CALICO_IPV4POOL_CIDR and friends). CIDR "" means none.
type DefaultPool struct {
	CIDR        string
	BlockSize   int    // 0: model.DefaultBlockSize, as in the CRD
	VXLANMode   string // Always | CrossSubnet | Never ("": Never)
	IPIPMode    string // Always | CrossSubnet | Never ("": Never)
	NATOutgoing bool
}

// Validate checks what the CRD would reject, so a bad setting stops the
// agent at start with the setting named, not at the first pod.
func (p DefaultPool) Validate() error {
	if p.CIDR == "" {
		return nil
	}
	pfx, err := netip.ParsePrefix(p.CIDR)
	switch {
	case err != nil:
		return fmt.Errorf("default IPv4 pool: CIDR %q: %w", p.CIDR, err)
	case !pfx.Addr().Is4():
		return fmt.Errorf("default IPv4 pool: CIDR %q is not IPv4", p.CIDR)
	case pfx.Masked() != pfx:
		return fmt.Errorf("default IPv4 pool: CIDR %q has host bits set (did you mean %s?)", p.CIDR, pfx.Masked())
	}
	bs := p.BlockSize
	if bs == 0 {
		bs = model.DefaultBlockSize
	}
	if bs < model.MinBlockSize || bs > model.MaxBlockSize || bs < pfx.Bits() {
		return fmt.Errorf("default IPv4 pool: block size %d must be %d..%d and at least the pool's prefix length %d",
			bs, model.MinBlockSize, model.MaxBlockSize, pfx.Bits())
	}
	var errs []error
	for _, m := range []struct{ name, v string }{{"VXLAN mode", p.VXLANMode}, {"IPIP mode", p.IPIPMode}} {
		switch v1alpha1.EncapMode(m.v) {
		case "", v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever:
		default:
			errs = append(errs, fmt.Errorf("default IPv4 pool: %s %q must be Always, CrossSubnet or Never", m.name, m.v))
		}
	}
	if on := func(s string) bool { return s != "" && s != string(v1alpha1.EncapNever) }; on(p.VXLANMode) && on(p.IPIPMode) {
		errs = append(errs, fmt.Errorf("default IPv4 pool: VXLAN mode %s and IPIP mode %s: at most one may be enabled", p.VXLANMode, p.IPIPMode))
	}
	return errors.Join(errs...)
}

// EnsureDefaultPool creates the default IPPool from p when the cluster
// has no IPPool at all; it never changes or adds to existing pools, so
// an operator's pools always win and a later change of the setting does
// nothing (as with Calico). Every agent of a new cluster races to create
// it; the API server lets exactly one win, and the others' AlreadyExists
// is success. It returns whether this call created the pool.
func EnsureDefaultPool(ctx context.Context, cfg *rest.Config, p DefaultPool, log *slog.Logger) (bool, error) {
	if err := p.Validate(); err != nil {
		return false, err
	}
	c, err := NewClient(withRate(cfg))
	if err != nil {
		return false, err
	}
	var l v1alpha1.IPPoolList
	if err := c.List(ctx, &l, client.Limit(1)); err != nil {
		return false, fmt.Errorf("list ippools: %w", err)
	}
	if len(l.Items) > 0 {
		return false, nil
	}
	if p.CIDR == "" {
		log.Warn("no IPPool exists and no default pool is configured: pods cannot get addresses until an IPPool is created (or set WREN_IPV4POOL_CIDR in the wren-config ConfigMap)")
		return false, nil
	}
	spec := v1alpha1.IPPoolSpec{CIDR: v1alpha1.CIDR(p.CIDR), BlockSize: int32(p.BlockSize), NATOutgoing: p.NATOutgoing,
		VXLANMode: v1alpha1.EncapMode(p.VXLANMode), IPIPMode: v1alpha1.EncapMode(p.IPIPMode)}
	if spec.BlockSize == 0 {
		spec.BlockSize = model.DefaultBlockSize
	}
	for _, m := range []*v1alpha1.EncapMode{&spec.VXLANMode, &spec.IPIPMode} {
		if *m == "" {
			*m = v1alpha1.EncapNever
		}
	}
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: DefaultPoolName}, Spec: spec}
	switch err := c.Create(ctx, pool); {
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("create IPPool %s: %w", DefaultPoolName, err)
	}
	log.Info("created the default IPPool", "name", DefaultPoolName, "cidr", spec.CIDR, "blockSize", spec.BlockSize,
		"vxlanMode", spec.VXLANMode, "ipipMode", spec.IPIPMode, "natOutgoing", spec.NATOutgoing)
	return true, nil
}
