package main

// Shared by the tests that run the real wren-cni binary: a fake agent
// behind the real pkg/cniserver on a unix socket, and the binary itself.
// Test addresses: pods get 10.244.1.0/26 from pool 10.244.0.0/16.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/proxyarp"
)

// fakeAgent allocates addresses from 10.244.1.0/26 keyed by container ID,
// as the real agent's IPAM does: a repeated ADD returns the address the
// container already has, so the idempotence tests can fail.
type fakeAgent struct {
	mu     sync.Mutex
	limit  int                   // addresses available; 0 means 62
	byID   map[string]netip.Addr // container ID -> address
	next   int                   // host part of the next address
	adds   []cniserver.AddRequest
	dels   []cniserver.DelRequest
	checks []cniserver.CheckRequest
	// failWith, if set, is returned by every call.
	failWith error
	// block, if set, makes every call wait for its context to end.
	block bool
}

var (
	testBlock = netip.MustParsePrefix("10.244.1.0/26")
	testPool  = netip.MustParsePrefix("10.244.0.0/16")
)

// podMAC is the fake's pod MAC for ip: 0a:58 and the address, the scheme
// of the reference plugins.
func podMAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, a[0], a[1], a[2], a[3]}
}

func (f *fakeAgent) wait(ctx context.Context) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.failWith
}

func (f *fakeAgent) Add(ctx context.Context, req cniserver.AddRequest) (cniserver.Result, error) {
	f.mu.Lock()
	f.adds = append(f.adds, req)
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return cniserver.Result{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byID == nil {
		f.byID = map[string]netip.Addr{}
	}
	ip, ok := f.byID[req.ContainerID]
	if !ok {
		limit := f.limit
		if limit == 0 {
			limit = 62
		}
		if len(f.byID) >= limit {
			return cniserver.Result{}, fmt.Errorf("allocate for %s: block %s full: %w", req.Key(), testBlock, ipam.ErrExhausted)
		}
		f.next++
		ip = testBlock.Addr().Next()
		for range f.next - 1 {
			ip = ip.Next()
		}
		f.byID[req.ContainerID] = ip
	}
	return cniserver.Result{
		IP:        netip.PrefixFrom(ip, 32),
		MTU:       1450,
		HostIface: proxyarp.VethName(req.Namespace, req.Name),
		MAC:       podMAC(ip),
		Pool:      testPool,
		Block:     testBlock,
	}, nil
}

func (f *fakeAgent) Del(ctx context.Context, req cniserver.DelRequest) error {
	f.mu.Lock()
	f.dels = append(f.dels, req)
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.byID[req.ContainerID]; !ok {
		return cniserver.Errorf(cniserver.ReasonNotFound, "container %s has no address", req.ContainerID)
	}
	delete(f.byID, req.ContainerID)
	return nil
}

func (f *fakeAgent) Check(ctx context.Context, req cniserver.CheckRequest) error {
	f.mu.Lock()
	f.checks = append(f.checks, req)
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ip, ok := f.byID[req.ContainerID]
	if !ok {
		return cniserver.Errorf(cniserver.ReasonNotFound, "container %s has no address", req.ContainerID)
	}
	if req.IP != netip.PrefixFrom(ip, 32) {
		return cniserver.Errorf(cniserver.ReasonMismatch, "%s: prevResult says %s, the agent allocated %s/32", req.Key(), req.IP, ip)
	}
	return nil
}

// allocated returns the address the fake gave a container.
func (f *fakeAgent) allocated(id string) (netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ip, ok := f.byID[id]
	return ip, ok
}

// shortTempDir returns a fresh directory with a short path (unix socket
// paths are limited to 107 bytes; t.TempDir embeds the test name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wrent-cni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveAgent serves f through the real cniserver on a new socket and
// returns the socket's path.
func serveAgent(t *testing.T, f *fakeAgent) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "wren.sock")
	lis, err := cniserver.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cniserver.Register(srv, f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return path
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// pluginDir builds wren-cni once per test binary and returns the
// directory holding it (the CNI_PATH of the tests).
func pluginDir(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "wrent-cni-bin")
		if buildErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goTool, "build", "-o", filepath.Join(buildDir, "wren-cni"), "github.com/wren-net/wren/cmd/cni").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build wren-cni: %w: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// invocation is one run of the plugin binary.
type invocation struct {
	command     string // CNI_COMMAND
	containerID string
	netns       string
	ifname      string
	args        string // CNI_ARGS
	conf        string // stdin
	noEnv       []string
}

// result is what a run of the plugin produced.
type result struct {
	exit   int
	stdout []byte
	stderr string
}

// cniError decodes the error JSON of a failed run.
func (r result) cniError(t *testing.T) (code uint, msg string) {
	t.Helper()
	var e struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(r.stdout, &e); err != nil {
		t.Fatalf("exit %d, stdout is not CNI error JSON: %v: %s (stderr %s)", r.exit, err, r.stdout, r.stderr)
	}
	return e.Code, e.Msg
}

// run executes wren-cni with inv and a clean environment.
func run(t *testing.T, inv invocation) result {
	t.Helper()
	dir := pluginDir(t)
	env := map[string]string{
		"CNI_COMMAND":     inv.command,
		"CNI_CONTAINERID": inv.containerID,
		"CNI_NETNS":       inv.netns,
		"CNI_IFNAME":      inv.ifname,
		"CNI_ARGS":        inv.args,
		"CNI_PATH":        dir,
		"PATH":            os.Getenv("PATH"),
	}
	for _, k := range inv.noEnv {
		delete(env, k)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "wren-cni"))
	cmd.Env = nil
	for k, v := range env {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stdin = bytes.NewReader([]byte(inv.conf))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.Bytes(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run wren-cni: %v", err)
		}
		r.exit = ee.ExitCode()
	}
	return r
}

// requests returns copies of the requests the fake got so far. Tests read
// them through it, under the lock: the race detector cannot see that the
// plugin process's exit orders the handler's writes before the reads.
func (f *fakeAgent) requests() (adds []cniserver.AddRequest, dels []cniserver.DelRequest, checks []cniserver.CheckRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.adds), slices.Clone(f.dels), slices.Clone(f.checks)
}
