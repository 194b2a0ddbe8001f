package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testVersion is fixed so that the other engineers' edits in a shared
// checkout (which flip `git describe --dirty`) cannot change the labels
// between the two builds of the reproducibility test.
const testVersion = "v0.0.0-test"

// images returns the images this machine can build: busybox needs Debian's
// busybox-static. Under CI (env CI set) its absence is a failure.
func images(t *testing.T) []string {
	t.Helper()
	if err := checkBusybox(DefaultBusybox); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the busybox image: %v", err)
		}
		t.Logf("busybox image left out: busybox-static not installed (apt-get install busybox-static): %v", err)
		return []string{NameWren, NamePause}
	}
	return Names
}

func testOptions(t *testing.T, out string) Options {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return Options{Repo: repo, OutDir: out, Version: testVersion, Images: images(t)}
}

// shared is one build that several tests read; it lives until TestMain
// removes its directory.
var shared struct {
	once sync.Once
	dir  string
	imgs []Image
	err  error
}

func sharedBuild(t *testing.T) []Image {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "wren-image-test-")
		if shared.err == nil {
			shared.imgs, shared.err = Build(context.Background(), testOptions(t, shared.dir))
		}
	})
	if shared.err != nil {
		t.Fatalf("build: %v", shared.err)
	}
	return shared.imgs
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Go binaries twice (minutes on a cold cache); run without -short")
	}
	first := sharedBuild(t)
	second, err := Build(context.Background(), testOptions(t, t.TempDir()))
	if err != nil {
		t.Fatalf("second build: %v", err)
	}
	if len(first) != len(second) || len(first) == 0 {
		t.Fatalf("builds made %d and %d images", len(first), len(second))
	}
	for i := range first {
		a, b := first[i], second[i]
		if a.Name != b.Name || a.Ref != b.Ref || a.Digest != b.Digest {
			t.Errorf("image %d differs between builds:\n first  %+v\n second %+v", i, a, b)
		}
		ab, err := os.ReadFile(a.Path)
		if err != nil {
			t.Fatal(err)
		}
		bb, err := os.ReadFile(b.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ab, bb) {
			t.Errorf("%s: archives %s and %s differ (%d and %d bytes)", a.Name, a.Path, b.Path, len(ab), len(bb))
		}
	}
	// The list names every image once with its ref and digest.
	list, err := os.ReadFile(filepath.Join(filepath.Dir(second[0].Path), ListFile))
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, im := range second {
		want.WriteString(im.Name + " " + im.Ref + " " + im.Digest + " " + im.Path + "\n")
	}
	if diff := cmp.Diff(want.String(), string(list)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", ListFile, diff)
	}
}

// entry is one layer entry as the test sees it.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// built is an archive opened through ggcr's layout reader.
type built struct {
	desc    v1.Descriptor // from index.json
	img     v1.Image
	cfg     *v1.ConfigFile
	entries map[string]entry // by clean path, "usr/local/bin/wren-agent"
}

// open untars an archive and reads it back with ggcr, checking what every
// image shares: one manifest in index.json, named by Ref, digests that
// verify, OCI media types, a single layer of root-owned epoch entries.
func open(t *testing.T, im Image) built {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: read archive: %v", im.Name, err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s: read layout: %v", im.Name, err)
	}
	idx, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("%s: index.json has %d manifests, want 1", im.Name, len(idx.Manifests))
	}
	desc := idx.Manifests[0]
	if got := desc.Annotations[refNameAnnotation]; got != im.Ref {
		t.Errorf("%s: index.json %s = %q, want %q", im.Name, refNameAnnotation, got, im.Ref)
	}
	if desc.Digest.String() != im.Digest {
		t.Errorf("%s: index.json digest %s, want %s", im.Name, desc.Digest, im.Digest)
	}
	if desc.MediaType != types.OCIManifestSchema1 || desc.ArtifactType != "" {
		t.Errorf("%s: descriptor media type %q artifact type %q, want an OCI image manifest", im.Name, desc.MediaType, desc.ArtifactType)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != runtime.GOARCH {
		t.Errorf("%s: descriptor platform %+v, want linux/%s", im.Name, desc.Platform, runtime.GOARCH)
	}
	wantPrefix := DefaultRegistry + "/" + im.Name + ":"
	if tag := strings.TrimPrefix(im.Ref, wantPrefix); tag == im.Ref || tag != "sha-"+im.Digest[7:19] {
		t.Errorf("%s: ref %q, want %ssha-%s", im.Name, im.Ref, wantPrefix, im.Digest[7:19])
	}

	img, err := ii.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Digests, diff IDs and sizes of manifest, config and layer all check.
	if err := validate.Image(img); err != nil {
		t.Errorf("%s: validate: %v", im.Name, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || !cfg.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("%s: config os %q arch %q created %v, want linux/%s at epoch", im.Name, cfg.OS, cfg.Architecture, cfg.Created, runtime.GOARCH)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%s: %d layers, want 1", im.Name, len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("%s: layer media type %q, want %q", im.Name, mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]entry{}
	var order []string
	lr := tar.NewReader(rc)
	for {
		h, err := lr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: read layer: %v", im.Name, err)
		}
		b, err := io.ReadAll(lr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: %s owned %d:%d (%q:%q) at %v, want 0:0 with no names at epoch", im.Name, h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		p := clean(h.Name)
		order = append(order, p)
		entries[p] = entry{h, b}
	}
	if !slices.IsSorted(order) {
		t.Errorf("%s: layer entries not sorted: %v", im.Name, order)
	}
	return built{desc: desc, img: img, cfg: cfg, entries: entries}
}

// mode is the check of one layer entry.
type mode struct {
	typ  byte
	perm int64
}

func checkEntries(t *testing.T, name string, b built, want map[string]mode) {
	t.Helper()
	for p, w := range want {
		e, ok := b.entries[p]
		if !ok {
			t.Errorf("%s: /%s missing", name, p)
			continue
		}
		if e.hdr.Typeflag != w.typ || e.hdr.Mode != w.perm {
			t.Errorf("%s: /%s type %q mode %#o, want type %q mode %#o", name, p, e.hdr.Typeflag, e.hdr.Mode, w.typ, w.perm)
		}
	}
}

func checkStatic(t *testing.T, name, p string, data []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: /%s is not ELF: %v", name, p, err)
		return
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s: /%s is dynamically linked; the image has no libc", name, p)
		}
	}
}

