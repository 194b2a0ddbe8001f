package image

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/wren-net/wren/internal/atomicfile"
)

// writeArchive names img by its digest, writes it as an OCI image layout
// under work and tars that layout into outDir/<imgName>.tar.
func writeArchive(img v1.Image, imgName, registry, outDir, work string) (Image, error) {
	d, err := img.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("digest: %w", err)
	}
	tag, err := name.NewTag(fmt.Sprintf("%s/%s:sha-%s", registry, imgName, d.Hex[:12]), name.StrictValidation)
	if err != nil {
		return Image{}, fmt.Errorf("make ref: %w", err)
	}
	dir := filepath.Join(work, imgName+"-layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return Image{}, fmt.Errorf("make layout: %w", err)
	}
	if err := p.WriteImage(img); err != nil {
		return Image{}, fmt.Errorf("write layout: %w", err)
	}
	// Not p.AppendImage: its descriptor (partial.Descriptor) also sets
	// artifactType to the config media type, which the image spec reserves
	// for artifacts; containerd ignores it, but a plain image should not
	// claim to be one.
	mt, err := img.MediaType()
	if err != nil {
		return Image{}, fmt.Errorf("media type: %w", err)
	}
	size, err := img.Size()
	if err != nil {
		return Image{}, fmt.Errorf("manifest size: %w", err)
	}
	err = p.AppendDescriptor(v1.Descriptor{
		MediaType:   mt,
		Size:        size,
		Digest:      d,
		Annotations: map[string]string{refNameAnnotation: tag.Name()},
		Platform:    &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
	})
	if err != nil {
		return Image{}, fmt.Errorf("write layout index: %w", err)
	}
	path := filepath.Join(outDir, imgName+".tar")
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error { return tarDir(w, dir) }); err != nil {
		return Image{}, err
	}
	return Image{Name: imgName, Ref: tag.Name(), Digest: d.String(), Path: path}, nil
}

// tarDir writes the tree under dir as a tar with the same determinism as
// layers: WalkDir visits names in lexical order; times are epoch, owners
// 0:0, and modes fixed (the layout writer's depend on the umask).
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		h := &tar.Header{Name: rel, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case e.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, rel+"/", 0o755
		case e.Type().IsRegular():
			info, err := e.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Size = tar.TypeReg, info.Size()
		default:
			return fmt.Errorf("%s: not a file or directory", p)
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write tar header %s: %w", rel, err)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(tw, f); err != nil {
			// archive/tar also fails here if the file changed size.
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close tar: %w", err)
	}
	return nil
}
