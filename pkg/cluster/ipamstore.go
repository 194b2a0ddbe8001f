package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// IPAMStore is pkg/ipam's Store over the Kubernetes API: IPPool and
// IPAMBlock objects, and IPReservation and IPAMConfiguration for the
// settings. The API server provides the atomicity IPAM needs:
//
//   - CreateBlock is the linearisation point of a claim: the object name
//     is derived from the CIDR, so of several nodes creating the same
//     block exactly one succeeds and the others get ipam.ErrExists.
//   - UpdateBlock and DeleteBlock send the block's Version as the
//     object's resourceVersion (a precondition for delete); the API server
//     answers 409 Conflict if the object changed since it was read, which
//     becomes ipam.ErrConflict.
//
// ListBlocks, ListPools and GetBlock read through the client it is given
// (an uncached one from NewClient reads etcd-consistent state).
// CachedBlocks and CachedPools read the informer cache given to WithCache:
// fast but possibly stale, which then surfaces as ipam.ErrConflict on
// write and makes the allocator read the API.
type IPAMStore struct {
	c     client.Client
	cache client.Reader // informer cache for CachedBlocks/CachedPools; nil: c
	log   *slog.Logger
	warn  func(problem) // an IPPool left out; the View's sets Events
}

var (
	_ ipam.Store       = (*IPAMStore)(nil)
	_ ipam.CachedStore = (*IPAMStore)(nil)
)

// NewIPAMStore returns a store over c, which must know the Wren types
// (see Scheme). Objects that do not convert (which admission should have
// refused) are skipped and logged on logger; the View's store reports the
// IPPools it leaves out as Events instead.
func NewIPAMStore(c client.Client, logger *slog.Logger) *IPAMStore {
	if logger == nil {
		logger = slog.Default()
	}
	log := logger.With("component", "ipamstore")
	return &IPAMStore{c: c, log: log, warn: logOnce(log)}
}

// WithCache returns a copy of s whose CachedBlocks and CachedPools read
// from r (an informer cache) instead of the API server.
func (s *IPAMStore) WithCache(r client.Reader) *IPAMStore {
	c := *s
	c.cache = r
	return &c
}

func (s *IPAMStore) cached() client.Reader {
	if s.cache != nil {
		return s.cache
	}
	return s.c
}

// ListPools returns the usable IPPools from the API server, by the rules
// of View.Pools (parsePools).
func (s *IPAMStore) ListPools(ctx context.Context) ([]model.Pool, error) {
	return s.listPools(ctx, s.c)
}

// CachedPools is ListPools from the cache (see WithCache).
func (s *IPAMStore) CachedPools(ctx context.Context) ([]model.Pool, error) {
	return s.listPools(ctx, s.cached())
}

// CachedBlocks returns every IPAMBlock from the cache (see WithCache).
func (s *IPAMStore) CachedBlocks(ctx context.Context) ([]ipam.Block, error) {
	return s.listBlocks(ctx, s.cached())
}

func (s *IPAMStore) listPools(ctx context.Context, r client.Reader) ([]model.Pool, error) {
	var l v1alpha1.IPPoolList
	if err := r.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list ippools: %w", err)
	}
	pools, problems := parsePools(l.Items)
	for _, p := range problems {
		s.warn(p)
	}
	return pools, nil
}

// Settings returns every IPReservation and the IPAMConfiguration named
// default from the API server (readSettings).
func (s *IPAMStore) Settings(ctx context.Context) (ipam.Settings, error) {
	return readSettings(ctx, s.c, s.warn)
}

// CachedSettings is Settings from the cache (see WithCache).
func (s *IPAMStore) CachedSettings(ctx context.Context) (ipam.Settings, error) {
	return readSettings(ctx, s.cached(), s.warn)
}

// ListBlocks returns every IPAMBlock from the API server.
func (s *IPAMStore) ListBlocks(ctx context.Context) ([]ipam.Block, error) {
	return s.listBlocks(ctx, s.c)
}

