package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as pause (see TestMain).
const helperEnv = "WREN_PAUSE_HELPER"

// TestMain runs pause itself when started by a test: it subscribes to the
// signals first, then starts a child that exits at once and prints the
// child's pid, so the test knows the handlers are in place and which
// zombie to watch.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "" {
		os.Exit(m.Run())
	}
	sigs := notify()
	child := exec.Command("/bin/true")
	if err := child.Start(); err != nil {
		os.Exit(3)
	}
	fmt.Println(child.Process.Pid)
	os.Exit(wait(sigs))
}

// children lists the pids of p's children, zombies included (a zombie is
// a child until it is reaped), from every thread's children file.
func children(t *testing.T, pid int) []string {
	t.Helper()
	files, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	if err != nil || len(files) == 0 {
		t.Skipf("kernel lacks /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): %v", err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("read %s: %v", f, err)
		}
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

func TestReapsAndExitsZero(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatalf("pipe: %v", err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatalf("start pause: %v", err)
			}
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("read child pid: %v", err)
			}
			child := strings.TrimSpace(line)

			// The child exits at once and stays in pause's children list
			// as a zombie until pause collects it.
			deadline := time.Now().Add(20 * time.Second)
			for slices.Contains(children(t, cmd.Process.Pid), child) {
				if time.Now().After(deadline) {
					t.Fatalf("child %s of pause never reaped", child)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatalf("signal pause: %v", err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("pause after %s: %v (want exit status 0)", sig, err)
			}
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("pause exit code after %s = %d, want 0", sig, code)
			}
		})
	}
}
