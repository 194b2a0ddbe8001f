//go:build linux

package nstest_test

// APIProxy: an HTTP server on the root namespace's loopback is reachable
// from inside a fresh namespace only through the proxy, both from a Go
// client dialing inside the namespace and from curl run there; after the
// test's cleanup the proxy's port is closed. Everything is loopback.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	nstest "github.com/wren-net/wren/test/netns"
)

func TestAPIProxy(t *testing.T) {
	nstest.RequireRoot(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello %s %s %d", r.Method, r.URL.Path, len(body))
	}))
	defer srv.Close()
	target := srv.Listener.Addr().String()
	ns := nstest.New(t, "proxy")
	hc := ns.HTTPClient(2 * time.Second)

	// Without the proxy the namespace's own loopback has nothing there.
	if resp, err := hc.Get("http://" + target + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s from inside %s answered %s without a proxy; the namespace is not isolated", target, ns.Name, resp.Status)
	}

	var listen string
	t.Run("forward", func(t *testing.T) {
		listen = nstest.APIProxy(t, ns, target)
		resp, err := hc.Post("http://"+listen+"/a", "text/plain", strings.NewReader(strings.Repeat("x", 1<<20)))
		if err != nil {
			t.Fatalf("POST through the proxy from inside %s: %v", ns.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("hello POST /a %d", 1<<20); string(body) != want {
			t.Errorf("through the proxy: %q; want %q", body, want)
		}
		// A process inside the namespace (the agent's case) gets the same.
		out := ns.MustRun(t, "curl", "-sS", "--max-time", "5", "http://"+listen+"/b")
		if out != "hello GET /b 0" {
			t.Errorf("curl through the proxy inside %s: %q", ns.Name, out)
		}
		// Many concurrent connections, as client-go's watches make.
		errc := make(chan error, 20)
		for i := range 20 {
			go func() {
				resp, err := hc.Get(fmt.Sprintf("http://%s/c%d", listen, i))
				if err != nil {
					errc <- err
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if want := fmt.Sprintf("hello GET /c%d 0", i); string(b) != want {
					errc <- fmt.Errorf("got %q; want %q", b, want)
					return
				}
				errc <- nil
			}()
		}
		for range 20 {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
	})

	// The subtest's cleanup closed the proxy.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := ns.DialContext(ctx, "tcp", listen); err == nil {
		c.Close()
		t.Errorf("the proxy at %s inside %s still accepts after its test ended", listen, ns.Name)
	}
}
