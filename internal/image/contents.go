package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths inside the wren image. The agent's init step copies the two config
// files onto the host (/etc/cni/net.d, /etc/iproute2/rt_protos.d).
const (
	binDir        = "/usr/local/bin"
	cniConfPath   = "/usr/share/wren/cni/10-wren.conflist"
	rtProtosPath  = "/usr/share/wren/iproute2/wren.conf"
	imagePATH     = "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	busyboxPath   = "/bin/busybox"
	pausePath     = "/pause"
	installHint   = "apt-get install busybox-static"
	labelTitle    = "org.opencontainers.image.title"
	labelVersion  = "org.opencontainers.image.version"
	labelSource   = "org.opencontainers.image.source"
	createdByNote = "wren hack/image"
)

// wrenBinaries maps each command package (relative to the repository) to
// its name in the image. A missing optional package is left out.
var wrenBinaries = []struct {
	pkg, name string
	optional  bool
}{
	{"cmd/agent", "wren-agent", false},
	{"cmd/cni", "wren-cni", false},
	{"cmd/wrenctl", "wrenctl", true},
}

// builder holds what every image needs: the options and a scratch dir.
type builder struct {
	o    Options
	work string
	log  *slog.Logger
}

func (b builder) image(ctx context.Context, n string) (v1.Image, error) {
	switch n {
	case NameWren:
		return b.wren(ctx)
	case NamePause:
		return b.pause(ctx)
	case NameBusybox:
		return b.busybox(ctx)
	}
	return nil, fmt.Errorf("unknown image %q", n)
}

// wren is the agent image on an empty base: static binaries, the two
// files the init step installs on the host, and a /tmp. No shell, no libc.
func (b builder) wren(ctx context.Context) (v1.Image, error) {
	var pkgs []string
	var names = map[string]string{} // go build output name -> image name
	for _, w := range wrenBinaries {
		if _, err := os.Stat(filepath.Join(b.o.Repo, w.pkg)); err != nil {
			if w.optional && os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("find %s: %w", w.pkg, err)
		}
		pkgs = append(pkgs, "./"+w.pkg)
		names[filepath.Base(w.pkg)] = w.name
	}
	out := filepath.Join(b.work, "wren-bin")
	ldflags := "-s -w -X main.version=" + b.o.Version
	if err := b.goBuild(ctx, out, ldflags, pkgs...); err != nil {
		return nil, err
	}
	s := newFileSet()
	for built, inImage := range names {
		data, err := os.ReadFile(filepath.Join(out, built))
		if err != nil {
			return nil, fmt.Errorf("read built %s: %w", built, err)
		}
		s.file(binDir+"/"+inImage, 0o755, data)
	}
	for dst, src := range map[string]string{
		cniConfPath:  "deploy/cni/10-wren.conflist",
		rtProtosPath: "deploy/iproute2/wren.conf",
	} {
		data, err := os.ReadFile(filepath.Join(b.o.Repo, src))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", src, err)
		}
		s.file(dst, 0o644, data)
	}
	s.dir("/tmp", 0o1777)
	return assemble(s, "wren binaries and host config files", v1.Config{
		Entrypoint: []string{binDir + "/wren-agent"},
		Env:        []string{imagePATH},
		Labels: map[string]string{
			labelTitle:   NameWren,
			labelVersion: b.o.Version,
			labelSource:  sourceURL,
		},
	})
}

// pause is the pod sandbox: one static binary that holds the pod's
// namespaces open, reaps zombies and exits on SIGTERM. It is built without
// the version stamp so its digest changes only with its source or the Go
// toolchain, not with every Wren commit.
func (b builder) pause(ctx context.Context) (v1.Image, error) {
	out := filepath.Join(b.work, "pause-bin")
	if err := b.goBuild(ctx, out, "-s -w", "./hack/image/pause"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(out, "pause"))
	if err != nil {
		return nil, fmt.Errorf("read built pause: %w", err)
	}
	s := newFileSet()
	s.file(pausePath, 0o755, data)
	return assemble(s, "pause", v1.Config{
		Entrypoint: []string{pausePath},
		Labels: map[string]string{
			labelTitle:  NamePause,
			labelSource: sourceURL,
		},
	})
}

// busybox is the workload image: Debian's static busybox, one symlink per
// applet at the path busybox itself reports, and the two files `id` and
// `ls -l` read for names.
func (b builder) busybox(ctx context.Context) (v1.Image, error) {
	data, err := os.ReadFile(b.o.Busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox (%s): %w", installHint, err)
	}
	list, err := exec.CommandContext(ctx, b.o.Busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	s := newFileSet()
	s.file(busyboxPath, 0o755, data)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		p := clean(strings.TrimSpace(sc.Text()))
		if p == "" || p == clean(busyboxPath) {
			continue
		}
		s.symlink(p, busyboxPath)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("list busybox applets: %s --list-full printed none", b.o.Busybox)
	}
	s.dir("/tmp", 0o1777)
	s.dir("/root", 0o700)
	s.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	s.file("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	labels := map[string]string{labelTitle: NameBusybox, labelSource: sourceURL}
	if v := busyboxVersion(ctx, b.o.Busybox); v != "" {
		labels[labelVersion] = v
	}
	b.log.Debug("busybox applets", "count", n, "version", labels[labelVersion])
	return assemble(s, fmt.Sprintf("busybox and %d applet links", n), v1.Config{
		Entrypoint: []string{"/bin/sh"},
		Env:        []string{imagePATH},
		Labels:     labels,
	})
}

// checkBusybox makes sure path is a statically linked ELF: Debian's plain
// "busybox" package is dynamic and would not run in an image without libc.
func checkBusybox(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox-static not installed (%s): %w", installHint, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is dynamically linked (%s)", path, installHint)
		}
	}
	return nil
}

// busyboxBanner matches "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)".
var busyboxBanner = regexp.MustCompile(`^BusyBox v(\S+)(?: \(Debian ([^)\s]+)\))?`)

// busyboxVersion is the Debian package version busybox reports about
// itself, else its upstream version, else "".
func busyboxVersion(ctx context.Context, path string) string {
	out, _ := exec.CommandContext(ctx, path, "--help").CombinedOutput()
	m := busyboxBanner.FindSubmatch(out)
	switch {
	case m == nil:
		return ""
	case len(m[2]) > 0:
		return string(m[2])
	}
	return string(m[1])
}

// assemble makes a single-layer linux/GOARCH image with OCI media types
// and epoch timestamps from s and the runtime config cfg.
func assemble(s *fileSet, layerNote string, cfg v1.Config) (v1.Image, error) {
	l, err := s.layer()
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     l,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: createdByNote,
			Comment:   layerNote,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// goBuild builds static binaries of pkgs (relative to the repository) into
// dir, each named after the last element of its package path. -trimpath
// and -buildvcs=false keep the build directory and git state out of the
// binary, so the same tree and toolchain give the same bytes.
func (b builder) goBuild(ctx context.Context, dir, ldflags string, pkgs ...string) error {
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.o.Repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	b.log.Debug("go build", "args", args)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// describe is `git describe --always --dirty` of repo, or "dev".
func describe(ctx context.Context, repo string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "describe", "--always", "--dirty").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}
