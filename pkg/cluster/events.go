package cluster

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// events records Warning Events through client-go's event broadcaster:
// Eventf queues the event and returns at once, and the broadcaster's own
// goroutine writes it (aggregating repeats, rate-limited), so a slow or
// unreachable API server never blocks the caller — the agent's loop
// included.
type events struct {
	b   record.EventBroadcaster
	rec record.EventRecorder
}

func newEvents(rc *rest.Config, node string, log *slog.Logger) (*events, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	b := record.NewBroadcaster(record.WithContext(context.Background()))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	b.StartEventWatcher(func(e *corev1.Event) {
		log.Debug("event recorded", "kind", e.InvolvedObject.Kind, "name", e.InvolvedObject.Name, "reason", e.Reason)
	})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "wren-agent", Host: node})
	return &events{b: b, rec: rec}, nil
}

// warn queues a Warning Event about a cluster-scoped object (Events of
// cluster-scoped objects live in namespace default).
func (e *events) warn(kind, name, reason, message string) {
	apiVersion := v1alpha1.GroupVersion.String()
	if kind == "Node" || kind == "Pod" {
		apiVersion = "v1"
	}
	ref := &corev1.ObjectReference{Kind: kind, Name: name, APIVersion: apiVersion, Namespace: "default"}
	e.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

// stop flushes nothing and ends the broadcaster's goroutines.
func (e *events) stop() { e.b.Shutdown() }
