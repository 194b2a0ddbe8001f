package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// apiHealth knows whether the Kubernetes API server answers, from every
// request the agent makes (informers' lists and watches, IPAM writes,
// Node patches) as its transport sees them, and logs each transition once:
//
//	lost the Kubernetes API server https://198.18.0.2:6443: dial tcp ...: connection refused; keeping the node's routes, retrying
//	Kubernetes API server https://198.18.0.2:6443 reachable again after 1m2s
//
// While the server is marked unreachable, a prober asks GET /readyz with
// backoff (readable by every authenticated user, and answered 200 only
// when the server can serve), so the return is noticed within seconds even
// while client-go's reflectors back off for up to a minute.
//
// Only transport failures (refused, reset, lost, timeouts) and 502/503/504
// mark it unreachable. A 429 does not: the probe (exempt from API priority
// and fairness) would pass at once and the state would flap under load;
// callers still treat 429 as "try again later" (Unavailable).
type apiHealth struct {
	host     string
	log      *slog.Logger
	probe    func(context.Context) error
	minProbe time.Duration
	maxProbe time.Duration
	now      func() time.Time

	kick chan struct{}

	mu    sync.Mutex
	down  bool
	since time.Time // when the server was first found unreachable
	err   error     // the latest failure while unreachable
	upAt  time.Time // the last return
}

func newAPIHealth(host string, logger *slog.Logger, probe func(context.Context) error) *apiHealth {
	return &apiHealth{host: host, log: logger, probe: probe, minProbe: 250 * time.Millisecond, maxProbe: 5 * time.Second,
		now: time.Now, kick: make(chan struct{}, 1)}
}

// state reports whether the API server is unreachable, since when and
// why. It never blocks on I/O.
func (h *apiHealth) state() (since time.Time, err error, down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since, h.err, h.down
}

// failed records a request, started at start, that could not reach the
// server. A request started before the server's last return says nothing
// about now (it may have hung through the outage).
func (h *apiHealth) failed(start time.Time, err error) {
	h.mu.Lock()
	if start.Before(h.upAt) {
		h.mu.Unlock()
		return
	}
	if h.down {
		h.err = err
		h.mu.Unlock()
		return
	}
	h.down, h.since, h.err = true, h.now(), err
	h.mu.Unlock()
	h.log.Warn(fmt.Sprintf("lost the Kubernetes API server %s: %v; keeping the node's routes, retrying", h.host, err))
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// succeeded records a request, started at start, that the server
// answered. An answer to a request sent before the outage was noticed does
// not end it.
func (h *apiHealth) succeeded(start time.Time) {
	h.mu.Lock()
	if !h.down || start.Before(h.since) {
		h.mu.Unlock()
		return
	}
	now := h.now()
	d := now.Sub(h.since)
	h.down, h.err, h.upAt = false, nil, now
	h.mu.Unlock()
	h.log.Info(fmt.Sprintf("Kubernetes API server %s reachable again after %s", h.host, roundDuration(d)))
}

// roundDuration keeps outages readable: 1m2s, 3.4s, 120ms.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// run probes the server while it is marked unreachable, with backoff from
// minProbe to maxProbe (jittered, so a thousand nodes do not knock in
// step), until ctx ends.
func (h *apiHealth) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
		wait := h.minProbe
		for {
			if _, _, down := h.state(); !down {
				break
			}
			t := time.NewTimer(wait/2 + rand.N(wait/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			start := h.now()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := h.probe(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				h.succeeded(start)
			} else {
				h.failed(start, err)
			}
			wait = min(2*wait, h.maxProbe)
		}
	}
}

// serverURL names the API server in messages: https://198.18.0.2:6443.
func serverURL(cfg *rest.Config) string {
	if u, _, err := rest.DefaultServerUrlFor(cfg); err == nil {
		return strings.TrimSuffix(u.String(), "/")
	}
	return cfg.Host
}

// readyzProbe returns a probe that asks the API server's /readyz with the
// agent's own credentials and transport. 200 means back; so do 401 and
// 403 (the server answers, it only does not let us see its readiness).
func readyzProbe(cfg *rest.Config) (func(context.Context) error, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("readyz probe client: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("readyz probe: API server URL: %w", err)
	}
	url := strings.TrimSuffix(base.String(), "/") + "/readyz"
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
			return nil
		}
		return fmt.Errorf("GET /readyz: %s", resp.Status)
	}, nil
}

// roundTripper reports the outcome of every request to h. Requests whose
// own context ended (a watch the reflector stopped, a caller's deadline)
// say nothing about the server.
type roundTripper struct {
	rt http.RoundTripper
	h  *apiHealth
}

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	start := t.h.now()
	resp, err := t.rt.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil {
			t.h.failed(start, err)
		}
	case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		t.h.failed(start, fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status))
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		// The server answered but cannot serve this request now; not an
		// outage (see apiHealth).
	default:
		t.h.succeeded(start)
	}
	return resp, err
}

// watchErrorHandler replaces client-go's default for the informers: an
// unreachable API server is logged once per outage by apiHealth (client-go
// logs every retry of every informer), other errors as before.
func (h *apiHealth) watchErrorHandler(ctx context.Context, r *toolscache.Reflector, err error) {
	switch {
	case apierrors.IsTooManyRequests(err):
		h.log.Debug("informer list or watch throttled by the API server (429); client-go backs off", "err", err)
	case Unavailable(err):
		h.log.Debug("informer list or watch failed; client-go backs off", "err", err)
	default:
		toolscache.DefaultWatchErrorHandler(ctx, r, err)
	}
}
