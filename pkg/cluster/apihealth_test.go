package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/wren-net/wren/pkg/ipam"
)

// TestUnavailable: what an unreachable or overloaded API server looks like
// through client-go is "try again later"; answers about the request are
// not.
func TestUnavailable(t *testing.T) {
	gr := schema.GroupResource{Group: "wren.network", Resource: "ipamblocks"}
	refused := &url.Error{Op: "Put", URL: "https://198.18.0.2:6443/apis/wren.network/v1alpha1/ipamblocks/x",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	reset := &url.Error{Op: "Get", URL: "https://198.18.0.2:6443/api/v1/pods",
		Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	timeout := &url.Error{Op: "Get", URL: "https://198.18.0.2:6443/api/v1/pods", Err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", refused, true},
		{"connection refused, wrapped", fmt.Errorf("update ipamblock x: %w", refused), true},
		{"connection reset", reset, true},
		{"dial timeout", timeout, true},
		{"context deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"unexpected EOF", &url.Error{Op: "Get", URL: "https://x", Err: io.ErrUnexpectedEOF}, true},
		{"http2 connection lost", errors.New("http2: client connection lost"), true},
		{"GOAWAY", errors.New(`Get "https://x/api": http2: server sent GOAWAY and closed the connection; LastStreamID=1`), true},
		{"DNS", &url.Error{Op: "Get", URL: "https://api.example:6443", Err: &net.DNSError{Err: "no such host", Name: "api.example"}}, true},
		{"429", apierrors.NewTooManyRequests("Too many requests, please try again later.", 1), true},
		{"503", apierrors.NewServiceUnavailable("the server is currently unable to handle the request"), true},
		{"503 generic", apierrors.NewGenericServerResponse(503, "update", gr, "x", "", 0, true), true},
		{"502 from a load balancer", apierrors.NewGenericServerResponse(502, "get", gr, "x", "", 0, true), true},
		{"504", apierrors.NewGenericServerResponse(504, "get", gr, "x", "", 0, true), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "update", 1), true},
		{"unable to handle, as text", errors.New("the server is currently unable to handle the request (put ipamblocks.wren.network x)"), true},
		{"conflict", apierrors.NewConflict(gr, "x", errors.New("changed")), false},
		{"not found", apierrors.NewNotFound(gr, "x"), false},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), false},
		{"invalid", apierrors.NewBadRequest("spec.cidr: bad"), false},
		{"internal error", apierrors.NewInternalError(errors.New("etcd: boom")), false},
		{"canceled", context.Canceled, false},
		{"other", errors.New("x509: certificate signed by unknown authority"), false},
	} {
		if got := Unavailable(tt.err); got != tt.want {
			t.Errorf("%s: Unavailable(%v) = %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
	// The store marks them for pkg/ipam and pkg/cniserver, and leaves its
	// own sentinels alone.
	if err := markUnavailable(fmt.Errorf("update ipamblock x: %w", refused)); !errors.Is(err, ipam.ErrUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("markUnavailable(refused) = %v; want ipam.ErrUnavailable and the cause in the chain", err)
	}
	conflict := storeError("update ipamblock x", apierrors.NewConflict(gr, "x", errors.New("changed")))
	if err := markUnavailable(conflict); errors.Is(err, ipam.ErrUnavailable) || !errors.Is(err, ipam.ErrConflict) {
		t.Errorf("markUnavailable(conflict) = %v", err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAPIHealthTransitions: one line when the server is lost, however
// many requests fail; one line when it is back, with the outage's length;
// answers and failures of requests sent before a transition do not flip
// it back.
func TestAPIHealthTransitions(t *testing.T) {
	var logs logBuffer
	t0 := time.Date(2026, 11, 30, 12, 1, 2, 0, time.UTC)
	now := t0
	h := newAPIHealth("https://198.18.0.2:6443", slog.New(slog.NewTextHandler(&logs, nil)), nil)
	h.now = func() time.Time { return now }
	if _, _, down := h.state(); down {
		t.Fatal("down before any request")
	}
	h.succeeded(now)
	refused := errors.New("dial tcp 198.18.0.2:6443: connect: connection refused")
	now = now.Add(time.Second)
	for range 20 {
		h.failed(now, refused)
	}
	since, err, down := h.state()
	if !down || !since.Equal(t0.Add(time.Second)) || err != refused {
		t.Fatalf("state = %v, %v, %v; want down since %v with %v", since, err, down, t0.Add(time.Second), refused)
	}
	// An answer to a request sent before the outage was noticed.
	h.succeeded(t0)
	if _, _, down := h.state(); !down {
		t.Fatal("an answer sent before the outage ended it")
	}
	now = now.Add(62 * time.Second)
	h.succeeded(now)
	h.succeeded(now)
	if _, _, down := h.state(); down {
		t.Fatal("still down after an answer")
	}
	// A request that hung through the outage fails after the return.
	h.failed(now.Add(-time.Second), refused)
	if _, _, down := h.state(); down {
		t.Fatal("a request from before the return marked the server lost again")
	}
	const lost = "lost the Kubernetes API server https://198.18.0.2:6443: dial tcp 198.18.0.2:6443: connect: connection refused; keeping the node's routes, retrying"
	const back = "Kubernetes API server https://198.18.0.2:6443 reachable again after 1m2s"
	if logs.count(lost) != 1 || logs.count(back) != 1 || logs.count("level=") != 2 {
		t.Errorf("want exactly one %q and one %q line; got:\n%s", lost, back, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\""+lost) || !strings.Contains(logs.String(), "level=INFO msg=\""+back) {
		t.Errorf("levels: want WARN for the loss, INFO for the return; got:\n%s", logs.String())
	}
	// A second outage is reported again.
	now = now.Add(time.Second)
	h.failed(now, refused)
	if logs.count(lost) != 2 {
		t.Errorf("second outage not logged:\n%s", logs.String())
	}
}

// TestAPIHealthProbe: while the server is lost, the probe asks until it
// answers, and the return is logged once; the probe stops asking then.
func TestAPIHealthProbe(t *testing.T) {
	var logs logBuffer
	var mu sync.Mutex
	probes, failUntil := 0, 3
	h := newAPIHealth("https://198.18.0.2:6443", slog.New(slog.NewTextHandler(&logs, nil)), func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		probes++
		if probes < failUntil {
			return errors.New("GET /readyz: 500 Internal Server Error")
		}
		return nil
	})
	h.minProbe, h.maxProbe = time.Millisecond, 4*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	h.failed(time.Now(), errors.New("connection refused"))
	poll(t, 5*time.Second, "the probe notices the return", func() error {
		if _, _, down := h.state(); down {
			return errors.New("still down")
		}
		return nil
	})
	if n := logs.count("reachable again after"); n != 1 {
		t.Errorf("%d return lines; want 1:\n%s", n, logs.String())
	}
	mu.Lock()
	n := probes
	mu.Unlock()
	if n != failUntil {
		t.Errorf("%d probes; want %d (it stops once the server answers)", n, failUntil)
	}
	// The probe's own failure kept the latest cause.
	h.failed(time.Now(), errors.New("connection reset by peer"))
	poll(t, 5*time.Second, "a second outage ends", func() error {
		if _, _, down := h.state(); down {
			return errors.New("still down")
		}
		return nil
	})
	if n := logs.count("lost the Kubernetes API server"); n != 2 {
		t.Errorf("%d loss lines; want 2:\n%s", n, logs.String())
	}
}

// TestRoundTripperReports: what the transport sees decides the state:
// refused connections and 503 mark the server lost, any answer but
// 429/5xx brings it back, 429 changes nothing, and a request whose own
// context ended says nothing.
func TestRoundTripperReports(t *testing.T) {
	code := http.StatusOK
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()
	setCode := func(c int) { mu.Lock(); code = c; mu.Unlock() }
	// A port nobody listens on: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()

	var logs logBuffer
	h := newAPIHealth(srv.URL, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	hc := &http.Client{Transport: roundTripper{rt: http.DefaultTransport, h: h}}
	get := func(u string) {
		t.Helper()
		resp, err := hc.Get(u)
		if err == nil {
			resp.Body.Close()
		}
	}
	isDown := func() bool { _, _, d := h.state(); return d }

	get(dead)
	if !isDown() {
		t.Fatal("a refused connection did not mark the server lost")
	}
	if _, err, _ := h.state(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("cause %v; want connection refused", err)
	}
	setCode(http.StatusTooManyRequests)
	get(srv.URL)
	if !isDown() {
		t.Error("a 429 ended the outage")
	}
	setCode(http.StatusForbidden)
	get(srv.URL)
	if isDown() {
		t.Error("an answer (403) did not end the outage")
	}
	setCode(http.StatusTooManyRequests)
	get(srv.URL)
	if isDown() {
		t.Error("a 429 marked the server lost")
	}
	setCode(http.StatusServiceUnavailable)
	get(srv.URL)
	if !isDown() {
		t.Error("a 503 did not mark the server lost")
	}
	setCode(http.StatusOK)
	get(srv.URL)
	if isDown() {
		t.Error("a 200 did not end the outage")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dead, nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
	if isDown() {
		t.Error("a request canceled by its caller marked the server lost")
	}
	if n := logs.count("lost the Kubernetes API server"); n != 2 {
		t.Errorf("%d loss lines; want 2:\n%s", n, logs.String())
	}
}

// poll calls cond until it returns nil or deadline passes.
func poll(t *testing.T, deadline time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Since(start) > deadline {
			t.Fatalf("%s: not within %s: %v", what, deadline, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hangingStore never answers a request before its context ends, as an
// API server behind a blackholed connection.
type hangingStore struct{ ipam.CachedStore }

func (hangingStore) UpdateBlock(ctx context.Context, _ ipam.Block) (ipam.Block, error) {
	<-ctx.Done()
	return ipam.Block{}, fmt.Errorf("update ipamblock x: %w", ctx.Err())
}

// TestStoreTimeBound: an IPAM request that gets no answer fails within the
// store's bound as unavailable, and marks the server unreachable, so the
// next CNI request fails at once; a request its caller gave up on does
// not.
func TestStoreTimeBound(t *testing.T) {
	var logs logBuffer
	h := newAPIHealth("https://198.18.0.2:6443", slog.New(slog.NewTextHandler(&logs, nil)), nil)
	u := unavailableStore{s: hangingStore{}, h: h, timeout: 50 * time.Millisecond}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.UpdateBlock(ctx, ipam.Block{}); err == nil {
		t.Fatal("no error from a canceled request")
	}
	if _, _, down := h.state(); down {
		t.Fatal("a request its caller canceled marked the server unreachable")
	}

	start := time.Now()
	_, err := u.UpdateBlock(context.Background(), ipam.Block{})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s; want about the 50ms bound", took)
	}
	if !errors.Is(err, ipam.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("error %v; want ipam.ErrUnavailable saying no answer within 50ms", err)
	}
	if _, cause, down := h.state(); !down || cause == nil {
		t.Errorf("server not marked unreachable after a request timed out (cause %v)", cause)
	}
	if logs.count("lost the Kubernetes API server https://198.18.0.2:6443: update ipamblock: no answer within 50ms") != 1 {
		t.Errorf("loss not logged once:\n%s", logs.String())
	}
}
