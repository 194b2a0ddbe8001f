// Package image builds Wren's container images — the agent, a pod sandbox
// ("pause") and a busybox workload — as OCI image layout archives, with no
// container engine. go-containerregistry assembles the manifests, configs
// and layers; this package only decides what goes in each layer.
//
// The archives are reproducible: two builds of the same tree with the same
// Go toolchain give the same bytes, so the same manifest digests. Every
// image is tagged by its own content ("sha-" + 12 hex digits of the
// manifest digest; the manifest does not contain the tag), and the archive's
// index.json names it with org.opencontainers.image.ref.name, which
// containerd's "ctr images import" uses as the image name while keeping the
// digest (a docker-save tarball would be re-digested on import).
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/wren-net/wren/internal/atomicfile"
)

// Names of the images Build can make, in the order it makes them.
const (
	// NameWren is the agent image: wren-agent, wren-cni (and wrenctl).
	NameWren = "wren"
	// NamePause is the pod sandbox image containerd runs for every pod.
	NamePause = "pause"
	// NameBusybox is the lab's workload image (Debian's busybox-static).
	NameBusybox = "busybox"
)

// Names lists every image Build makes by default, in build order.
var Names = []string{NameWren, NamePause, NameBusybox}

// DefaultRegistry is the name prefix of the refs when Options.Registry is
// empty. It is not a registry anyone serves: the images reach nodes by
// import, and a ".local" name can never be pulled by accident.
const DefaultRegistry = "wren.local"

// DefaultBusybox is where Debian's busybox-static installs its binary.
const DefaultBusybox = "/bin/busybox"

// ListFile is the name of the file in OutDir listing the built images, one
// "<name> <ref> <digest> <path>" line each.
const ListFile = "images.txt"

// refNameAnnotation is the OCI image-spec annotation (AnnotationRefName)
// that names a manifest in an image layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// sourceURL goes into every image's org.opencontainers.image.source label.
const sourceURL = "https://github.com/wren-net/wren"

// epoch is the one timestamp in every layer entry and config, so that the
// time of the build never reaches the digests.
var epoch = time.Unix(0, 0).UTC()

// Options for Build.
type Options struct {
	// Repo is the repository root (it has go.mod); required.
	Repo string
	// OutDir is where the archives and ListFile go; created if missing.
	// Default: Repo/bin/images.
	OutDir string
	// Version is embedded in the binaries (-X main.version=...) and in the
	// wren image's labels. Default: `git describe --always --dirty` of
	// Repo, or "dev" when that fails (resolved by Build).
	Version string
	// Registry is the name prefix of the refs. Default: DefaultRegistry.
	Registry string
	// Busybox is a statically linked busybox binary for the busybox image.
	// Default: DefaultBusybox.
	Busybox string
	// Images selects what to build, a subset of Names. Default: Names.
	Images []string
	// Logger receives progress; default: discard.
	Logger *slog.Logger
}

// Defaults fills the empty fields that have static defaults. Version is
// left for Build, because its default needs git.
func (o *Options) Defaults() {
	if o.OutDir == "" && o.Repo != "" {
		o.OutDir = filepath.Join(o.Repo, "bin", "images")
	}
	if o.Registry == "" {
		o.Registry = DefaultRegistry
	}
	if o.Busybox == "" {
		o.Busybox = DefaultBusybox
	}
	if len(o.Images) == 0 {
		o.Images = slices.Clone(Names)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the options after Defaults.
func (o *Options) Validate() error {
	var errs []error
	if o.Repo == "" {
		errs = append(errs, errors.New("repo is required"))
	} else if _, err := os.Stat(filepath.Join(o.Repo, "go.mod")); err != nil {
		errs = append(errs, fmt.Errorf("repo %s: %w", o.Repo, err))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("out dir is required"))
	}
	// The version travels through -ldflags, which splits on spaces.
	if strings.ContainsAny(o.Version, " \t\r\n'\"") {
		errs = append(errs, fmt.Errorf("version %q: contains a space or quote", o.Version))
	}
	if _, err := name.NewTag(o.Registry+"/wren:sha-000000000000", name.StrictValidation); err != nil {
		errs = append(errs, fmt.Errorf("registry %q: %w", o.Registry, err))
	}
	seen := map[string]bool{}
	for _, n := range o.Images {
		if !slices.Contains(Names, n) {
			errs = append(errs, fmt.Errorf("image %q: unknown (want one of %s)", n, strings.Join(Names, ", ")))
		}
		if seen[n] {
			errs = append(errs, fmt.Errorf("image %q: listed twice", n))
		}
		seen[n] = true
	}
	return errors.Join(errs...)
}

// Image is one built image.
type Image struct {
	// Name is one of Names.
	Name string
	// Ref is the content-addressed name, e.g.
	// "wren.local/wren:sha-0123456789ab".
	Ref string
	// Digest is the manifest digest, "sha256:...".
	Digest string
	// Path is the OCI image layout archive (a tar).
	Path string
}

// Build makes the selected images and writes each as OutDir/<name>.tar,
// then OutDir/images.txt. It runs `go build` in Repo, so the binaries are
// those of the working tree, built for linux/runtime.GOARCH.
func Build(ctx context.Context, o Options) ([]Image, error) {
	o.Defaults()
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("image options: %w", err)
	}
	var err error
	if o.Repo, err = filepath.Abs(o.Repo); err != nil {
		return nil, fmt.Errorf("resolve repo: %w", err)
	}
	if o.OutDir, err = filepath.Abs(o.OutDir); err != nil {
		return nil, fmt.Errorf("resolve out dir: %w", err)
	}
	if o.Version == "" {
		o.Version = describe(ctx, o.Repo)
	}
	log := o.Logger.With("component", "image")
	// Fail before minutes of go build, not after.
	if slices.Contains(o.Images, NameBusybox) {
		if err := checkBusybox(o.Busybox); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("make out dir: %w", err)
	}
	work, err := os.MkdirTemp("", "wren-image-")
	if err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)

	b := builder{o: o, work: work, log: log}
	var out []Image
	for _, n := range o.Images {
		img, err := b.image(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("build image %s: %w", n, err)
		}
		built, err := writeArchive(img, n, o.Registry, o.OutDir, work)
		if err != nil {
			return nil, fmt.Errorf("write image %s: %w", n, err)
		}
		log.Info("image built", "name", n, "ref", built.Ref, "digest", built.Digest, "path", built.Path)
		out = append(out, built)
	}
	if err := writeList(o.OutDir, out); err != nil {
		return nil, err
	}
	return out, nil
}

// writeList writes ListFile, replacing any older one whole.
func writeList(dir string, imgs []Image) error {
	var sb strings.Builder
	for _, im := range imgs {
		fmt.Fprintf(&sb, "%s %s %s %s\n", im.Name, im.Ref, im.Digest, im.Path)
	}
	return atomicfile.Write(filepath.Join(dir, ListFile), 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, sb.String())
		return err
	})
}
