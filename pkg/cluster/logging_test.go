package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestRouteLogs: controller-runtime's logger writes into the agent's slog
// handler (before RouteLogs, it buffered and later complained that
// log.SetLogger was never called).
func TestRouteLogs(t *testing.T) {
	var buf bytes.Buffer
	RouteLogs(slog.New(slog.NewTextHandler(&buf, nil)))
	ctrllog.Log.WithName("probe").Info("routed through slog", "n", 1)
	out := buf.String()
	if !strings.Contains(out, "routed through slog") || !strings.Contains(out, "component=controller-runtime") {
		t.Fatalf("controller-runtime log not in the slog handler; got %q", out)
	}
}
