//go:build unix

// Command pause is the pod sandbox process: containerd starts it first in
// every pod so the pod's namespaces have an owner that outlives the app
// containers. It does nothing but wait: it reaps children (with
// shareProcessNamespace it is PID 1 of the pod and inherits orphans, which
// would stay zombies otherwise) and exits 0 on SIGINT or SIGTERM, which is
// how the runtime stops a sandbox. Kubernetes' own pause (build/pause in
// kubernetes/kubernetes) does the same in C.
//
// It must be a static binary with no libc: the image holds this file only.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(wait(notify())) }

// notify subscribes to the signals pause acts on. As PID 1 the kernel
// drops every signal that has no handler, so the handlers installed here
// are what makes SIGTERM work at all.
func notify() <-chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGINT, syscall.SIGTERM)
	return sigs
}

// wait blocks on signals: it reaps on SIGCHLD and returns the exit code 0
// on SIGINT or SIGTERM.
func wait(sigs <-chan os.Signal) int {
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		return 0
	}
	return 0
}

// reap collects every exited child. Signals coalesce, so one SIGCHLD may
// stand for many exits: wait until there is nothing left to collect.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