func TestImageContents(t *testing.T) {
	imgs := sharedBuild(t)
	byName := map[string]Image{}
	for _, im := range imgs {
		byName[im.Name] = im
	}
	repo, _ := filepath.Abs("../..")

	t.Run(NameWren, func(t *testing.T) {
		b := open(t, byName[NameWren])
		want := map[string]mode{
			"usr/local/bin/wren-agent":            {tar.TypeReg, 0o755},
			"usr/local/bin/wren-cni":              {tar.TypeReg, 0o755},
			"usr/share/wren/cni/10-wren.conflist": {tar.TypeReg, 0o644},
			"usr/share/wren/iproute2/wren.conf":   {tar.TypeReg, 0o644},
			"usr/local/bin":                       {tar.TypeDir, 0o755},
			"usr/share/wren/cni":                  {tar.TypeDir, 0o755},
			"tmp":                                 {tar.TypeDir, 0o1777},
		}
		_, err := os.Stat(filepath.Join(repo, "cmd/wrenctl"))
		hasCtl := err == nil
		if hasCtl {
			want["usr/local/bin/wrenctl"] = mode{tar.TypeReg, 0o755}
		}
		checkEntries(t, NameWren, b, want)
		if _, ok := b.entries["usr/local/bin/wrenctl"]; ok != hasCtl {
			t.Errorf("wren: wrenctl in image = %v, cmd/wrenctl exists = %v", ok, hasCtl)
		}
		// Only the listed files and their parents: no shell, no libc.
		var files []string
		for p, e := range b.entries {
			if e.hdr.Typeflag != tar.TypeDir {
				files = append(files, p)
			}
		}
		if len(files) != len(want)-3 {
			t.Errorf("wren: files %v, want only %d", files, len(want)-3)
		}
		for _, bin := range []string{"usr/local/bin/wren-agent", "usr/local/bin/wren-cni"} {
			checkStatic(t, NameWren, bin, b.entries[bin].data)
		}
		for dst, src := range map[string]string{
			"usr/share/wren/cni/10-wren.conflist": "deploy/cni/10-wren.conflist",
			"usr/share/wren/iproute2/wren.conf":   "deploy/iproute2/wren.conf",
		} {
			orig, err := os.ReadFile(filepath.Join(repo, src))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.entries[dst].data, orig) {
				t.Errorf("wren: /%s differs from %s", dst, src)
			}
		}
		c := b.cfg.Config
		if diff := cmp.Diff([]string{"/usr/local/bin/wren-agent"}, c.Entrypoint); diff != "" {
			t.Errorf("wren: entrypoint (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, c.Env); diff != "" {
			t.Errorf("wren: env (-want +got):\n%s", diff)
		}
		wantLabels := map[string]string{
			"org.opencontainers.image.title":   "wren",
			"org.opencontainers.image.version": testVersion,
			"org.opencontainers.image.source":  "https://github.com/wren-net/wren",
		}
		if diff := cmp.Diff(wantLabels, c.Labels); diff != "" {
			t.Errorf("wren: labels (-want +got):\n%s", diff)
		}
	})

	t.Run(NamePause, func(t *testing.T) {
		b := open(t, byName[NamePause])
		checkEntries(t, NamePause, b, map[string]mode{"pause": {tar.TypeReg, 0o755}})
		if len(b.entries) != 1 {
			t.Errorf("pause: %d entries, want only /pause", len(b.entries))
		}
		checkStatic(t, NamePause, "pause", b.entries["pause"].data)
		if diff := cmp.Diff([]string{"/pause"}, b.cfg.Config.Entrypoint); diff != "" {
			t.Errorf("pause: entrypoint (-want +got):\n%s", diff)
		}
	})

	t.Run(NameBusybox, func(t *testing.T) {
		im, ok := byName[NameBusybox]
		if !ok {
			t.Skip("busybox-static not installed (apt-get install busybox-static)")
		}
		b := open(t, im)
		checkEntries(t, NameBusybox, b, map[string]mode{
			"bin/busybox": {tar.TypeReg, 0o755},
			"bin/sh":      {tar.TypeSymlink, 0o777},
			"bin/ping":    {tar.TypeSymlink, 0o777},
			"sbin/ip":     {tar.TypeSymlink, 0o777},
			"bin/sleep":   {tar.TypeSymlink, 0o777},
			"tmp":         {tar.TypeDir, 0o1777},
			"etc/passwd":  {tar.TypeReg, 0o644},
			"etc/group":   {tar.TypeReg, 0o644},
		})
		for _, p := range []string{"bin/sh", "bin/ping", "sbin/ip"} {
			if got := b.entries[p].hdr.Linkname; got != "/bin/busybox" {
				t.Errorf("busybox: /%s -> %q, want /bin/busybox", p, got)
			}
		}
		checkStatic(t, NameBusybox, "bin/busybox", b.entries["bin/busybox"].data)
		if !strings.HasPrefix(string(b.entries["etc/passwd"].data), "root:x:0:0:") {
			t.Errorf("busybox: /etc/passwd has no root line: %q", b.entries["etc/passwd"].data)
		}
		if !strings.HasPrefix(string(b.entries["etc/group"].data), "root:x:0:") {
			t.Errorf("busybox: /etc/group has no root line: %q", b.entries["etc/group"].data)
		}
		if diff := cmp.Diff([]string{"/bin/sh"}, b.cfg.Config.Entrypoint); diff != "" {
			t.Errorf("busybox: entrypoint (-want +got):\n%s", diff)
		}
		if v := b.cfg.Config.Labels["org.opencontainers.image.version"]; v == "" {
			t.Errorf("busybox: no version label")
		}
	})
}

