//go:build linux

package bench

// BIRD 1.6, the daemon Calico runs, as a receiver of the BGP route feed,
// configured as calico-node configures it (confd's bird.cfg template of
// Calico v3.x): a kernel protocol that learns foreign kernel routes,
// persists its own across restarts, rescans the kernel table every 2 s and
// exports everything, with graceful restart; and a directly connected
// eBGP session to the feeder (no multihop), with Calico's BGP timers and
// graceful restart. Deliberate differences: "export all" instead of
// Calico's calico_kernel_programming filter (which sets krt_tunnel for
// IPIP pools and accepts everything else; the feed has no IPIP), no
// "merge paths on" (ECMP; one peer here), and no "protocol direct"
// (Calico imports interface routes with it and filters them out of the
// kernel export; with "export all" they would be written back).
//
// Debian's "bird" (1.6) conflicts with "bird2", which the other tests
// need, so it is not installed: hack/bench/bird16.sh unpacks the package
// into ${WREN_CACHE:-/var/cache/wren}/bird-1.6. BIRD runs in the
// foreground ("bird -f") as a child of the test, held by PID, with its
// config, control socket, PID file and log in a private directory.

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	nstest "github.com/wren-net/wren/test/netns"
)

const bird16Script = "hack/bench/bird16.sh"

func bird16Path() string {
	cache := os.Getenv("WREN_CACHE")
	if cache == "" {
		cache = "/var/cache/wren"
	}
	return filepath.Join(cache, "bird-1.6", "usr", "sbin", "bird")
}

// requireBird16 returns the BIRD 1.6 binary and its version, or skips
// naming the script that provides it (fails instead when CI is set).
func requireBird16(tb testing.TB) (bin, version string) {
	tb.Helper()
	bin = bird16Path()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	v := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "BIRD version "))
	if err != nil || !strings.HasPrefix(v, "1.6.") {
		msg := fmt.Sprintf("BIRD 1.6 is missing (%s --version: %q, %v): run %s as root, which unpacks Debian's bird 1.6 there beside bird2",
			bin, strings.TrimSpace(string(out)), err, bird16Script)
		if ci := os.Getenv("CI"); ci != "" {
			tb.Fatalf("%s (CI=%s: not skipping)", msg, ci)
		}
		tb.Skip(msg)
	}
	return bin, v
}

// bird16Conf is Calico's configuration (see the file comment) for a node
// with address self in AS as, peering with the feeder.
func bird16Conf(self netip.Addr, as uint32, feeder netip.Addr, feederAS uint32, logPath string) string {
	return fmt.Sprintf(`router id %[1]s;
log "%[5]s" all;

protocol device {
  debug { states };
  scan time 2;
}

protocol kernel {
  learn;             # learn all alien routes from the kernel
  persist;           # don't remove routes on bird shutdown
  scan time 2;       # scan the kernel routing table every 2 seconds
  import all;
  export all;
  graceful restart;
}

protocol bgp feeder {
  debug { states };
  description "the benchmark's feeder";
  local as %[2]d;
  neighbor %[3]s as %[4]d;
  source address %[1]s;
  import all;
  export none;
  graceful restart;
  connect delay time 2;
  connect retry time 5;
  error wait time 5,30;
}
`, self, as, feeder, feederAS, logPath)
}

// bird16 is one running BIRD 1.6.
type bird16 struct {
	pid  int
	dir  string
	log  string
	out  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startBird16 runs bin with conf (from bird16Conf, whose log path must be
// filepath.Join(dir, "bird.log") of the returned value: pass it through
// the conf function) inside ns and returns once its control socket exists.
func startBird16(tb testing.TB, ns *nstest.NS, bin string, conf func(logPath string) string) *bird16 {
	tb.Helper()
	// Not t.TempDir: a Unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "wrenbird16-")
	if err != nil {
		tb.Fatal(err)
	}
	b := &bird16{dir: dir, log: filepath.Join(dir, "bird.log"), out: filepath.Join(dir, "bird.out"), done: make(chan struct{})}
	confPath, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	if err := os.WriteFile(confPath, []byte(conf(b.log)), 0o644); err != nil {
		os.RemoveAll(dir)
		tb.Fatal(err)
	}
	out, err := os.Create(b.out)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	b.cmd = exec.Command("ip", "netns", "exec", ns.Name, bin, "-f", "-c", confPath, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = out, out
	// Pdeathsig fires when the thread that forked the child exits: start
	// and wait on one locked thread.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := b.cmd.Start(); err != nil {
			started <- err
			close(b.done)
			return
		}
		started <- nil
		_ = b.cmd.Wait()
		close(b.done)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("start BIRD 1.6 in %s: %v", ns.Name, err)
	}
	b.pid = b.cmd.Process.Pid // "ip netns exec" execs bird
	tb.Cleanup(func() { b.stop(tb) })
	nstest.Poll(tb, 10*time.Second, "BIRD 1.6 in "+ns.Name+" opened "+sock, func() error {
		select {
		case <-b.done:
			tb.Fatalf("BIRD 1.6 in %s exited during startup: %s\n%s", ns.Name, b.cmd.ProcessState, b.dump())
		default:
		}
		_, err := os.Stat(sock)
		return err
	})
	return b
}

func (b *bird16) dump() string {
	var s strings.Builder
	for _, p := range []string{filepath.Join(b.dir, "bird.conf"), b.out, b.log} {
		data, err := os.ReadFile(p)
		fmt.Fprintf(&s, "--- %s (%v):\n%s\n", p, err, data)
	}
	return s.String()
}

func (b *bird16) stop(tb testing.TB) {
	if tb.Failed() {
		tb.Logf("BIRD 1.6 (pid %d):\n%s", b.pid, b.dump())
	}
	select {
	case <-b.done:
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	}
	os.RemoveAll(b.dir)
}
