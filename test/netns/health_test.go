//go:build linux

package nstest_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	nstest "github.com/wren-net/wren/test/netns"
)

// readyz is one GET of the agent's /readyz: status code and body.
func (p *agentProc) readyz() (int, string, error) {
	resp, err := p.ns.HTTPClient(time.Second).Get("http://" + p.health + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(body)), nil
}

// TestReadyzWaitsForPeers: a restarted agent whose mesh peer is down is
// not ready in its first 30 s, and its /readyz names the peer; it becomes
// ready when the peer's agent comes back and the session is up.
func TestReadyzWaitsForPeers(t *testing.T) {
	ac, procs := binaryCluster(t, 2, "10.244.0.0/16", nil, nil)
	p1, p2 := procs["node-1"], procs["node-2"]
	peer := ac.nodes[1].ip.Addr().String()
	p2.kill9()
	p1.kill9()
	p1.start()
	start := time.Now()
	nstest.Poll(t, 20*time.Second, "node-1 /readyz 503 naming node-2 as not up", func() error {
		code, body, err := p1.readyz()
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "not yet: "+peer) {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		t.Logf("node-1 /readyz %d: %s", code, body)
		return nil
	})
	if time.Since(start) > 25*time.Second {
		t.Skipf("node-1 took %s to answer: too slow to check the 30 s start-up window", time.Since(start))
	}
	p2.start()
	took := p1.waitReady(20 * time.Second)
	t.Logf("node-1 ready %s after node-2's agent started (%s after its own start)", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if got := time.Since(start); got > 30*time.Second {
		t.Errorf("node-1 became ready %s after start: by the 30 s rule, not because its peer came up", got)
	}
}
