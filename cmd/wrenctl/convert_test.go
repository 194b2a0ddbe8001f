package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// testdata of pkg/convert: Calico manifests and their golden output and
// report (API objects only; addresses as documented there).
const convertTestdata = "../../pkg/convert/testdata"

// TestConvertBinary runs the real wrenctl binary, with no agent to talk
// to, on a file, on stdin ("-" and no argument), and on bad input, and
// checks stdout against the golden Wren YAML, stderr against the golden
// report, and the exit status: 0 with findings, 1 when an object is not
// converted or the input is not YAML or missing, 2 for bad usage.
func TestConvertBinary(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "wrenctl")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build wrenctl: %v: %s", err, out)
	}
	run := func(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		// A socket that does not exist: convert must not need the agent.
		cmd := exec.Command(bin, append([]string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "convert"}, args...)...)
		var o, e bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	read := func(t *testing.T, c, f string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(convertTestdata, c, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name, mode string
		code       int
	}{
		{"route-reflectors", "file", 0},
		{"tor-peers", "-", 0},
		{"calicoctl-list", "no argument", 0},
		{"not-converted", "file", 1},
		{"not-converted", "-", 1},
	} {
		t.Run(tc.name+"/"+tc.mode, func(t *testing.T) {
			var stdout, stderr string
			var code int
			switch tc.mode {
			case "file":
				stdout, stderr, code = run(t, nil, filepath.Join(convertTestdata, tc.name, "in.yaml"))
			case "-":
				stdout, stderr, code = run(t, read(t, tc.name, "in.yaml"), "-")
			default:
				stdout, stderr, code = run(t, read(t, tc.name, "in.yaml"))
			}
			if code != tc.code {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if want := string(read(t, tc.name, "out.yaml")); stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
			}
			if want := string(read(t, tc.name, "report.txt")); stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
			}
		})
	}
	t.Run("not YAML", func(t *testing.T) {
		stdout, stderr, code := run(t, []byte("kind: [IPPool\n"))
		if code != 1 || stdout != "" || !strings.Contains(stderr, "wrenctl convert: stdin: ") {
			t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, the parse error", code, stdout, stderr)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, stderr, code := run(t, nil, filepath.Join(t.TempDir(), "nope.yaml"))
		if code != 1 || !strings.Contains(stderr, "nope.yaml") {
			t.Errorf("exit %d, stderr %q; want 1 naming the file", code, stderr)
		}
	})
	t.Run("two files", func(t *testing.T) {
		_, _, code := run(t, nil, "a.yaml", "b.yaml")
		if code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
	})
}