func (s *IPAMStore) listBlocks(ctx context.Context, r client.Reader) ([]ipam.Block, error) {
	var l v1alpha1.IPAMBlockList
	if err := r.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("list ipamblocks: %w", err)
	}
	out := make([]ipam.Block, 0, len(l.Items))
	for i := range l.Items {
		b, err := BlockFromObject(&l.Items[i])
		if err != nil {
			s.log.Warn("skipping IPAMBlock", "ipamblock", l.Items[i].Name, "err", err)
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// GetBlock reads the block of cidr; ipam.ErrNotFound if there is none.
func (s *IPAMStore) GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error) {
	var o v1alpha1.IPAMBlock
	name := v1alpha1.BlockName(cidr)
	if err := s.c.Get(ctx, client.ObjectKey{Name: name}, &o); err != nil {
		return ipam.Block{}, storeError("get ipamblock "+name, err)
	}
	return BlockFromObject(&o)
}

// CreateBlock creates b (whose Version must be empty); ipam.ErrExists if
// its name is taken. It returns b with its new Version.
func (s *IPAMStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	o := BlockObject(b)
	if b.Version != "" {
		return ipam.Block{}, fmt.Errorf("create ipamblock %s: version %q set on a new block", o.Name, b.Version)
	}
	if err := s.c.Create(ctx, o); err != nil {
		return ipam.Block{}, storeError("create ipamblock "+o.Name, err)
	}
	return BlockFromObject(o)
}

// UpdateBlock writes b if b.Version is still the object's
// resourceVersion; ipam.ErrConflict if not, ipam.ErrNotFound if the block
// was deleted. It returns b with its new Version.
func (s *IPAMStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	o := BlockObject(b)
	if b.Version == "" {
		// The API server refuses it too ("must be specified for an
		// update"); say why here.
		return ipam.Block{}, fmt.Errorf("update ipamblock %s: no version to compare", o.Name)
	}
	if err := s.c.Update(ctx, o); err != nil {
		return ipam.Block{}, storeError("update ipamblock "+o.Name, err)
	}
	return BlockFromObject(o)
}

// DeleteBlock deletes b if b.Version is still the object's
// resourceVersion; ipam.ErrConflict if not, ipam.ErrNotFound if it is
// already gone.
func (s *IPAMStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	name := v1alpha1.BlockName(b.CIDR)
	if b.Version == "" {
		return fmt.Errorf("delete ipamblock %s: no version to compare", name)
	}
	o := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.c.Delete(ctx, o, client.Preconditions{ResourceVersion: &b.Version}); err != nil {
		return storeError("delete ipamblock "+name, err)
	}
	return nil
}

// storeError maps API status errors to ipam's sentinel errors, keeping the
// server's message.
func storeError(op string, err error) error {
	var sentinel error
	switch {
	case apierrors.IsConflict(err):
		sentinel = ipam.ErrConflict
	case apierrors.IsAlreadyExists(err):
		sentinel = ipam.ErrExists
	case apierrors.IsNotFound(err):
		sentinel = ipam.ErrNotFound
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, sentinel, err)
}

// BlockObject converts an ipam.Block to its IPAMBlock object, with
// Version as resourceVersion.
func BlockObject(b ipam.Block) *v1alpha1.IPAMBlock {
	o := &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.BlockName(b.CIDR), ResourceVersion: b.Version},
		Spec: v1alpha1.IPAMBlockSpec{
			CIDR:     v1alpha1.CIDR(b.CIDR.String()),
			Affinity: b.Affinity,
			State:    v1alpha1.BlockState(b.State),
		},
	}
	if !b.EmptySince.IsZero() {
		t := metav1.NewTime(b.EmptySince)
		o.Spec.EmptySince = &t
	}
	for _, a := range b.Allocations {
		o.Spec.Allocations = append(o.Spec.Allocations, v1alpha1.IPAllocation{
			IP:          a.IP.String(),
			Handle:      a.Handle,
			Namespace:   a.Namespace,
			Pod:         a.Pod,
			ContainerID: a.ContainerID,
			Node:        a.Node,
		})
	}
	return o
}

// BlockFromObject converts an IPAMBlock object to an ipam.Block, with its
// resourceVersion as Version.
func BlockFromObject(o *v1alpha1.IPAMBlock) (ipam.Block, error) {
	cidr, err := o.Spec.CIDR.Prefix()
	if err != nil {
		return ipam.Block{}, fmt.Errorf("ipamblock %s: spec.cidr: %w", o.Name, err)
	}
	b := ipam.Block{
		CIDR:     cidr,
		Affinity: o.Spec.Affinity,
		State:    string(o.Spec.State),
		Version:  o.ResourceVersion,
	}
	if o.Spec.EmptySince != nil {
		b.EmptySince = o.Spec.EmptySince.Time
	}
	var errs []error
	for i, a := range o.Spec.Allocations {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.allocations[%d].ip: %w", i, err))
			continue
		}
		b.Allocations = append(b.Allocations, ipam.Allocation{
			IP:          ip,
			Handle:      a.Handle,
			Namespace:   a.Namespace,
			Pod:         a.Pod,
			ContainerID: a.ContainerID,
			Node:        a.Node,
		})
	}
	if err := errors.Join(errs...); err != nil {
		return ipam.Block{}, fmt.Errorf("ipamblock %s: %w", o.Name, err)
	}
	return b, nil
}
