package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// Unavailable reports whether err means that the Kubernetes API server
// cannot be reached or does not serve right now, so the request may
// succeed later unchanged: a connection refused, reset or lost, a
// timeout, 429 Too Many Requests (API priority and fairness sheds load,
// above all while a restarted API server refills its caches), 503
// ("the server is currently unable to handle the request"), 502 and 504
// from a load balancer in front of it. Answers about the request itself
// (404, 409, 422, 403, 500 ...) are not.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		switch st.Status().Code {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case utilnet.IsTimeout(err), utilnet.IsProbableEOF(err), utilnet.IsHTTP2ConnectionLost(err):
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true // the API server's name does not resolve (yet)
	}
	// What the API server says when it cannot serve, for errors that
	// reached us only as text.
	msg := err.Error()
	return strings.Contains(msg, "the server is currently unable to handle the request") ||
		strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset by peer")
}

// apiCallTimeout bounds one IPAM request to the API server. A request
// that gets no answer this long means the server is not reachable (a
// blackholed connection takes client-go's HTTP/2 health check 45 s to
// notice): the CNI request fails with "try again later" instead of
// hanging until the runtime's own deadline. If the write did happen, the
// runtime's retry of ADD finds the allocation by its handle.
const apiCallTimeout = 5 * time.Second

// unavailableStore is the IPAM store the agent's allocator uses: the
// API-backed store with each request bounded by timeout, whose errors
// carry ipam.ErrUnavailable when the API server cannot be reached or does
// not serve (Unavailable), so the allocator gives up at once and the CNI
// plugin answers "try again later" (code 11) naming the API server,
// instead of a generic failure. A request that timed out marks the server
// unreachable in h, as a refused connection does in the transport.
type unavailableStore struct {
	s       ipam.CachedStore
	h       *apiHealth
	timeout time.Duration
}

var (
	_ ipam.Store       = unavailableStore{}
	_ ipam.CachedStore = unavailableStore{}
)

// markUnavailable adds ipam.ErrUnavailable to err's chain if the API
// server could not be reached.
func markUnavailable(err error) error {
	if err == nil || errors.Is(err, ipam.ErrUnavailable) || !Unavailable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ipam.ErrUnavailable, err)
}

// call runs one request to the API server with the store's time bound.
func (u unavailableStore) call(ctx context.Context, op string, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	start := time.Now()
	err := f(cctx)
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%s: no answer within %s: %w", op, u.timeout, err)
		if u.h != nil {
			u.h.failed(start, err)
		}
	}
	return markUnavailable(err)
}

func (u unavailableStore) ListPools(ctx context.Context) (p []model.Pool, err error) {
	err = u.call(ctx, "list ippools", func(ctx context.Context) (err error) { p, err = u.s.ListPools(ctx); return err })
	return p, err
}

func (u unavailableStore) ListBlocks(ctx context.Context) (b []ipam.Block, err error) {
	err = u.call(ctx, "list ipamblocks", func(ctx context.Context) (err error) { b, err = u.s.ListBlocks(ctx); return err })
	return b, err
}

func (u unavailableStore) Settings(ctx context.Context) (st ipam.Settings, err error) {
	err = u.call(ctx, "read IPAM settings", func(ctx context.Context) (err error) { st, err = u.s.Settings(ctx); return err })
	return st, err
}

// CachedSettings reads the informer cache: no request, no bound.
func (u unavailableStore) CachedSettings(ctx context.Context) (ipam.Settings, error) {
	st, err := u.s.CachedSettings(ctx)
	return st, markUnavailable(err)
}

// CachedPools reads the informer cache: no request, no bound.
func (u unavailableStore) CachedPools(ctx context.Context) ([]model.Pool, error) {
	p, err := u.s.CachedPools(ctx)
	return p, markUnavailable(err)
}

// CachedBlocks reads the informer cache: no request, no bound.
func (u unavailableStore) CachedBlocks(ctx context.Context) ([]ipam.Block, error) {
	b, err := u.s.CachedBlocks(ctx)
	return b, markUnavailable(err)
}

func (u unavailableStore) GetBlock(ctx context.Context, cidr netip.Prefix) (b ipam.Block, err error) {
	err = u.call(ctx, "get ipamblock", func(ctx context.Context) (err error) { b, err = u.s.GetBlock(ctx, cidr); return err })
	return b, err
}

func (u unavailableStore) CreateBlock(ctx context.Context, b ipam.Block) (nb ipam.Block, err error) {
	err = u.call(ctx, "create ipamblock", func(ctx context.Context) (err error) { nb, err = u.s.CreateBlock(ctx, b); return err })
	return nb, err
}

func (u unavailableStore) UpdateBlock(ctx context.Context, b ipam.Block) (nb ipam.Block, err error) {
	err = u.call(ctx, "update ipamblock", func(ctx context.Context) (err error) { nb, err = u.s.UpdateBlock(ctx, b); return err })
	return nb, err
}

func (u unavailableStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	return u.call(ctx, "delete ipamblock", func(ctx context.Context) error { return u.s.DeleteBlock(ctx, b) })
}
