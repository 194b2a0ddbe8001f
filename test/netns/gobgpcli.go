package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireGoBGPCLI returns the path of the stock gobgp CLI of the GoBGP
// release this module embeds (hack/deps.sh installs it into GOPATH/bin).
// Without it, or with another release, it skips the test with the command
// that fixes it, or fails the test when the CI variable is set.
func RequireGoBGPCLI(t testing.TB) string {
	t.Helper()
	p, err := findGoBGPCLI()
	if err != nil {
		if ci := os.Getenv("CI"); ci != "" {
			t.Fatalf("%v (CI=%s: not skipping)", err, ci)
		}
		t.Skip(err)
	}
	return p
}

func findGoBGPCLI() (string, error) {
	// The release go.mod pins (a test runs inside the module).
	v, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/osrg/gobgp/v4").Output()
	want := strings.TrimPrefix(strings.TrimSpace(string(v)), "v")
	if err != nil || want == "" {
		return "", fmt.Errorf("go list -m github.com/osrg/gobgp/v4: %q, %v", v, err)
	}
	fix := fmt.Sprintf("install it with hack/deps.sh (go install github.com/osrg/gobgp/v4/cmd/gobgp@v%s)", want)
	p, err := exec.LookPath("gobgp")
	if err != nil {
		gp, _ := exec.Command("go", "env", "GOPATH").Output()
		p = filepath.Join(strings.TrimSpace(string(gp)), "bin", "gobgp")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("the gobgp CLI is not in PATH or GOPATH/bin: %s", fix)
		}
	}
	out, err := exec.Command(p, "--version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "gobgp version "+want {
		return "", fmt.Errorf("%s --version: %q (%v); want GoBGP %s, the embedded release: %s", p, got, err, want, fix)
	}
	return p, nil
}
