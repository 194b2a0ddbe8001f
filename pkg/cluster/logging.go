package cluster

import (
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// RouteLogs sends the logs of client-go (klog) and controller-runtime into
// l, so the agent writes one format. Without the controller-runtime part,
// its delegating logger prints "log.SetLogger(...) was never called" with
// a goroutine dump the first time the client logs, which reads like a
// crash.
func RouteLogs(l *slog.Logger) {
	klog.SetSlogLogger(l.With("component", "client-go"))
	ctrllog.SetLogger(logr.FromSlogHandler(l.With("component", "controller-runtime").Handler()))
}
