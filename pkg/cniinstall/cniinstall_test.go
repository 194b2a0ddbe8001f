package cniinstall

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fixture is an image side (the files to install) and an empty host side.
type fixture struct {
	cfg  Config
	host string
	logs *bytes.Buffer
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	img, host := t.TempDir(), t.TempDir()
	files := map[string]string{
		"wren-cni":           "\x7fELF plugin v1",
		"10-wren.conflist":   `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"wren-cni"}]}`,
		"iproute2/wren.conf": "87 wren\n",
	}
	for name, content := range files {
		p := filepath.Join(img, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &bytes.Buffer{}
	return fixture{
		cfg: Config{
			CNIBinary:   filepath.Join(img, "wren-cni"),
			Conflist:    filepath.Join(img, "10-wren.conflist"),
			RTProtos:    filepath.Join(img, "iproute2/wren.conf"),
			BinDir:      filepath.Join(host, "opt/cni/bin"),
			ConfDir:     filepath.Join(host, "etc/cni/net.d"),
			RTProtosDir: filepath.Join(host, "etc/iproute2/rt_protos.d"),
			Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		},
		host: host,
		logs: logs,
	}
}

// state renders every file under the host side as "path mode content".
func (f fixture) state(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(f.host, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.host, p)
		out = append(out, rel+" "+st.Mode().Perm().String()+" "+string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestInstallFreshNode(t *testing.T) {
	f := newFixture(t)
	r, err := Install(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`etc/cni/net.d/10-wren.conflist -rw-r--r-- {"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"wren-cni"}]}`,
		"etc/iproute2/rt_protos.d/wren.conf -rw-r--r-- 87 wren\n",
		"opt/cni/bin/wren-cni -rwxr-xr-x \x7fELF plugin v1",
	}
	if d := cmp.Diff(want, f.state(t)); d != "" {
		t.Errorf("host after install (-want +got):\n%s", d)
	}
	// The plugin lands before the configuration that names it.
	wantWritten := []string{
		filepath.Join(f.cfg.BinDir, "wren-cni"),
		filepath.Join(f.cfg.RTProtosDir, "wren.conf"),
		filepath.Join(f.cfg.ConfDir, "10-wren.conflist"),
	}
	if d := cmp.Diff(wantWritten, r.Written); d != "" || len(r.Unchanged) != 0 {
		t.Errorf("written (-want +got):\n%s\nunchanged: %v", d, r.Unchanged)
	}
}

func TestInstallTwiceChangesNothing(t *testing.T) {
	f := newFixture(t)
	if _, err := Install(f.cfg); err != nil {
		t.Fatal(err)
	}
	// Age the installed files so a rewrite would show in the mtime.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	var paths []string
	for _, p := range []string{filepath.Join(f.cfg.BinDir, "wren-cni"), filepath.Join(f.cfg.ConfDir, "10-wren.conflist"), filepath.Join(f.cfg.RTProtosDir, "wren.conf")} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	before := f.state(t)
	r, err := Install(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Written) != 0 || len(r.Unchanged) != 3 {
		t.Errorf("second install: written %v, unchanged %v; want nothing written, 3 unchanged", r.Written, r.Unchanged)
	}
	if d := cmp.Diff(before, f.state(t)); d != "" {
		t.Errorf("second install changed the host (-before +after):\n%s", d)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !st.ModTime().Equal(old) {
			t.Errorf("%s rewritten: mtime %v, want %v", p, st.ModTime(), old)
		}
	}
	// No temporary files left behind.
	for _, s := range f.state(t) {
		if strings.Contains(s, ".tmp-") {
			t.Errorf("leftover temporary file: %s", s)
		}
	}
}

func TestInstallRepairsChangedFiles(t *testing.T) {
	f := newFixture(t)
	if _, err := Install(f.cfg); err != nil {
		t.Fatal(err)
	}
	want := f.state(t)
	// An old plugin version, and a conflist made non-readable to others.
	if err := os.WriteFile(filepath.Join(f.cfg.BinDir, "wren-cni"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(f.cfg.ConfDir, "10-wren.conflist"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Install(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Written) != 2 || len(r.Unchanged) != 1 {
		t.Errorf("written %v, unchanged %v; want the binary and the conflist rewritten", r.Written, r.Unchanged)
	}
	if d := cmp.Diff(want, f.state(t)); d != "" {
		t.Errorf("host after repair (-want +got):\n%s", d)
	}
}

func TestInstallWarnsAboutEarlierConfigs(t *testing.T) {
	f := newFixture(t)
	if err := os.MkdirAll(f.cfg.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"05-calico.conflist", "99-loopback.conf", "README"} {
		if err := os.WriteFile(filepath.Join(f.cfg.ConfDir, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Install(f.cfg); err != nil {
		t.Fatal(err)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "files=05-calico.conflist ") {
		t.Errorf("no warning naming 05-calico.conflist:\n%s", logs)
	}
	if strings.Contains(logs, "99-loopback") || strings.Contains(logs, "README") {
		t.Errorf("warned about files that do not shadow Wren's:\n%s", logs)
	}
	// Other configurations are left alone.
	if _, err := os.Stat(filepath.Join(f.cfg.ConfDir, "05-calico.conflist")); err != nil {
		t.Errorf("05-calico.conflist: %v", err)
	}
}

func TestInstallMissingSource(t *testing.T) {
	f := newFixture(t)
	f.cfg.CNIBinary = filepath.Join(t.TempDir(), "absent")
	_, err := Install(f.cfg)
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("err = %v, want one naming the missing binary", err)
	}
	// Nothing half-installed: without the plugin, no configuration.
	if _, err := os.Stat(filepath.Join(f.cfg.ConfDir, "10-wren.conflist")); !os.IsNotExist(err) {
		t.Errorf("conflist installed without the plugin (stat: %v)", err)
	}
}

func TestValidate(t *testing.T) {
	c := Config{CNIBinary: "wren-cni", BinDir: "/b", ConfDir: "/c", Conflist: "/x"}
	c.Defaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `"wren-cni"`) {
		t.Errorf("relative binary path: err = %v", err)
	}
}
