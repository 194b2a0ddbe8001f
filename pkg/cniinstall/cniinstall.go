// Package cniinstall puts what the node's container runtime and iproute2
// need from Wren onto the host: the wren-cni binary, its CNI network
// configuration and the "wren" routing-protocol name. The DaemonSet's init
// container runs it (wren-agent install-cni) with the host directories
// mounted under /host.
//
// Every file is compared with what is there first and written only when
// it differs, to a temporary name in the same directory and renamed into
// place, so a runtime scanning /etc/cni/net.d never reads half a file and
// a second run on the same node changes nothing (not even a timestamp).
// The binary goes in before the configuration that names it: a runtime
// never sees a configuration whose plugin is missing.
package cniinstall

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wren-net/wren/internal/atomicfile"
)

// Config says where the files come from and where they go.
type Config struct {
	// CNIBinary is the wren-cni binary to install (in the image:
	// /usr/local/bin/wren-cni).
	CNIBinary string
	// Conflist is the CNI network configuration to install (in the image:
	// /usr/share/wren/cni/10-wren.conflist).
	Conflist string
	// RTProtos is the iproute2 protocol-name file (in the image:
	// /usr/share/wren/iproute2/wren.conf).
	RTProtos string
	// BinDir is the host's CNI plugin directory (/opt/cni/bin on the host).
	BinDir string
	// ConfDir is the host's CNI configuration directory (/etc/cni/net.d).
	ConfDir string
	// RTProtosDir is the host's /etc/iproute2/rt_protos.d; "" skips it.
	RTProtosDir string
	Logger      *slog.Logger
}

// Image paths of the files the Wren image carries (internal/image).
const (
	ImageCNIBinary = "/usr/local/bin/wren-cni"
	ImageConflist  = "/usr/share/wren/cni/10-wren.conflist"
	ImageRTProtos  = "/usr/share/wren/iproute2/wren.conf"
)

// Defaults fills unset fields with the DaemonSet's paths (host
// directories mounted under /host).
func (c *Config) Defaults() {
	if c.CNIBinary == "" {
		c.CNIBinary = ImageCNIBinary
	}
	if c.Conflist == "" {
		c.Conflist = ImageConflist
	}
	if c.RTProtos == "" {
		c.RTProtos = ImageRTProtos
	}
	if c.BinDir == "" {
		c.BinDir = "/host/opt/cni/bin"
	}
	if c.ConfDir == "" {
		c.ConfDir = "/host/etc/cni/net.d"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports paths that are not absolute.
func (c Config) Validate() error {
	var errs []error
	for _, p := range []struct{ name, path string }{
		{"CNI binary", c.CNIBinary}, {"conflist", c.Conflist}, {"CNI bin dir", c.BinDir}, {"CNI conf dir", c.ConfDir},
	} {
		if !filepath.IsAbs(p.path) {
			errs = append(errs, fmt.Errorf("cniinstall: %s %q is not an absolute path", p.name, p.path))
		}
	}
	if c.RTProtosDir != "" && (!filepath.IsAbs(c.RTProtosDir) || !filepath.IsAbs(c.RTProtos)) {
		errs = append(errs, fmt.Errorf("cniinstall: rt_protos paths %q, %q must be absolute", c.RTProtos, c.RTProtosDir))
	}
	return errors.Join(errs...)
}

// Result lists the installed paths by what happened to them.
type Result struct {
	Written   []string // created or replaced
	Unchanged []string // already held the same content and mode
}

// Install copies the files onto the host. It is idempotent: a second run
// reports every file Unchanged and writes nothing.
func Install(c Config) (Result, error) {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	var r Result
	// Order matters: the plugin before the configuration naming it.
	steps := []struct {
		src, dir string
		mode     fs.FileMode
	}{
		{c.CNIBinary, c.BinDir, 0o755},
		{c.RTProtos, c.RTProtosDir, 0o644},
		{c.Conflist, c.ConfDir, 0o644},
	}
	for _, s := range steps {
		if s.dir == "" {
			continue
		}
		dst := filepath.Join(s.dir, filepath.Base(s.src))
		wrote, err := installFile(s.src, dst, s.mode)
		if err != nil {
			return r, err
		}
		if wrote {
			r.Written = append(r.Written, dst)
			c.Logger.Info("installed", "path", dst)
		} else {
			r.Unchanged = append(r.Unchanged, dst)
			c.Logger.Info("unchanged", "path", dst)
		}
	}
	if earlier := shadowingConfigs(c.ConfDir, filepath.Base(c.Conflist)); len(earlier) > 0 {
		c.Logger.Warn("the container runtime uses the lexically first CNI configuration, and these come before Wren's; remove them (for example an old 10-calico.conflist) or Wren's pods get another network",
			"dir", c.ConfDir, "files", strings.Join(earlier, ","), "wren", filepath.Base(c.Conflist))
	}
	return r, nil
}

// installFile writes src's content to dst with mode unless dst already
// has both. It reports whether it wrote.
func installFile(src, dst string, mode fs.FileMode) (bool, error) {
	want, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", src, err)
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm() == mode {
			return false, nil
		}
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := atomicfile.Write(dst, mode, func(w io.Writer) error { _, err := w.Write(want); return err }); err != nil {
		return false, err
	}
	return true, nil
}

// shadowingConfigs lists the CNI configurations in dir that sort before
// ours: the runtime would use the first of them instead.
func shadowingConfigs(dir, ours string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || n >= ours {
			continue
		}
		if slices.Contains([]string{".conf", ".conflist", ".json"}, filepath.Ext(n)) {
			out = append(out, n)
		}
	}
	return out
}
