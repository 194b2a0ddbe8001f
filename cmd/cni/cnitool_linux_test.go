package main

// cnitool (github.com/containernetworking/cni/cnitool, the reference
// runtime side of libcni) drives wren-cni through a conflist, exactly as
// a container runtime would, against the fake agent.
//
// It needs root: cnitool takes a network namespace path, made here with
// "ip netns add wrent-<random>-cni" (never linked to anything, deleted at
// the end). Test addresses: pods get 10.244.1.0/26, inside the fake only.
//
// cnitool caches each ADD result under /var/lib/cni/results (libcni's
// default, not configurable in cnitool); the network is named wrent-<hex>
// so the cache files are recognisably ours, and they are removed at the
// end whatever happens.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/cniserver"
	nstest "github.com/wren-net/wren/test/netns"
)

// cnitoolInstall is how CI installs cnitool.
const cnitoolInstall = "go install github.com/containernetworking/cni/cnitool@v1.2.3"

// findCnitool returns the cnitool binary from PATH or GOBIN/GOPATH/bin.
// Missing, the test skips outside CI and fails in CI (CI=true), where it
// must run.
func findCnitool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("cnitool"); err == nil {
		return p
	}
	var dirs []string
	for _, v := range []string{"GOBIN", "GOPATH"} {
		if out, err := exec.Command("go", "env", v).Output(); err == nil {
			if d := strings.TrimSpace(string(out)); d != "" {
				if v == "GOPATH" {
					d = filepath.Join(filepath.SplitList(d)[0], "bin")
				}
				dirs = append(dirs, d)
			}
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "cnitool")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	msg := fmt.Sprintf("cnitool not found in PATH or %v; install it with: %s", dirs, cnitoolInstall)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func TestCnitool(t *testing.T) {
	cnitool := findCnitool(t)
	ns := nstest.New(t, "cni") // skips without root
	netnsPath := filepath.Join("/run/netns", ns.Name)

	f := &fakeAgent{}
	sock := serveAgent(t, f)
	bin := pluginDir(t)

	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	netName := nstest.Prefix + hex.EncodeToString(b[:])
	confDir := t.TempDir()
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [{"type": "wren-cni", "agent_socket": %q, "timeout": "10s"}]
}`, netName, sock)
	if err := os.WriteFile(filepath.Join(confDir, "10-wren.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}

	cnitoolRun := func(cmd string) (string, error) {
		c := exec.Command(cnitool, cmd, netName, netnsPath)
		c.Env = append(os.Environ(),
			"NETCONFPATH="+confDir,
			"CNI_PATH="+bin,
			"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnitool-pod",
			"CNI_IFNAME=eth0",
		)
		out, err := c.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("cnitool %s %s %s: %w: %s", cmd, netName, netnsPath, err, out)
		}
		return string(out), nil
	}
	// Directories of the cache that this test makes are removed again
	// (os.Remove only removes them if empty).
	var made []string
	for _, d := range []string{"/var/lib/cni", "/var/lib/cni/results"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			made = append([]string{d}, made...)
		}
	}
	t.Cleanup(func() {
		cnitoolRun("del") // idempotent; removes the cached result
		leftovers, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", netName+"-*"))
		for _, p := range leftovers {
			os.Remove(p)
		}
		for _, d := range made {
			os.Remove(d)
		}
	})

	out, err := cnitoolRun("add")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("cnitool add output is not a result: %v: %s", err, out)
	}
	adds, _, _ := f.requests()
	if len(adds) != 1 {
		t.Fatalf("the agent got %d ADDs, want 1", len(adds))
	}
	id := adds[0].ContainerID
	ip, ok := f.allocated(id)
	if !ok {
		t.Fatalf("the agent allocated nothing for %s", id)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address != ip.String()+"/32" || res.IPs[0].Gateway != "169.254.1.1" {
		t.Errorf("cnitool printed ips %+v; want [%s/32 via 169.254.1.1]", res.IPs, ip)
	}
	if res.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q, want 1.0.0", res.CNIVersion)
	}
	wantPod := cniserver.Pod{
		ContainerID: id, NetNS: netnsPath, IfName: "eth0",
		Namespace: "default", Name: "cnitool-pod", CNIVersion: "1.0.0",
	}
	if diff := cmp.Diff(wantPod, adds[0].Pod); diff != "" {
		t.Errorf("ADD request from cnitool (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(id, "cnitool-") {
		t.Errorf("container ID %q is not cnitool's", id)
	}

	// CHECK: libcni passes the cached ADD result as prevResult.
	if _, err := cnitoolRun("check"); err != nil {
		t.Fatal(err)
	}
	if _, _, checks := f.requests(); len(checks) != 1 || checks[0].IP.String() != ip.String()+"/32" {
		t.Errorf("agent CHECKs %+v; want one for %s/32", checks, ip)
	}

	// DEL twice: both succeed, the address is released.
	for i := range 2 {
		if _, err := cnitoolRun("del"); err != nil {
			t.Fatalf("del #%d: %v", i+1, err)
		}
	}
	if _, ok := f.allocated(id); ok {
		t.Error("the address is still allocated after cnitool del")
	}
	if _, dels, _ := f.requests(); len(dels) != 2 {
		t.Errorf("the agent got %d DELs, want 2", len(dels))
	}
}
