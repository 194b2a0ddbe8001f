// Package sysctl reads and writes kernel parameters under a /proc/sys root.
//
// The root is configurable so the unit tier can point it at a temporary
// directory. Network sysctls (/proc/sys/net/...) belong to the network
// namespace of the thread that opens the file, so an FS bound to another
// namespace does its file I/O through nsexec.Do on a thread that has
// joined that namespace.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/wren-net/wren/internal/nsexec"
)

// DefaultRoot is where the kernel exposes sysctls.
const DefaultRoot = "/proc/sys"

// FS is a sysctl tree. The zero value uses /proc/sys in the caller's
// network namespace.
type FS struct {
	// Root is the /proc/sys directory; "" means DefaultRoot.
	Root string
	// NS is the network namespace whose net.* sysctls are meant. Values
	// <= 0 (the zero value, netns.None()) mean the caller's namespace; fd 0
	// is never a namespace handle in practice.
	NS netns.NsHandle
}

// path turns "net/ipv4/conf/cali1/proxy_arp" into a file path. Keys use
// slashes, not dots, because interface names may contain dots
// ("vxlan.calico").
func (f FS) path(key string) string {
	root := f.Root
	if root == "" {
		root = DefaultRoot
	}
	return filepath.Join(root, filepath.FromSlash(key))
}

// Set writes value to key unless it already holds it, so repeated
// reconciliation causes no writes.
func (f FS) Set(key, value string) error {
	return f.do(func() error { return f.set(key, value) })
}

// KV is one key and the value it should hold.
type KV struct{ Key, Value string }

// SetMany is Set for each kv, entering the namespace once for all of them
// (a namespace switch costs more than the reads). It returns one error, or
// nil, per kv.
func (f FS) SetMany(kvs []KV) []error {
	errs := make([]error, len(kvs))
	err := f.do(func() error {
		for i, kv := range kvs {
			errs[i] = f.set(kv.Key, kv.Value)
		}
		return nil
	})
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("sysctl %s: %w", kvs[i].Key, err)
		}
	}
	return errs
}

// set is Set in the current namespace.
func (f FS) set(key, value string) error {
	p := f.path(key)
	cur, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	if strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// Get returns the value of key without its trailing newline.
func (f FS) Get(key string) (string, error) {
	var v string
	err := f.do(func() error {
		b, err := os.ReadFile(f.path(key))
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// do runs fn in f's network namespace.
func (f FS) do(fn func() error) error {
	return nsexec.Do(f.NS, fn)
}
