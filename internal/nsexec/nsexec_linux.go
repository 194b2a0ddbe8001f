// Package nsexec runs a function on an OS thread that has joined another
// network namespace, without moving the caller's goroutine.
package nsexec

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn with the current OS thread inside ns and returns its error.
// A value of ns <= 0 runs fn where the caller is.
//
// Namespace-bound kernel objects (sockets, /proc/sys/net files) keep the
// namespace of the thread that created or opened them, so fn only has to
// create them. The thread is moved back afterwards; if that fails the
// thread stays locked and is destroyed when its goroutine ends, so it can
// never run other goroutines in the wrong namespace. Moving back matters:
// a goroutine ending while locked to the main thread would leave the
// process's main thread, and so its /proc/PID/ns/net, in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	if ns <= 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return from netns: %w", err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dialer returns a DialContext function whose connections are made
// inside ns: each socket is created by a thread that joined ns and keeps
// the namespace afterwards, so the caller's threads never move. For
// HTTP transports and client-go configs that must reach addresses only
// that namespace routes.
func Dialer(ns netns.NsHandle) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
