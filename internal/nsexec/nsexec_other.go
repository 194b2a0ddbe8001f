//go:build !linux

package nsexec

import (
	"errors"

	"github.com/vishvananda/netns"
)

// Do runs fn where the caller is; other namespaces exist only on Linux.
func Do(ns netns.NsHandle, fn func() error) error {
	if ns > 0 {
		return errors.New("network namespaces are Linux-only")
	}
	return fn()
}
