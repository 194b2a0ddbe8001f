//go:build linux

package nstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wren-net/wren/internal/nsexec"
)

// APIProxy forwards TCP connections made inside ns to 127.0.0.1:<port> to
// target, a host:port on the root namespace's loopback (envtest's
// kube-apiserver, whose host is rest.Config.Host), and returns the
// listening address inside ns. It closes the listener and every forwarded
// connection when the test ends.
//
// It exists for processes that must run inside a node namespace, such as a
// wren-agent whose BGP sockets have to live there: the namespace has its
// own loopback and no link to the root namespace, so without a forwarder
// the API server is unreachable. The listening socket is created on a
// thread that has entered ns (a socket keeps the namespace it was created
// in); the upstream connections are dialed from ordinary goroutines, in the
// root namespace. Both ends are loopback, so nothing leaves the host and
// nothing is routed anywhere.
func APIProxy(t testing.TB, ns *NS, target string) (listen string) {
	t.Helper()
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatalf("api proxy target %q: %v", target, err)
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		t.Fatalf("api proxy target %q: want a loopback IP:port (the root namespace's loopback only)", target)
	}
	var l net.Listener
	if err := nsexec.Do(ns.Handle, func() error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("api proxy: listen in %s: %v", ns.Name, err)
	}
	p := &proxy{target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve(l)
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		p.closed = true
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return l.Addr().String()
}

// proxy is one APIProxy's state: the connections it holds open, closed
// all at once when the test ends.
type proxy struct {
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (p *proxy) serve(l net.Listener) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed at cleanup
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// track registers c for closing at cleanup; false once cleanup has begun.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) forward(down net.Conn) {
	defer p.wg.Done()
	defer p.untrack(down)
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.Dial("tcp", p.target)
	if err != nil {
		return // the client sees its connection close
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the end of stream on, as TCP would end to end.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, down)
	go pipe(down, up)
	<-done
	<-done
}

// DialContext dials addr from inside the namespace: the socket is created
// on a thread that has entered it, so the connection uses the namespace's
// interfaces, loopback and routes.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := nsexec.Do(n.Handle, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in %s: %w", n.Name, err)
	}
	return c, nil
}

// HTTPClient returns an HTTP client whose connections are made inside the
// namespace (to reach a server listening on the namespace's loopback, such
// as an agent's /readyz). It keeps no idle connections.
func (n *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}
