package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileSet is the content of one layer: regular files, directories and
// symlinks by path. It renders as a tar that depends only on what was
// added, never on the order of adding, the clock or the build machine's
// users: entries are sorted, every time is epoch, owners are 0:0 with no
// names. Parent directories are added as 0755 unless added explicitly.
type fileSet struct {
	entries map[string]*tar.Header
	data    map[string][]byte
}

func newFileSet() *fileSet {
	return &fileSet{entries: map[string]*tar.Header{}, data: map[string][]byte{}}
}

// clean turns "/usr/bin/x" or "usr/bin/x/" into "usr/bin/x".
func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// file adds a regular file.
func (s *fileSet) file(p string, mode int64, data []byte) {
	p = clean(p)
	s.parents(p)
	s.entries[p] = &tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}
	s.data[p] = data
}

// dir adds a directory with an explicit mode (e.g. 01777 for /tmp).
func (s *fileSet) dir(p string, mode int64) {
	p = clean(p)
	s.parents(p)
	s.entries[p] = &tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode}
	delete(s.data, p)
}

// symlink adds p pointing at target (stored as given).
func (s *fileSet) symlink(p, target string) {
	p = clean(p)
	s.parents(p)
	s.entries[p] = &tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}
	delete(s.data, p)
}

func (s *fileSet) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := s.entries[d]; !ok {
			s.entries[d] = &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}
		}
	}
}

// tar renders the set. Sorting by clean path puts every directory before
// its contents ("usr" < "usr/bin" since a prefix sorts first).
func (s *fileSet) tar() ([]byte, error) {
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := *s.entries[n]
		h.ModTime = epoch
		// PAX keeps the archive readable whatever the name length and
		// never records access or change times, which are left zero.
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("write tar header %s: %w", n, err)
		}
		if d := s.data[n]; len(d) > 0 {
			if _, err := tw.Write(d); err != nil {
				return nil, fmt.Errorf("write tar entry %s: %w", n, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}

// layer renders the set as an OCI gzip layer. ggcr compresses with the
// standard library's gzip, whose header carries no name and a zero mtime,
// so equal tars give equal layer digests (for the same Go release). The
// compressed bytes are kept so the digest pass and the write pass gzip once.
func (s *fileSet) layer() (v1.Layer, error) {
	b, err := s.tar()
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression),
		tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	return l, nil
}