func TestBusyboxMissing(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.Images = []string{NameBusybox}
	o.Busybox = filepath.Join(t.TempDir(), "busybox")
	_, err := Build(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "apt-get install busybox-static") {
		t.Fatalf("Build without busybox: error %v, want one naming apt-get install busybox-static", err)
	}
	if ents, _ := os.ReadDir(o.OutDir); len(ents) != 0 {
		t.Errorf("Build without busybox left %d files in %s", len(ents), o.OutDir)
	}
}

func TestOptionsValidate(t *testing.T) {
	repo, _ := filepath.Abs("../..")
	for _, tc := range []struct {
		name string
		o    Options
		want string // substring of the error; "" for none
	}{
		{"defaults", Options{Repo: repo}, ""},
		{"no repo", Options{}, "repo is required"},
		{"not a module", Options{Repo: t.TempDir()}, "go.mod"},
		{"bad registry", Options{Repo: repo, Registry: "Bad Registry"}, "registry"},
		{"version with space", Options{Repo: repo, Version: "v1 -X x=y"}, "version"},
		{"unknown image", Options{Repo: repo, Images: []string{"nginx"}}, "unknown"},
		{"image twice", Options{Repo: repo, Images: []string{"pause", "pause"}}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Defaults()
			err := o.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if o.OutDir != filepath.Join(repo, "bin", "images") || o.Registry != DefaultRegistry || !slices.Equal(o.Images, Names) {
					t.Errorf("defaults: out %q registry %q images %v", o.OutDir, o.Registry, o.Images)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDescribeFallsBackToDev(t *testing.T) {
	if got := describe(context.Background(), t.TempDir()); got != "dev" {
		t.Errorf("describe outside git = %q, want dev", got)
	}
}

func TestFileSetTar(t *testing.T) {
	// Added in an order unlike the output; parents appear once, sorted
	// first; an explicit directory mode wins over the implicit 0755.
	s := newFileSet()
	s.symlink("/bin/sh", "/bin/busybox")
	s.file("usr/local/bin/x", 0o755, []byte("x"))
	s.dir("/tmp/", 0o1777)
	s.file("/bin/busybox", 0o755, []byte("bb"))
	s.dir("usr", 0o700)
	b, err := s.tar()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.TrimSpace(fmt.Sprintf("%c %s %#o %s", h.Typeflag, h.Name, h.Mode, h.Linkname)))
	}
	want := []string{
		"5 bin/ 0755",
		"0 bin/busybox 0755",
		"2 bin/sh 0777 /bin/busybox",
		"5 tmp/ 01777",
		"5 usr/ 0700",
		"5 usr/local/ 0755",
		"5 usr/local/bin/ 0755",
		"0 usr/local/bin/x 0755",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
	b2, err := s.tar()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Error("two renders of the same set differ")
	}
}
