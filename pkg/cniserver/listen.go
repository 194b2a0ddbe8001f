package cniserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// SocketMode is the permission of the agent's socket: root (the
// runtime, which runs the plugin, and the operator's wrenctl) only. The
// socket allocates addresses and builds interfaces, so nobody else may
// connect (connecting to a unix socket needs write permission on it).
const SocketMode fs.FileMode = 0o600

// maxSocketPath is the room in sockaddr_un.sun_path on Linux, less the
// terminating NUL.
const maxSocketPath = 107

// shutdownGrace bounds how long Serve waits for calls in flight when its
// context ends; after it, they are cut off (the plugin gets Unavailable
// and the runtime retries against the next agent).
const shutdownGrace = 5 * time.Second

// Listen listens on the unix socket socketPath with mode SocketMode,
// creating its directory (0755) if needed. A stale socket left by an agent
// that died is removed; a socket some process still accepts on, or a file
// that is not a socket, is an error and is left alone.
//
// The socket never exists with a wider mode: it is bound under a
// temporary name in the same directory, chmod-ed, then renamed into
// place. Closing the listener removes socketPath if it is still this
// listener's socket (a newer agent may have replaced it).
func Listen(socketPath string) (net.Listener, error) {
	if !filepath.IsAbs(socketPath) || filepath.Clean(socketPath) != socketPath {
		return nil, fmt.Errorf("cni socket %q: must be a clean absolute path", socketPath)
	}
	dir, base := filepath.Split(socketPath)
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", base, os.Getpid()))
	if len(tmp) > maxSocketPath {
		limit := maxSocketPath - (len(tmp) - len(socketPath))
		return nil, fmt.Errorf("cni socket %q: path is %d bytes, a unix socket path here may have at most %d", socketPath, len(socketPath), limit)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cni socket directory: %w", err)
	}
	if err := removeStale(socketPath); err != nil {
		return nil, err
	}
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", tmp, err)
	}
	// The file will be renamed; its removal is done by socketListener.
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, SocketMode); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", tmp, err))
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return fail(fmt.Errorf("stat %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, socketPath); err != nil {
		return fail(fmt.Errorf("move socket into place at %s: %w", socketPath, err))
	}
	return &socketListener{UnixListener: l, path: socketPath, fi: fi}, nil
}

// removeStale removes path if it is a socket nobody accepts on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat cni socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("cni socket %s: exists and is a %s, not a socket; not removing it", path, fileKind(fi.Mode()))
	}
	if live(path) {
		return fmt.Errorf("cni socket %s: another process is serving on it (a second wren-agent on this node?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale cni socket %s: %w", path, err)
	}
	return nil
}

// live reports whether a server accepts connections on the unix socket
// at path (a stale socket refuses them).
func live(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// fileKind names a file type for error messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	}
	return m.Type().String()
}

// socketListener removes its socket file on Close, if the file is still
// the one it bound and nobody else serves on it.
type socketListener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
	err  error
}

// Close closes the listener and removes its socket file.
func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		// Inode numbers are reused, so SameFile alone could mistake a
		// newer agent's socket for ours; a socket that still accepts
		// connections after ours closed is not ours.
		if cur, err := os.Lstat(l.path); err == nil && os.SameFile(cur, l.fi) && !live(l.path) {
			if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				l.err = errors.Join(l.err, fmt.Errorf("remove %s: %w", l.path, err))
			}
		}
	})
	return l.err
}

// Serve serves the wren.cni.v1 service, backed by h, on the unix socket
// socketPath (see Listen) until ctx ends, then stops gracefully (calls in
// flight get shutdownGrace to finish), removes the socket and returns nil.
// It returns an error if it cannot listen or the server fails. Each of
// also registers one more service on the same server (the debug API).
func Serve(ctx context.Context, socketPath string, h Handler, logger *slog.Logger, also ...func(grpc.ServiceRegistrar)) error {
	if logger == nil {
		logger = slog.Default()
	}
	lis, err := Listen(socketPath)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	Register(srv, h, logger)
	for _, reg := range also {
		reg(srv)
	}
	logger.With("component", "cniserver").Info("serving CNI", "socket", socketPath)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		lis.Close()
		return fmt.Errorf("serve cni on %s: %w", socketPath, err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop()
		<-stopped
	}
	<-errc
	lis.Close()
	return nil
}
