//go:build linux

package nstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// APIGate is an HTTP reverse proxy in front of a kube-apiserver (envtest's,
// on the root namespace's loopback) that a test can cut and restore, and
// that can answer chosen requests with 429 Too Many Requests the way a
// freshly restarted API server under load does. In-process agents talk to
// the API through it (Config) to live through an outage:
//
//   - Pause closes the listening socket and every open connection, so the
//     agent's watches break and every new connection is refused
//     (ECONNREFUSED), as when the API server process is gone.
//   - Resume listens on the same port again.
//   - Throttle answers matching requests with 429 (with Retry-After), for
//     example the agent's Pod list and watch, so its Pod cache stays behind
//     while its writes and single GETs go through: what a node saw when
//     client-go's reflectors were backing off after an outage.
//
// The gate terminates TLS with a certificate of its own for 127.0.0.1 and
// forwards with the upstream config's credentials, so it can see requests.
// It listens on 127.0.0.1 only and forwards only to the upstream's
// loopback address; nothing leaves the host.
type APIGate struct {
	t     testing.TB
	addr  string // 127.0.0.1:port, kept across Pause/Resume
	certs []tls.Certificate
	ca    []byte // PEM of the gate's certificate
	srv   *http.Server

	mu        sync.Mutex
	l         net.Listener // nil while paused
	conns     map[net.Conn]struct{}
	throttle  func(*http.Request) bool
	throttled int
	closed    bool
}

// NewAPIGate starts a gate in front of the API server of upstream (which
// must be on loopback) and stops it when the test ends.
func NewAPIGate(t testing.TB, upstream *rest.Config) *APIGate {
	t.Helper()
	u, err := url.Parse(upstream.Host)
	if err != nil || u.Host == "" {
		t.Fatalf("api gate: upstream host %q: not a URL (%v)", upstream.Host, err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Fatalf("api gate: upstream %s is not a loopback IP (the root namespace's loopback only)", upstream.Host)
	}
	rt, err := rest.TransportFor(upstream)
	if err != nil {
		t.Fatalf("api gate: upstream transport: %v", err)
	}
	cert, pemCert, err := selfSigned()
	if err != nil {
		t.Fatalf("api gate: certificate: %v", err)
	}
	g := &APIGate{t: t, certs: []tls.Certificate{cert}, ca: pemCert, conns: map[net.Conn]struct{}{}}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = u.Host },
		Transport:     rt,
		FlushInterval: -1, // watches stream event by event
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The agent sees the API server's own way of failing.
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	g.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if g.isThrottled(r) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","details":{"retryAfterSeconds":1},"code":429}`)
				return
			}
			proxy.ServeHTTP(w, r)
		}),
		TLSConfig: &tls.Config{Certificates: g.certs, MinVersion: tls.VersionTLS12},
		ConnState: g.connState,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("api gate: listen: %v", err)
	}
	g.addr = l.Addr().String()
	g.serve(l)
	t.Cleanup(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.Pause()
		_ = g.srv.Close()
	})
	return g
}

// Config returns a client configuration that reaches the API server
// through the gate (the gate adds the upstream's credentials).
func (g *APIGate) Config() *rest.Config {
	return &rest.Config{Host: "https://" + g.addr, TLSClientConfig: rest.TLSClientConfig{CAData: g.ca}}
}

// Host is the gate's URL, as clients of Config name the API server.
func (g *APIGate) Host() string { return "https://" + g.addr }

func (g *APIGate) serve(l net.Listener) {
	g.mu.Lock()
	g.l = l
	g.mu.Unlock()
	go func() {
		// ServeTLS enables HTTP/2, which client-go uses when offered.
		if err := g.srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			g.t.Logf("api gate: serve: %v", err)
		}
	}()
}

func (g *APIGate) connState(c net.Conn, s http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch s {
	case http.StateNew:
		if g.l == nil {
			c.Close() // accepted just before Pause closed the listener
			return
		}
		g.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(g.conns, c)
	}
}

// Pause cuts the API: the listener closes (new connections are refused)
// and every open connection is closed, watches included.
func (g *APIGate) Pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.l != nil {
		g.l.Close()
		g.l = nil
	}
	for c := range g.conns {
		c.Close()
		delete(g.conns, c)
	}
}

// Resume listens on the gate's port again.
func (g *APIGate) Resume() {
	g.t.Helper()
	g.mu.Lock()
	if g.l != nil || g.closed {
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	var l net.Listener
	var err error
	// The port was ours a moment ago; the kernel frees it at once
	// (SO_REUSEADDR), but retry briefly rather than fail on a slow close.
	for start := time.Now(); ; {
		if l, err = net.Listen("tcp", g.addr); err == nil || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		g.t.Fatalf("api gate: listen again on %s: %v", g.addr, err)
	}
	g.serve(l)
}

// Throttle answers requests that match with 429 until it is called with
// nil.
func (g *APIGate) Throttle(match func(*http.Request) bool) {
	g.mu.Lock()
	g.throttle = match
	g.mu.Unlock()
}

// Throttled returns how many requests the gate answered with 429.
func (g *APIGate) Throttled() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.throttled
}

func (g *APIGate) isThrottled(r *http.Request) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.throttle == nil || !g.throttle(r) {
		return false
	}
	g.throttled++
	return true
}

// selfSigned makes a certificate for 127.0.0.1 valid for a day.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "wren-test-api-gate"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
